"""graphopt.tf_keras.convert / `graphopt rewrite` of tf_keras .h5 and .keras files: the Embeddings
become graphopt.tf_keras.DynamicEmbedding, the .keras output loads back, trains bit for bit as the
dense model does, and new ids get rows."""

import os

import numpy as np
import pytest
from click.testing import CliRunner

tf_keras = pytest.importorskip("tf_keras")

import graphopt  # noqa: E402
from graphopt.cli import main  # noqa: E402
from graphopt.tf_keras.convert import convert_file, is_tf_keras_file  # noqa: E402
from tests.rewrite.test_tf_keras_reload import FIELDS, _batch, _deepfm  # noqa: E402


def _rows(table):
    keys, values, *_ = table.export()
    return dict(zip(keys.numpy().tolist(), values.numpy(), strict=True))


def test_h5_deepfm_converts_and_trains_exactly(tmp_path):
    tf_keras.utils.set_random_seed(0)
    model = _deepfm()
    model.compile(tf_keras.optimizers.Adagrad(0.05), "binary_crossentropy")
    src, out = str(tmp_path / "deepfm.h5"), str(tmp_path / "deepfm_ev.keras")
    model.save(src)
    assert is_tf_keras_file(src)
    report = convert_file(src, out)
    assert len(report.tables) == 2 * len(FIELDS)
    dense = tf_keras.models.load_model(src)
    dynamic = tf_keras.models.load_model(out, safe_mode=False)  # the DeepFM's Lambda layers
    assert isinstance(dynamic.get_layer("user_id_emb"), graphopt.tf_keras.DynamicEmbedding)
    rng = np.random.RandomState(1)
    for _ in range(10):
        x, y = _batch(rng), rng.randint(0, 2, (32, 1))
        assert dense.train_on_batch(x, y) == dynamic.train_on_batch(x, y)
    for name in ("user_id_emb", "genre_linear"):
        want = dense.get_layer(name).embeddings.numpy()
        got = _rows(dynamic.get_layer(name).table)
        np.testing.assert_array_equal(np.stack([got[i] for i in range(len(want))]), want)
    x = _batch(rng)
    x["item_id"][:2] = 999
    dynamic.fit(x, rng.randint(0, 2, (32, 1)), verbose=0)
    assert 999 in _rows(dynamic.get_layer("item_id_emb").table)


def test_cli_rewrites_a_tf_keras_keras_file(tmp_path):
    tf_keras.utils.set_random_seed(0)
    ids = tf_keras.Input((2,), dtype="int64", name="ids")
    emb = tf_keras.layers.Embedding(20, 3, name="emb")(ids)
    model = tf_keras.Model(ids, tf_keras.layers.Dense(1)(tf_keras.layers.Flatten()(emb)))
    model.compile(tf_keras.optimizers.SGD(0.1), "mse")
    src, out = str(tmp_path / "m.keras"), str(tmp_path / "m_ev.keras")
    model.save(src)
    assert is_tf_keras_file(src)
    result = CliRunner().invoke(main, ["rewrite", src, "-o", out])
    assert result.exit_code == 0, result.output
    assert "converted 1 Embedding layer(s)" in result.output
    converted = tf_keras.models.load_model(out)
    x = np.array([[1, 2], [3, 19]])
    np.testing.assert_array_equal(converted.predict(x, verbose=0), model.predict(x, verbose=0))
    converted.fit(np.array([[1, 500]]), np.ones((1, 1)), verbose=0)
    assert int(converted.get_layer("emb").table.size()) == 21
    # .h5 cannot hold a dynamic table: the output must be .keras.
    bad = CliRunner().invoke(main, ["rewrite", src, "-o", str(tmp_path / "m_ev.h5")])
    assert bad.exit_code == 2 and "is a .keras file" in bad.output
    assert not os.path.exists(tmp_path / "m_ev.h5")
