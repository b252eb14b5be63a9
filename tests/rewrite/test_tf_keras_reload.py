"""tf_keras SavedModels after the rewrite: tf_keras.models.load_model works, predicts what the
original predicts, and fit trains the other layers while the plan says the tables stay as converted.

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


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(original dir, rewritten dir, rewrite report) of a trained tf_keras DeepFM."""
    tf_keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    model = _deepfm()
    model.compile("adagrad", "binary_crossentropy")
    model.fit(_batch(rng, 64), rng.randint(0, 2, (64, 1)), epochs=1, verbose=0)
    root = tmp_path_factory.mktemp("tf_keras")
    src, out = str(root / "deepfm"), str(root / "deepfm_ev")
    model.save(src, save_format="tf")
    report = rewrite_model(src, out)
    return src, out, report


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


def test_fit_trains_the_other_layers_and_the_plan_names_each_table_layer_left_as_converted(models):
    _, out, report = models
    named = sorted(n.split(":")[0].removeprefix("tf_keras layer ") for n in report.plan.notes)
    assert named == sorted([f"{f}_emb" for f in FIELDS] + [f"{f}_linear" for f in FIELDS])
    assert all("fit trains the other layers" in n for n in report.plan.notes)
    model = tf_keras.models.load_model(out)
    rng = np.random.RandomState(2)
    x = _batch(rng)
    emb = model.get_layer("user_id_emb")
    rows_before = emb(x["user_id"]).numpy()
    deep_before = model.get_layer("deep_1").kernel.numpy()
    model.compile("adagrad", "binary_crossentropy")
    model.fit(x, rng.randint(0, 2, (32, 1)), epochs=2, verbose=0)
    assert not np.array_equal(model.get_layer("deep_1").kernel.numpy(), deep_before)
    np.testing.assert_array_equal(emb(x["user_id"]).numpy(), rows_before)


@pytest.mark.exact
def test_serving_output_validates_exactly(models):
    src, out, _ = models
    # oov=False: the original raises on an id outside its table where the rewrite returns the
    # default row, a difference graphopt validate reports on its own (docs/validate.md).
    report = validate_models(src, out, batches=2, batch_size=16, oov=False)
    assert report.passed, report.failures()
