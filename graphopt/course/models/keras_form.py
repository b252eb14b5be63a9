"""Form a: Keras 3 functional model with ``keras.layers.Embedding``, exported for serving and
saved as ``model.keras`` beside the export (the file Keras users keep to continue training).

The exported signature takes the raw features by name (ids int64, genres strings, numerics
float32); genre strings go through one shared ``StringLookup`` (index 0 for empty or unknown).
"""

import os

import tensorflow as tf

from graphopt.course.data import GENRE_FEATURES, GENRE_VOCAB, ID_FEATURES, NUMERIC_FEATURES
from graphopt.course.models.features import (
    EMBEDDING_DIM,
    GENRE_ROWS,
    HIDDEN_UNITS,
    INPUT_DTYPES,
    LEARNING_RATE,
    dataset,
)

keras = tf.keras
KERAS_FILE = "model.keras"


def build(normalization):
    """The uncompiled Embedding+MLP: Feature -> Embedding -> Stacking -> MLP -> Scoring."""
    inputs = {name: keras.Input(shape=(), dtype=dtype, name=name) for name, dtype in INPUT_DTYPES.items()}
    embedded = [
        keras.layers.Embedding(buckets, EMBEDDING_DIM, name=f"{name}_embedding")(inputs[name])
        for name, buckets in ID_FEATURES.items()
    ]
    genre_lookup = keras.layers.StringLookup(vocabulary=list(GENRE_VOCAB), name="genre_lookup")
    embedded += [
        keras.layers.Embedding(GENRE_ROWS, EMBEDDING_DIM, name=f"{name}_embedding")(
            genre_lookup(inputs[name])
        )
        for name in GENRE_FEATURES
    ]
    numeric = keras.layers.Concatenate(name="numeric")(
        [keras.layers.Reshape((1,))(inputs[name]) for name in NUMERIC_FEATURES]
    )
    numeric = keras.layers.Normalization(
        mean=list(normalization.mean), variance=[s * s for s in normalization.std], name="normalize"
    )(numeric)
    x = keras.layers.Concatenate(name="stacking")(embedded + [numeric])
    for i, units in enumerate(HIDDEN_UNITS):
        x = keras.layers.Dense(units, activation="relu", name=f"mlp_{i}")(x)
    output = keras.layers.Dense(1, activation="sigmoid", name="score")(x)
    return keras.Model(inputs=inputs, outputs=output, name="embedding_mlp")


def train_and_save(train, test, normalization, out_dir, epochs, seed, on_epoch=None):
    """Train, export to ``out_dir`` and return the test scores; ``on_epoch(epoch, loss)`` after each epoch."""
    keras.utils.set_random_seed(seed)
    model = build(normalization)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss="binary_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(curve="ROC"), keras.metrics.AUC(curve="PR")],
    )
    callbacks = [keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e + 1, logs["loss"]))]
    model.fit(
        dataset(train, shuffle=True, seed=seed),
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks if on_epoch else None,
    )
    scores = model.predict(dataset(test, batch_size=1024), verbose=0).reshape(-1)
    model.export(out_dir, format="tf_saved_model", verbose=False)
    # The file its Keras users keep to continue training (weights, compile config, optimizer
    # state); `graphopt rewrite model.keras -o model_ev.keras` makes its tables dynamic.
    model.save(os.path.join(out_dir, KERAS_FILE))
    return scores
