"""Small SavedModels shared by the validate tests, built once per test session."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import saved_models  # noqa: E402


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("validate-models")


@pytest.fixture(scope="session")
def keras_model(models_dir):
    return saved_models.build_keras(str(models_dir / "keras"))


@pytest.fixture(scope="session")
def module_model(models_dir):
    return saved_models.build_module(str(models_dir / "module"))


@pytest.fixture(scope="session")
def tf1_model(models_dir):
    return saved_models.build_tf1(str(models_dir / "tf1"))


@pytest.fixture
def copy_of(tmp_path):
    """A fresh copy of a model, to break on purpose."""
    return lambda src: saved_models.copy_model(src, tmp_path / "copy")


def _rewrite(models_dir, original, name):
    from graphopt.rewrite.rewriter import rewrite_model

    out = str(models_dir / name)
    report = rewrite_model(original, out)
    assert report.wrote, report.message
    return out


@pytest.fixture(scope="session")
def rewritten_module(models_dir, module_model):
    return _rewrite(models_dir, module_model, "module-rewritten")


@pytest.fixture(scope="session")
def rewritten_keras(models_dir, keras_model):
    return _rewrite(models_dir, keras_model, "keras-rewritten")


@pytest.fixture(scope="session")
def rewritten_tf1(models_dir, tf1_model):
    return _rewrite(models_dir, tf1_model, "tf1-rewritten")
