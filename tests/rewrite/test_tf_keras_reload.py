"""tf_keras SavedModels after the rewrite: tf_keras.models.load_model works, predicts what the
original predicts, revives each converted Embedding as graphopt.tf_keras.DynamicEmbedding, and fit
trains the dynamic tables bit for bit as tf_keras trains the dense ones (SGD, Adagrad).

The model is a small DeepFM (DeepCTR is not installed): per-field embeddings shared by an FM
second-order term and a deep tower, plus per-field linear (dim 1) embeddings.
"""

import os

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras")

import graphopt  # noqa: E402,F401  (registers the EmbeddingVariable ops load_model needs)
from graphopt import model_io  # noqa: E402
from graphopt.graph.model import ModelGraph  # noqa: E402
from graphopt.rewrite import rewrite_model  # noqa: E402
from graphopt.validate import validate_models  # noqa: E402

FIELDS = {"user_id": 40, "item_id": 30, "genre": 5}
DIM = 4


def _deepfm():
    keras = tf_keras
    inputs = {f: keras.Input((1,), dtype="int64", name=f) for f in FIELDS}
    embeds = [keras.layers.Embedding(n, DIM, name=f"{f}_emb")(inputs[f]) for f, n in FIELDS.items()]
    linear = [keras.layers.Embedding(n, 1, name=f"{f}_linear")(inputs[f]) for f, n in FIELDS.items()]
    stack = keras.layers.Concatenate(axis=1)(embeds)  # [batch, fields, dim]
    square_of_sum = keras.layers.Lambda(lambda e: tf_keras.backend.square(tf_keras.backend.sum(e, 1)))(stack)
    sum_of_square = keras.layers.Lambda(lambda e: tf_keras.backend.sum(e * e, 1))(stack)
    fm = keras.layers.Lambda(lambda t: 0.5 * tf_keras.backend.sum(t[0] - t[1], 1, keepdims=True))(
        [square_of_sum, sum_of_square]
    )
    deep = keras.layers.Dense(8, activation="relu", name="deep_1")(keras.layers.Flatten()(stack))
    deep = keras.layers.Dense(1, name="deep_out")(deep)
    first_order = keras.layers.Flatten()(keras.layers.Add()(linear))
    out = keras.layers.Activation("sigmoid")(keras.layers.Add()([first_order, fm, deep]))
    return keras.Model(inputs, out)


def _batch(rng, n=32):
    return {f: rng.randint(0, rows, (n, 1)).astype("int64") for f, rows in FIELDS.items()}


