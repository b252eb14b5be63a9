"""Form c: TF1 graph mode — ``tf.compat.v1`` variables, ``tf.nn.embedding_lookup``, ``Saver``.

Trained in a training graph, then written the way TF1 users ship a model: an inference graph
(placeholders named like the features, output ``prediction``) with its checkpoint and exported
meta_graph_def (binary ``model.ckpt.meta`` and text ``model.pbtxt``) under ``checkpoint/``, and a
SavedModel written by the v1 ``SavedModelBuilder`` at the top of the output directory. The
training graph itself (train op in the ``train_op`` collection, Adam's slots) is kept under
``train/`` for continuing training; ``OPTIMIZERS`` holds the v1 optimizers the tests train it with.
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from graphopt.course.data import GENRE_FEATURES, GENRE_VOCAB, ID_FEATURES, NUMERIC_FEATURES
from graphopt.course.models.features import (
    BATCH_SIZE,
    EMBEDDING_DIM,
    GENRE_ROWS,
    HIDDEN_UNITS,
    INPUT_DTYPES,
    LEARNING_RATE,
    feature_arrays,
)

v1 = tf.compat.v1
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_PREFIX = "model.ckpt"
OUTPUT_NAME = "prediction"
TRAIN_DIR = "train"  # the training graph's checkpoint + meta graph (train op and slots included)
TRAIN_OP = "train"
LOSS = "loss"
LABEL = "label"
# The v1 optimizers a TF1 user trains this form with; Adam is the course's.
OPTIMIZERS = {
    "adam": lambda: v1.train.AdamOptimizer(LEARNING_RATE, epsilon=1e-7),
    "sgd": lambda: v1.train.GradientDescentOptimizer(0.05),
    "adagrad": lambda: v1.train.AdagradOptimizer(0.05),
    "ftrl": lambda: v1.train.FtrlOptimizer(0.05),
    "momentum": lambda: v1.train.MomentumOptimizer(0.05, 0.9),  # no EmbeddingVariable counterpart
}


def _inference_graph(normalization):
    """Placeholders -> embeddings -> MLP -> sigmoid, in the current default graph."""
    placeholders = {
        name: v1.placeholder(tf.as_dtype(dtype), [None], name=name) for name, dtype in INPUT_DTYPES.items()
    }
    genre_ids = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            list(GENRE_VOCAB), np.arange(1, GENRE_ROWS, dtype=np.int64), name="genre_vocab"
        ),
        default_value=0,
        name="genre_lookup",
    )
    embedding_init = v1.random_uniform_initializer(-0.05, 0.05)
    embedded = []
    with v1.variable_scope("embedding"):
        for name, buckets in ID_FEATURES.items():
            table = v1.get_variable(name, [buckets, EMBEDDING_DIM], initializer=embedding_init)
            embedded.append(tf.nn.embedding_lookup(table, placeholders[name], name=f"{name}_lookup"))
        for name in GENRE_FEATURES:
            table = v1.get_variable(name, [GENRE_ROWS, EMBEDDING_DIM], initializer=embedding_init)
            embedded.append(
                tf.nn.embedding_lookup(table, genre_ids.lookup(placeholders[name]), name=f"{name}_lookup")
            )
    numeric = tf.stack([placeholders[name] for name in NUMERIC_FEATURES], axis=1)
    numeric = (numeric - np.array(normalization.mean, np.float32)) / np.array(normalization.std, np.float32)
    x = tf.concat(embedded + [numeric], axis=1, name="stacking")
    for i, units in enumerate(list(HIDDEN_UNITS) + [1]):
        with v1.variable_scope(f"mlp_{i}" if i < len(HIDDEN_UNITS) else "score"):
            kernel = v1.get_variable(
                "kernel", [x.shape[1], units], initializer=v1.glorot_uniform_initializer()
            )
            bias = v1.get_variable("bias", [units], initializer=v1.zeros_initializer())
            x = tf.matmul(x, kernel) + bias
            if i < len(HIDDEN_UNITS):
                x = tf.nn.relu(x)
    logits = tf.reshape(x, [-1], name="logits")
    return placeholders, logits, tf.sigmoid(logits, name=OUTPUT_NAME)


def _training_graph(normalization, optimizer):
    """The inference graph plus label, loss and the optimizer's train op (in the default graph)."""
    placeholders, logits, prediction = _inference_graph(normalization)
    label = v1.placeholder(tf.float32, [None], name=LABEL)
    loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=logits), name=LOSS)
    train_op = OPTIMIZERS[optimizer]().minimize(loss, name=TRAIN_OP)
    # Where TF1 tooling (Estimator, MonitoredSession) looks for it; also keeps it a root of the graph.
    v1.add_to_collection(v1.GraphKeys.TRAIN_OP, train_op)
    return placeholders, label, loss, train_op, prediction


