"""Small SavedModels for the serving tests, a base-path builder and a direct-call reference."""

import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

MOVIES, USERS = 40, 25


def build_recommender(seed):
    """A small Keras 3 Embedding+MLP like the course's: two id embeddings and numeric features."""
    import keras

    keras.utils.set_random_seed(seed)
    movie = keras.Input(shape=(), dtype="int64", name="movieId")
    user = keras.Input(shape=(), dtype="int64", name="userId")
    numeric = keras.Input(shape=(3,), dtype="float32", name="numeric")
    x = keras.layers.Concatenate()(
        [
            keras.layers.Embedding(MOVIES, 4)(movie),
            keras.layers.Embedding(USERS, 4)(user),
            numeric,
        ]
    )
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model([movie, user, numeric], keras.layers.Dense(1, activation="sigmoid")(x))


class Tower(tf.Module):
    """Two signatures: two outputs from one float input, and string handling."""

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def scores(self, x):
        return {"sum": tf.reduce_sum(x, axis=1), "double": 2.0 * x}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="word")])
    def words(self, word):
        return {"length": tf.strings.length(word), "echo_bytes": word}


def export_recommender(path, seed):
    """Export the recommender's serving signature to ``path`` (a version directory)."""
    build_recommender(seed).export(path, verbose=False)


def rec_inputs(rows, seed=0):
    """Valid inputs of the recommender for ``rows`` examples."""
    rng = np.random.default_rng(seed)
    return {
        "movieId": rng.integers(0, MOVIES, rows).astype(np.int64),
        "userId": rng.integers(0, USERS, rows).astype(np.int64),
        "numeric": rng.normal(size=(rows, 3)).astype(np.float32),
    }


_LOADED = {}


def direct_call(path, inputs, signature="serving_default"):
    """What the SavedModel at ``path`` answers when its signature is called directly on ``inputs``.

    Each path is loaded once per session and kept (its resources die with the loaded object), so
    a test can check every served answer against a direct call without reloading the model.
    """
    key = os.path.realpath(path)
    if key not in _LOADED:
        _LOADED[key] = tf.saved_model.load(path)
    function = _LOADED[key].signatures[signature]
    return {
        name: value.numpy()
        for name, value in function(**{k: tf.constant(v) for k, v in inputs.items()}).items()
    }


def rest_columns(inputs):
    """A columnar REST predict body for ``inputs``."""
    return {"inputs": {key: value.tolist() for key, value in inputs.items()}}


def rest_rows(inputs):
    """A row-format REST predict body for ``inputs`` (one object per example)."""
    rows = len(next(iter(inputs.values())))
    return {"instances": [{key: value[i].tolist() for key, value in inputs.items()} for i in range(rows)]}


def make_base(store, tmp_path, versions):
    """A model base path holding ``versions`` ({number: export name}) copied from the store."""
    base = tmp_path / "base"
    base.mkdir(parents=True, exist_ok=True)
    for number, export in versions.items():
        shutil.copytree(store / export, base / str(number))
    return base


def wait_for(condition, timeout=30.0, step=0.05):
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
