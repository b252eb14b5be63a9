"""Form b: the course's model exactly as it writes it — ``tf.feature_column`` embedding columns
under a tf_keras ``DenseFeatures`` layer in a ``Sequential`` — saved as a tf_keras SavedModel.

Numeric columns carry a ``normalizer_fn`` (the course's own fix for readers stuck at 56% accuracy).
"""

import tensorflow as tf
import tf_keras

from graphopt.course.data import GENRE_FEATURES, GENRE_VOCAB, ID_FEATURES, NUMERIC_FEATURES
from graphopt.course.models.features import EMBEDDING_DIM, HIDDEN_UNITS, LEARNING_RATE, dataset


def _normalizer(mean, std):
    return lambda x: (x - mean) / std


def feature_columns(normalization):
    """The course's columns: numeric (normalized), genre vocabulary embeddings, id embeddings."""
    numeric = [
        tf.feature_column.numeric_column(name, normalizer_fn=_normalizer(*normalization.of(name)))
        for name in NUMERIC_FEATURES
    ]
    categorical = [
        tf.feature_column.embedding_column(
            tf.feature_column.categorical_column_with_vocabulary_list(key=name, vocabulary_list=GENRE_VOCAB),
            EMBEDDING_DIM,
        )
        for name in GENRE_FEATURES
    ]
    categorical += [
        tf.feature_column.embedding_column(
            tf.feature_column.categorical_column_with_identity(key=name, num_buckets=buckets), EMBEDDING_DIM
        )
        for name, buckets in ID_FEATURES.items()
    ]
    return numeric + categorical


def build(normalization):
    """The course's Sequential Embedding+MLP over DenseFeatures."""
    return tf_keras.Sequential(
        [tf_keras.layers.DenseFeatures(feature_columns(normalization))]
        + [tf_keras.layers.Dense(units, activation="relu") for units in HIDDEN_UNITS]
        + [tf_keras.layers.Dense(1, activation="sigmoid")]
    )


def train_and_save(train, test, normalization, out_dir, epochs, seed, on_epoch=None):
    """Train, save as a tf_keras SavedModel in ``out_dir`` and return the test scores;
    ``on_epoch(epoch, loss)`` after each epoch."""
    tf_keras.utils.set_random_seed(seed)
    model = build(normalization)
    model.compile(
        loss="binary_crossentropy",
        optimizer=tf_keras.optimizers.Adam(LEARNING_RATE),
        metrics=["accuracy", tf_keras.metrics.AUC(curve="ROC"), tf_keras.metrics.AUC(curve="PR")],
    )
    callbacks = [
        tf_keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e + 1, logs["loss"]))
    ]
    model.fit(
        dataset(train, shuffle=True, seed=seed),
        epochs=epochs,
        verbose=0,
        callbacks=callbacks if on_epoch else None,
    )
    scores = model.predict(dataset(test, batch_size=1024), verbose=0).reshape(-1)
    model.save(out_dir, save_format="tf")
    return scores
