"""Tables inside other layers in the .keras path: keras-rs DistributedEmbedding and an Embedding
nested in a custom layer become DynamicEmbeddings (inside graphopt's DynamicTables wrapper), the
converted file loads back and predicts what the original predicts, and fit on new ids gives them rows.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import graphopt  # noqa: F401
from graphopt.keras import convert_file
from graphopt.keras.layer import DynamicEmbedding
from graphopt.keras.nested import DynamicTables

keras_rs = pytest.importorskip("keras_rs")

B = 8


@keras.saving.register_keras_serializable(package="graphopt_tests")
class Tower(keras.layers.Layer):
    """A custom layer holding its own Embedding and Dense sublayers."""

    def __init__(self, rows=40, dim=3, **kwargs):
        super().__init__(**kwargs)
        self.rows, self.dim = rows, dim
        self.lookup = keras.layers.Embedding(rows, dim, name="tower_emb")
        self.project = keras.layers.Dense(2, name="tower_dense")

    def call(self, ids):
        return self.project(self.lookup(ids))

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "dim": self.dim}


def _keras_rs_model():
    keras.utils.set_random_seed(0)
    user = keras_rs.layers.TableConfig(
        name="user_table", vocabulary_size=50, embedding_dim=4, placement="default_device"
    )
    tags = keras_rs.layers.TableConfig(
        name="tag_table", vocabulary_size=20, embedding_dim=4, combiner="sqrtn", placement="default_device"
    )
    features = {
        "user": keras_rs.layers.FeatureConfig(name="user", table=user, input_shape=(B,), output_shape=(B, 4)),
        "tags": keras_rs.layers.FeatureConfig(
            name="tags", table=tags, input_shape=(B, 3), output_shape=(B, 4)
        ),
    }
    inputs = {
        "user": keras.Input(shape=(), batch_size=B, dtype="int32", name="user"),
        "tags": keras.Input(shape=(3,), batch_size=B, dtype="int32", name="tags"),
    }
    out = keras_rs.layers.DistributedEmbedding(features, name="dist_emb")(inputs)
    x = keras.layers.Concatenate()([out["user"], out["tags"]])
    x = keras_rs.layers.FeatureCross(name="cross")(x, x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="out")(x))
    model.compile(keras.optimizers.Adagrad(0.1), "binary_crossentropy")
    return model


def _keras_rs_batch(rng):
    return {
        "user": rng.randint(0, 50, (B,)).astype("int32"),
        "tags": rng.randint(0, 20, (B, 3)).astype("int32"),
    }


def _tower_model():
    keras.utils.set_random_seed(1)
    ids = keras.Input(shape=(), dtype="int64", name="ids")
    model = keras.Model(ids, keras.layers.Dense(1, name="out")(Tower(name="tower")(ids)))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


@pytest.fixture(scope="module")
def keras_rs_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras_rs")
    rng = np.random.RandomState(0)
    model = _keras_rs_model()
    model.fit(_keras_rs_batch(rng), rng.randint(0, 2, (B, 1)), batch_size=B, verbose=0)
    src, out = str(root / "dcn.keras"), str(root / "dcn_ev.keras")
    model.save(src)
    return src, out, convert_file(src, out)


def _tables(model, layer):
    return {t.name: t for t in model.get_layer(layer).tables.values()}


def test_distributed_embedding_tables_become_dynamic_and_load_back(keras_rs_files):
    src, out, report = keras_rs_files
    assert sorted(name for name, *_ in report.tables) == ["dist_emb/tag_table", "dist_emb/user_table"]
    assert all(slots == ("accumulator",) for *_, slots in report.tables)
    original, converted = keras.saving.load_model(src), keras.saving.load_model(out)
    assert isinstance(converted.get_layer("dist_emb"), DynamicTables)
    tables = _tables(converted, "dist_emb")
    assert {n: t.combiner for n, t in tables.items()} == {"tag_table": "sqrtn", "user_table": "mean"}
    assert all(isinstance(t, DynamicEmbedding) for t in tables.values())
    # Only the tables' own weights: the replaced EmbedReduce layers' dense rows are gone.
    assert not any(tuple(w.shape) in ((50, 4), (20, 4)) for w in converted.weights)
    x = _keras_rs_batch(np.random.RandomState(1))
    np.testing.assert_array_equal(
        converted.predict(x, batch_size=B, verbose=0), original.predict(x, batch_size=B, verbose=0)
    )


def test_fit_on_new_ids_gives_them_rows(keras_rs_files):
    _, out, _ = keras_rs_files
    model = keras.saving.load_model(out)
    rng = np.random.RandomState(2)
    x = _keras_rs_batch(rng)
    x["user"][:2], x["tags"][0] = 1_000, [500, 501, 3]  # outside both vocabularies
    tables = _tables(model, "dist_emb")
    before = {name: int(t.table.size()) for name, t in tables.items()}
    model.fit(x, rng.randint(0, 2, (B, 1)), batch_size=B, verbose=0)
    assert int(tables["user_table"].table.size()) == before["user_table"] + 1
    assert int(tables["tag_table"].table.size()) == before["tag_table"] + 2


def test_an_embedding_nested_in_a_custom_layer_converts_and_trains(tmp_path):
    model = _tower_model()
    src, out = str(tmp_path / "tower.keras"), str(tmp_path / "tower_ev.keras")
    model.save(src)
    report = convert_file(src, out)
    assert [name for name, *_ in report.tables] == ["tower/tower_emb"]
    assert report.warnings() == []
    converted = keras.saving.load_model(out)
    tower = converted.get_layer("tower")
    assert isinstance(tower.inner.lookup, DynamicEmbedding)
    ids = np.array([0, 5, 39, 7])
    np.testing.assert_array_equal(converted.predict(ids, verbose=0), model.predict(ids, verbose=0))
    converted.fit(np.array([100, 5, 100, 7]), np.ones((4, 1)), verbose=0)
    assert int(tower.inner.lookup.table.size()) == 41


def test_cli_names_the_keras_rs_classes_and_the_package_to_import(keras_rs_files, tmp_path):
    src = keras_rs_files[0]
    out = str(tmp_path / "out.keras")
    run = subprocess.run(
        [sys.executable, "-m", "graphopt", "rewrite", src, "-o", out],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert run.returncode == 2, run.stderr
    message = run.stderr.strip().splitlines()[-1]
    assert "keras_rs>DistributedEmbedding (import keras_rs)" in message, message
    assert "keras_rs>FeatureCross" in message and "__keras_tensor__" not in message
    assert not os.path.exists(out)
    # With the package imported, the command converts the file.
    run = subprocess.run(
        [sys.executable, "-m", "graphopt", "rewrite", src, "-o", out, "--import", "keras_rs"],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert run.returncode == 0, run.stderr
    assert "converted 2 Embedding layer(s)" in run.stdout and os.path.isfile(out)
