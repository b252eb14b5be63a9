"""A real DeepCTR DeepFM (tf_keras), rewritten: tf_keras.models.load_model revives its tables as
graphopt.tf_keras.DynamicEmbedding and fit trains them bit for bit as tf_keras trains the dense ones.

DeepCTR builds on ``tf.keras``, which is tf_keras only with TF_USE_LEGACY_KERAS=1 set before
TensorFlow is imported: the model is built and saved in a subprocess.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("deepctr")
tf_keras = pytest.importorskip("tf_keras")

import graphopt  # noqa: E402,F401
from graphopt.rewrite import rewrite_model  # noqa: E402

FIELDS = {"user": 30, "item": 20, "cat": 6}

_BUILD = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    from deepctr.feature_column import SparseFeat
    from deepctr.models import DeepFM
    fields, optimizer, out = eval(sys.argv[1]), sys.argv[2], sys.argv[3]
    tf.keras.utils.set_random_seed(0)
    columns = [SparseFeat(f, vocabulary_size=n, embedding_dim=4) for f, n in fields.items()]
    model = DeepFM(columns, columns, dnn_hidden_units=(8,), l2_reg_embedding=0, seed=0)
    # Until a regularizer's whole-table read no longer blocks a table (issue 21 item 2), the
    # embeddings carry none at all (DeepCTR adds l2(0.0) even for l2_reg_embedding=0).
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.Embedding):
            layer.embeddings_regularizer = None
            layer._callable_losses.clear()
    opt = {"sgd": tf.keras.optimizers.SGD(0.1), "adagrad": tf.keras.optimizers.Adagrad(0.05)}[optimizer]
    model.compile(opt, "binary_crossentropy")
    model.save(out, save_format="tf")
    """
)


def _batch(rng, n=32):
    return {f: rng.randint(0, rows, (n,)).astype("int64") for f, rows in FIELDS.items()}


def _build(out, optimizer):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", _BUILD, repr(FIELDS), optimizer, out], check=True, env=env)


def _rows(table):
    keys, values, *_ = table.export()
    return dict(zip(keys.numpy().tolist(), values.numpy(), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_deepfm_trains_its_dynamic_tables_exactly_after_load_model(tmp_path, optimizer):
    src, out = str(tmp_path / "deepfm"), str(tmp_path / "deepfm_ev")
    _build(src, optimizer)
    report = rewrite_model(src, out)
    assert report.plan.notes == []
    dense, dynamic = tf_keras.models.load_model(src), tf_keras.models.load_model(out)
    table_layers = [
        layer for layer in dynamic.layers if isinstance(layer, graphopt.tf_keras.DynamicEmbedding)
    ]
    assert len(table_layers) == len(report.plan.tables) == 2 * len(FIELDS)  # deep/FM and linear
    assert len(dynamic.trainable_weights) == len(dense.trainable_weights)
    rng = np.random.RandomState(1)
    for _ in range(10):
        x, y = _batch(rng), rng.randint(0, 2, (32, 1))
        assert dense.train_on_batch(x, y) == dynamic.train_on_batch(x, y)
    for layer in table_layers:
        want = dense.get_layer(layer.name).embeddings.numpy()
        got = _rows(layer.table)
        np.testing.assert_array_equal(np.stack([got[i] for i in range(len(want))]), want, err_msg=layer.name)
    # A new id gets a row; predict (find-only) inserts nothing.
    x = _batch(rng)
    x["user"][:3] = 5_000
    user_tables = [layer.table for layer in table_layers if "user" in layer.name]
    dynamic.predict(x, verbose=0)
    assert all(5_000 not in _rows(t) for t in user_tables)
    dynamic.fit(x, rng.randint(0, 2, (32, 1)), verbose=0)
    assert all(5_000 in _rows(t) for t in user_tables)
