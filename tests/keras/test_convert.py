"""graphopt.keras.convert and `graphopt rewrite model.keras`: rows, slots, shared layers, bad input."""

import hashlib
import json
import os
import zipfile

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import graphopt  # noqa: F401
from graphopt.cli import main
from graphopt.errors import ModelError
from graphopt.keras import DynamicEmbedding, convert


@keras.saving.register_keras_serializable(package="graphopt_tests")
class Doubler(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


def shared_model():
    keras.utils.set_random_seed(5)
    shared = keras.layers.Embedding(30, 3, name="shared")
    a, b = keras.Input(shape=(), dtype="int64", name="a"), keras.Input(shape=(), dtype="int64", name="b")
    x = keras.layers.Concatenate()([shared(a), Doubler(name="doubler")(shared(b))])
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(1, name="out")(x))
    model.compile(optimizer=keras.optimizers.Adagrad(0.2, epsilon=0.0), loss="mse", jit_compile=False)
    return model


def data(seed):
    rng = np.random.default_rng(seed)
    return {"a": rng.permutation(30)[:6], "b": rng.permutation(30)[:6]}, rng.normal(size=(6, 1)).astype(
        "float32"
    )


@pytest.mark.exact
def test_sequential_rows_become_keys():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input(shape=(2,), dtype="int64"),
            keras.layers.Embedding(10, 3, name="e"),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    converted = convert(model)
    layer = converted.get_layer("e")
    assert isinstance(layer, DynamicEmbedding) and layer.table.optimizer is None  # not compiled
    keys, values, *_ = layer.table.export()
    order = np.argsort(keys.numpy())
    np.testing.assert_array_equal(keys.numpy()[order], np.arange(10))
    np.testing.assert_array_equal(values.numpy()[order], model.get_layer("e").embeddings.numpy())
    x = np.array([[1, 9], [0, 4]])
    np.testing.assert_array_equal(converted.predict(x, verbose=0), model.predict(x, verbose=0))


def test_shared_layer_stays_shared_and_slots_and_steps_carry_over():
    model = shared_model()
    for seed in range(3):
        model.train_on_batch(*data(seed))
    converted = convert(model)
    emb = converted.get_layer("shared")
    assert isinstance(emb, DynamicEmbedding)
    assert sum(isinstance(layer, DynamicEmbedding) for layer in converted.layers) == 1
    assert len(emb._inbound_nodes) == 2  # both inputs read the one table
    assert int(emb.iterations.numpy()) == 3
    opt = model.optimizer
    accumulator = opt._accumulators[opt._get_variable_index(model.get_layer("shared").embeddings)]
    keys, _, _, _, slots = emb.table.export_with_slots()
    np.testing.assert_array_equal(slots["accumulator"].numpy()[np.argsort(keys.numpy())], accumulator.numpy())
    # The dense layers' optimizer state came along: the next step's dense update is identical.
    converted.train_on_batch(*data(9))
    model.train_on_batch(*data(9))
    np.testing.assert_array_equal(
        converted.get_layer("out").kernel.numpy(), model.get_layer("out").kernel.numpy()
    )


def test_subclassed_models_are_refused_with_advice():
    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ModelError, match="functional or Sequential"):
        convert(Custom())


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_cli_rewrites_a_keras_file_and_names_custom_layers(tmp_path):
    source = str(tmp_path / "model.keras")
    shared_model().save(source)
    before = digest(source)
    out = str(tmp_path / "model_ev.keras")
    result = CliRunner().invoke(main, ["rewrite", source, "-o", out], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "shared [30, 3] -> EmbeddingVariable" in result.output
    assert "warning: layer doubler (Doubler)" in result.output
    assert digest(source) == before
    loaded = keras.saving.load_model(out)
    assert isinstance(loaded.get_layer("shared"), DynamicEmbedding)
    x, _ = data(0)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), keras.saving.load_model(source).predict(x, verbose=0)
    )


def test_cli_unknown_custom_class_exits_2_writes_nothing(tmp_path):
    source = str(tmp_path / "model.keras")
    shared_model().save(source)
    # Rename the custom class in the file to one no module registers.
    broken = str(tmp_path / "broken.keras")
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(broken, "w") as zout:
        for item in zin.namelist():
            content = zin.read(item)
            if item == "config.json":
                content = json.dumps(json.loads(content)).replace("Doubler", "Tripler").encode()
            zout.writestr(item, content)
    out = str(tmp_path / "out.keras")
    result = CliRunner().invoke(main, ["rewrite", broken, "-o", out])
    assert result.exit_code == 2
    assert "Tripler" in result.output and "cannot load" in result.output
    assert not os.path.exists(out)


def test_cli_refuses_a_file_that_is_not_a_keras_model(tmp_path):
    bad = tmp_path / "notes.keras"
    bad.write_text("not a zip")
    result = CliRunner().invoke(main, ["rewrite", str(bad), "-o", str(tmp_path / "o.keras")])
    assert result.exit_code == 2 and "is not a .keras file" in result.output


def exported_pair(tmp_path, break_row=False):
    model = shared_model()
    model.train_on_batch(*data(0))
    model.export(str(tmp_path / "original"), format="tf_saved_model", verbose=False)
    converted = convert(model)
    if break_row:
        converted.get_layer("shared").table.insert([7], np.full((1, 3), 0.5, "float32"))
    converted.export(str(tmp_path / "converted"), format="tf_saved_model", verbose=False)
    return str(tmp_path / "original"), str(tmp_path / "converted")


def test_export_of_the_converted_model_validates_exactly(tmp_path):
    from graphopt.validate import validate_models

    report = validate_models(*exported_pair(tmp_path))
    assert report.passed, report.format()


def test_validate_catches_one_changed_row_of_the_converted_table(tmp_path):
    from graphopt.validate import validate_models

    report = validate_models(*exported_pair(tmp_path, break_row=True))
    assert not report.passed
    assert "differ" in report.format()


def test_a_shared_table_steps_once_per_batch():
    model = shared_model()
    converted = convert(model)
    for seed in range(3):
        converted.fit(*data(seed), verbose=0)
    assert int(converted.get_layer("shared").iterations.numpy()) == 3
