"""Each form saves a model its users can load, taking the raw features by name."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from graphopt.course.data import GENRE_FEATURES, ID_FEATURES, NUMERIC_FEATURES, generate_samples
from graphopt.course.models import REPORT_FILE
from graphopt.course.models.features import feature_arrays
from tests.conftest import FORMS

EXPECTED_DTYPES = {
    **{n: tf.int64 for n in ID_FEATURES},
    **{n: tf.string for n in GENRE_FEATURES},
    **{n: tf.float32 for n in NUMERIC_FEATURES},
}


def _serving_outputs(model_dir, features):
    loaded = tf.saved_model.load(model_dir)
    fn = loaded.signatures["serving_default"]
    out = fn(**{k: tf.constant(v) for k, v in features.items()})
    (value,) = out.values()
    return fn, value.numpy().reshape(-1)


@pytest.mark.parametrize("form", FORMS)
def test_signature_takes_raw_features_by_name(course_models, form):
    model_dir, report = course_models(form)
    fn, scores = _serving_outputs(model_dir, feature_arrays(generate_samples(50, seed=1)))
    _, specs = fn.structured_input_signature
    assert {k: s.dtype for k, s in specs.items()} == EXPECTED_DTYPES
    assert scores.shape == (50,) and np.all((scores >= 0) & (scores <= 1))
    written = json.load(open(os.path.join(model_dir, REPORT_FILE)))
    assert written["form"] == form and written["roc_auc"] == report.roc_auc


@pytest.mark.parametrize("form", FORMS)
def test_saved_model_reproduces_training_scores(course_models, form):
    """The report's metrics come from the same function that was saved."""
    model_dir, report = course_models(form)
    samples = generate_samples(20000, seed=report.seed)
    from graphopt.course.data import time_split
    from graphopt.course.models import metrics

    _, test = time_split(samples)
    _, scores = _serving_outputs(model_dir, feature_arrays(test))
    assert metrics.roc_auc(test.labels, scores) == pytest.approx(report.roc_auc, abs=1e-6)


@pytest.mark.exact
def test_tf1_form_ships_checkpoint_and_meta_graph(course_models):
    model_dir, _ = course_models("tf1")
    ckpt = os.path.join(model_dir, "checkpoint")
    assert {"model.ckpt.meta", "model.pbtxt", "model.ckpt.index"} <= set(os.listdir(ckpt))
    features = feature_arrays(generate_samples(20, seed=5))
    _, expected = _serving_outputs(model_dir, features)
    for meta in ("model.ckpt.meta", "model.pbtxt"):
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
            saver = tf.compat.v1.train.import_meta_graph(os.path.join(ckpt, meta))
            saver.restore(sess, os.path.join(ckpt, "model.ckpt"))
            sess.run(tf.compat.v1.tables_initializer())
            feeds = {graph.get_tensor_by_name(f"{k}:0"): v for k, v in features.items()}
            got = sess.run("prediction:0", feeds)
        np.testing.assert_array_equal(got, expected)
        ops = {op.type for op in graph.get_operations()}
        assert "ResourceGather" in ops, "TF1 form must look up embeddings with embedding_lookup"


def test_tf1_checkpoint_state_survives_a_move(course_models, tmp_path):
    """checkpoint/checkpoint names model.ckpt relative to itself: the model is saved into a
    stage folder and moved, and users copy models around (it once pointed into the stage)."""
    import shutil

    from graphopt.rewrite import rewrite_model

    model_dir, _ = course_models("tf1")
    moved = tmp_path / "moved"
    shutil.copytree(model_dir, moved)
    state = (moved / "checkpoint" / "checkpoint").read_text()
    assert model_dir not in state and ".partial-" not in state
    assert tf.train.latest_checkpoint(str(moved / "checkpoint")) == str(moved / "checkpoint" / "model.ckpt")
    for meta in ("model.pbtxt", "model.ckpt.meta"):
        report = rewrite_model(str(moved / "checkpoint" / meta), str(tmp_path / meta))
        assert report.wrote and report.tables_converted == 10
        assert tf.train.latest_checkpoint(str(tmp_path / meta)) == str(tmp_path / meta / "model.ckpt")


@pytest.mark.parametrize("form", FORMS)
def test_training_reports_each_epoch(form, tmp_path):
    from graphopt.course.models import build_model

    epochs = []
    build_model(
        str(tmp_path / "m"),
        form=form,
        epochs=2,
        seed=3,
        on_epoch=lambda epoch, loss: epochs.append((epoch, loss)),
    )
    assert [e for e, _ in epochs] == [1, 2]
    assert all(0 < loss < 1 for _, loss in epochs), epochs  # binary cross-entropy of a learning model


def test_keras_form_uses_embedding_layers(course_models):
    model_dir, _ = course_models("keras")
    from graphopt.course.models import keras_form
    from graphopt.course.models.features import Normalization

    model = keras_form.build(Normalization.fit(generate_samples(100)))
    embeddings = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Embedding)]
    assert sorted(layer.input_dim for layer in embeddings) == [20] * 8 + [1001, 30001]
    assert all(layer.output_dim == 10 for layer in embeddings)
