"""The course's Embedding+MLP in its three forms, rewritten and run through both loaders."""

import collections

import pytest

from graphopt import model_io
from graphopt.course.data import generate_samples
from graphopt.course.models.features import feature_arrays
from graphopt.graph.model import ModelGraph
from graphopt.rewrite import inspect_model, rewrite_model
from tests.conftest import FORMS
from tests.rewrite.runners import assert_identical, run_session, run_tf2

ID_AND_GENRE_TABLES = 10


@pytest.fixture(scope="module")
def rewritten_form(course_models, ev_ops, tmp_path_factory):
    done = {}

    def get(form):
        if form not in done:
            model_dir, _ = course_models(form)
            out = str(tmp_path_factory.mktemp(f"course_{form}_ev") / "out")
            done[form] = (model_dir, out, rewrite_model(model_dir, out, debug=True))
        return done[form]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_course_model_rewrites_every_table(rewritten_form, form):
    model_dir, out, report = rewritten_form(form)
    assert len(inspect_model(model_dir).tables) == ID_AND_GENRE_TABLES == report.tables_converted
    model = ModelGraph(model_io.read_model(out).meta_graph)
    ops = collections.Counter(n.op for b in model.bodies.values() for n in b.nodes())
    # One handle per table in the graph (the session path); the TF2 object graph's
    # EmbeddingVariable objects create theirs in their own _create_resource functions.
    assert collections.Counter(n.op for n in model.graph.nodes())["GraphoptEvHandleOp"] == ID_AND_GENRE_TABLES
    assert ops["GraphoptEvFind"] >= ID_AND_GENRE_TABLES
    assert inspect_model(out).tables == []


@pytest.mark.exact
@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_course_model_session_loader_bit_identical(rewritten_form, form):
    model_dir, out, _ = rewritten_form(form)
    feeds = feature_arrays(generate_samples(64, seed=3))
    assert_identical(
        run_session(model_dir, "serving_default", feeds), run_session(out, "serving_default", feeds)
    )


@pytest.mark.exact
@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_course_model_tf2_loader_bit_identical(rewritten_form, form):
    """tf.saved_model.load of the output equals tf.saved_model.load of the untouched original.

    The output keeps (a rewritten) object graph, so the TF2 loader takes the same path for both;
    had it been dropped, the TF1 path's Grappler choices would move some scores by an ulp.
    """
    model_dir, out, _ = rewritten_form(form)
    feeds = feature_arrays(generate_samples(64, seed=3))
    assert_identical(run_tf2(model_dir, "serving_default", feeds), run_tf2(out, "serving_default", feeds))
