"""Fixtures shared across the suite: the real sample file and the course's model in three forms."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_SAMPLES = os.path.join(REPO, "..", "shared", "data", "sparrowrecsys", "testSamples.csv")
FORMS = ("keras", "feature-columns", "tf1")


@pytest.fixture(scope="session")
def real_samples_path():
    """The course's real samples, or a visible skip where ../shared/data is absent."""
    if not os.path.exists(REAL_SAMPLES):
        pytest.skip(f"real samples not found at {os.path.normpath(REAL_SAMPLES)} (../shared/data is absent)")
    return REAL_SAMPLES


@pytest.fixture(scope="session")
def course_models(tmp_path_factory):
    """Builds the Embedding+MLP once per form on small synthetic data; maps form -> (dir, report)."""
    from graphopt.course.models import build_model

    built = {}

    def get(form):
        if form not in built:
            out = tmp_path_factory.mktemp("course_models") / form
            built[form] = (str(out), build_model(str(out), form=form, epochs=1, seed=7))
        return built[form]

    return get


@pytest.fixture(scope="session")
def built_case(tmp_path_factory):
    """Builds a case's model once per session; maps builder -> Case (tests/rewrite/cases.py)."""
    built = {}

    def get(builder):
        if builder not in built:
            root = tmp_path_factory.mktemp(builder.__name__)
            built[builder] = builder(str(root / "model"))
        return built[builder]

    return get
