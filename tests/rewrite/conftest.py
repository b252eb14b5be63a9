"""Fixtures of the rewrite tests: each case's model built once, and its rewrite built once."""

import os

import pytest


@pytest.fixture(scope="session")
def ev_ops():
    """The EmbeddingVariable op library (importing graphopt.ops loads it)."""
    import graphopt.ops as ops

    return ops


@pytest.fixture(scope="session")
def rewritten_case(built_case, ev_ops, tmp_path_factory):
    """Rewrites a case's model once per session (debug mode: integrity checked after each pass)."""
    from graphopt.rewrite import rewrite_model

    done = {}

    def get(builder):
        if builder not in done:
            case = built_case(builder)
            out = str(tmp_path_factory.mktemp(builder.__name__ + "_ev") / "out")
            report = rewrite_model(case.path, out, debug=True)
            done[builder] = (case, out, report)
        return done[builder]

    return get


def rewritten_path(case, out):
    """Where the rewritten model's loadable file is (a .meta/.pbtxt for checkpoint cases)."""
    return os.path.join(out, os.path.basename(case.path)) if case.kind == "meta_graph" else out