def _save_and_rewrite(root, name, optimizer, fit=True):
    """(original dir, rewritten dir, rewrite report) of a tf_keras DeepFM compiled with ``optimizer``."""
    tf_keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    model = _deepfm()
    if optimizer is not None:
        model.compile(optimizer, "binary_crossentropy")
    if fit:
        model.fit(_batch(rng, 64), rng.randint(0, 2, (64, 1)), epochs=1, verbose=0)
    src, out = str(root / name), str(root / f"{name}_ev")
    model.save(src, save_format="tf")
    return src, out, rewrite_model(src, out)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(original dir, rewritten dir, rewrite report) of a trained tf_keras DeepFM."""
    return _save_and_rewrite(tmp_path_factory.mktemp("tf_keras"), "deepfm", "adagrad")


def test_every_gather_of_a_table_is_rewritten_including_the_per_layer_functions(models):
    src, out, report = models
    assert len(report.plan.tables) == 2 * len(FIELDS)
    layer_sites = [s for t in report.plan.tables for s in t.sites if "_layer_call_" in s.body]
    assert layer_sites, "no lookup site in the functions reached only through the object graph"
    for name, model in (("original", src), ("rewritten", out)):
        graph = ModelGraph(model_io.read_model(model).meta_graph)
        gathers = [
            (b.name, n.name)
            for b in graph.functions()
            for n in b.nodes()
            if n.op == "ResourceGather" and "_layer_call_" in b.name
        ]
        assert bool(gathers) == (name == "original"), f"{name}: {gathers}"


@pytest.mark.exact
def test_load_model_predicts_exactly_what_the_original_predicts(models):
    src, out, _ = models
    assert os.path.isfile(os.path.join(out, "keras_metadata.pb"))
    x = _batch(np.random.RandomState(1), 64)
    want = tf_keras.models.load_model(src).predict(x, verbose=0)
    got = tf_keras.models.load_model(out).predict(x, verbose=0)
    np.testing.assert_array_equal(got, want)


def _rows(table):
    keys, values, *_ = table.export()
    return dict(zip(keys.numpy().tolist(), values.numpy(), strict=True))


def test_load_model_revives_each_table_as_a_trainable_dynamic_embedding(models):
    src, out, report = models
    assert report.plan.notes == []
    model, original = tf_keras.models.load_model(out), tf_keras.models.load_model(src)
    for f in FIELDS:
        for name in (f"{f}_emb", f"{f}_linear"):
            layer = model.get_layer(name)
            assert isinstance(layer, graphopt.tf_keras.DynamicEmbedding), name
            assert layer.trainable_weights == [layer.update_trigger]
    # Each table layer keeps one trainable weight: as many as the original's, tables included.
    assert len(model.trainable_weights) == len(original.trainable_weights)
    rng = np.random.RandomState(2)
    x, y = _batch(rng), rng.randint(0, 2, (32, 1))
    x["user_id"][:4] = 10_000  # an id the dense table never had
    table = model.get_layer("user_id_emb").table
    before = _rows(table)
    assert 10_000 not in before
    model.fit(x, y, epochs=2, verbose=0)
    after = _rows(table)
    assert 10_000 in after and len(after) == len(before) + 1
    moved = [
        k for k in x["user_id"].ravel().tolist() if k in before and not np.array_equal(after[k], before[k])
    ]
    assert moved, "fit did not change the looked-up rows"
    untouched = set(before) - set(x["user_id"].ravel().tolist())
    assert all(np.array_equal(after[k], before[k]) for k in untouched)


@pytest.mark.parametrize(
    "optimizer",
    [
        pytest.param(lambda: tf_keras.optimizers.SGD(0.1), id="sgd"),
        pytest.param(lambda: tf_keras.optimizers.Adagrad(0.05), id="adagrad"),
    ],
)
def test_ten_fit_steps_with_repeated_ids_are_bit_identical_to_the_dense_tables(tmp_path, optimizer):
    src, out, _ = _save_and_rewrite(tmp_path, "m", optimizer(), fit=False)
    dense, dynamic = tf_keras.models.load_model(src), tf_keras.models.load_model(out)
    rng = np.random.RandomState(3)
    for _ in range(10):  # 32 ids over 5..40 rows: every batch repeats ids
        x, y = _batch(rng), rng.randint(0, 2, (32, 1))
        assert dense.train_on_batch(x, y) == dynamic.train_on_batch(x, y)
    for f in FIELDS:
        for name in (f"{f}_emb", f"{f}_linear"):
            want = dense.get_layer(name).embeddings.numpy()
            got = _rows(dynamic.get_layer(name).table)
            np.testing.assert_array_equal(np.stack([got[i] for i in range(len(want))]), want)
    np.testing.assert_array_equal(
        dynamic.get_layer("deep_1").kernel.numpy(), dense.get_layer("deep_1").kernel.numpy()
    )


def test_a_table_that_cannot_train_warns_at_load_and_at_the_first_fit(tmp_path):
    src, out, report = _save_and_rewrite(tmp_path, "uncompiled", None, fit=False)
    assert len(report.plan.notes) == 2 * len(FIELDS)
    assert all("saved without a compiled optimizer" in n for n in report.plan.notes)
    with pytest.warns(RuntimeWarning, match="user_id_emb has no optimizer"):
        model = tf_keras.models.load_model(out)
    model.compile("adagrad", "binary_crossentropy")
    rng = np.random.RandomState(2)
    x = _batch(rng)
    rows = _rows(model.get_layer("user_id_emb").table)
    with pytest.warns(RuntimeWarning, match="fit cannot train its table"):
        model.fit(x, rng.randint(0, 2, (32, 1)), epochs=1, verbose=0)
    assert _rows(model.get_layer("user_id_emb").table).keys() == rows.keys()


@pytest.mark.exact
def test_serving_output_validates_exactly(models):
    src, out, _ = models
    # oov=False: the original raises on an id outside its table where the rewrite returns the
    # default row, a difference graphopt validate reports on its own (docs/validate.md).
    report = validate_models(src, out, batches=2, batch_size=16, oov=False)
    assert report.passed, report.failures()