def save_training_checkpoint(out_dir, normalization, optimizer="adam", seed=42, batches=()):
    """Writes the training graph of ``optimizer`` as a TF1 user keeps it to continue training:
    ``out_dir/train/model.ckpt`` (variables and the optimizer's slots) and its meta graph
    ``model.ckpt.meta`` (train op in the ``train_op`` collection, Saver). ``batches``: (samples
    arrays, labels) pairs trained on first, so the slots hold real state. Returns the prefix."""
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(seed)
        placeholders, label, _, train_op, _ = _training_graph(normalization, optimizer)
        saver = v1.train.Saver(save_relative_paths=True)
        os.makedirs(os.path.join(out_dir, TRAIN_DIR), exist_ok=True)
        with v1.Session(graph=g) as sess:
            sess.run([v1.global_variables_initializer(), v1.tables_initializer()])
            for arrays, labels in batches:
                sess.run(train_op, {**_feeds(placeholders, arrays), label: labels})
            return saver.save(sess, os.path.join(out_dir, TRAIN_DIR, CHECKPOINT_PREFIX))


def _feeds(placeholders, arrays, rows=slice(None)):
    return {placeholders[name]: arrays[name][rows] for name in placeholders}


def train_and_save(train, test, normalization, out_dir, epochs, seed, on_epoch=None):
    """Train in graph mode, write the SavedModel + checkpoint + meta graph, return test scores;
    ``on_epoch(epoch, loss)`` after each epoch (loss: the mean over the epoch's examples)."""
    train_x, test_x = feature_arrays(train), feature_arrays(test)
    labels = train.labels.astype(np.float32)
    rng = np.random.default_rng(seed)
    training = tf.Graph()
    with training.as_default():
        v1.set_random_seed(seed)
        placeholders, label, loss, train_op, _ = _training_graph(normalization, "adam")
        # The training checkpoint a TF1 user keeps to continue training (train op, Adam's slots).
        train_saver = v1.train.Saver(save_relative_paths=True)
        with v1.Session(graph=training) as sess:
            sess.run([v1.global_variables_initializer(), v1.tables_initializer()])
            for epoch in range(epochs):
                order, total = rng.permutation(len(labels)), 0.0
                for start in range(0, len(order), BATCH_SIZE):
                    rows = order[start : start + BATCH_SIZE]
                    _, batch_loss = sess.run(
                        [train_op, loss], {**_feeds(placeholders, train_x, rows), label: labels[rows]}
                    )
                    total += float(batch_loss) * len(rows)
                if on_epoch is not None:
                    on_epoch(epoch + 1, total / max(len(order), 1))
            trained = {v.op.name: sess.run(v) for v in v1.trainable_variables()}
            # Beside out_dir until the SavedModelBuilder, which wants a fresh directory, has written it.
            train_dir = tempfile.mkdtemp(prefix=".train-", dir=os.path.dirname(os.path.abspath(out_dir)))
            train_saver.save(sess, os.path.join(train_dir, CHECKPOINT_PREFIX))

    serving = tf.Graph()
    with serving.as_default():
        placeholders, _, prediction = _inference_graph(normalization)
        # Relative paths in checkpoint/checkpoint: the model is saved into a stage folder and
        # moved into place, and must stay loadable wherever it is moved or copied afterwards.
        saver = v1.train.Saver(save_relative_paths=True)
        with v1.Session(graph=serving) as sess:
            sess.run(v1.tables_initializer())
            for var in v1.global_variables():
                var.load(trained[var.op.name], sess)
            scores = sess.run(prediction, _feeds(placeholders, test_x))
            builder = v1.saved_model.Builder(out_dir)
            signature = v1.saved_model.predict_signature_def(
                inputs=placeholders, outputs={OUTPUT_NAME: prediction}
            )
            builder.add_meta_graph_and_variables(
                sess,
                [tf.saved_model.SERVING],
                signature_def_map={tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: signature},
                main_op=v1.tables_initializer(),
            )
            builder.save()
            ckpt_dir = os.path.join(out_dir, CHECKPOINT_DIR)
            saver.save(sess, os.path.join(ckpt_dir, CHECKPOINT_PREFIX))
            v1.train.export_meta_graph(
                os.path.join(ckpt_dir, "model.pbtxt"), as_text=True, saver_def=saver.as_saver_def()
            )
    shutil.move(train_dir, os.path.join(out_dir, TRAIN_DIR))
    return scores
