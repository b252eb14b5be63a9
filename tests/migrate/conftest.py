"""The TFRA 0.8.1 fixtures (built by tools/tfra/build_fixtures.py in a TF 2.16 + TFRA venv; the
suite never needs that venv) and their migrations, made once per session."""

import os
import shutil

import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tfra")
# model -> the path graphopt reads (a SavedModel directory or a TF1 .meta)
TFRA_MODELS = {
    "keras_embedding": "keras_embedding",
    "tf1_sparse": os.path.join("tf1_sparse", "model.meta"),
    "tf1_adagrad": os.path.join("tf1_adagrad", "model.meta"),
}


def fixture_path(name):
    return os.path.join(FIXTURES, TFRA_MODELS[name])


def reference_path(name):
    return os.path.join(FIXTURES, name, "reference.npz")


def output_model(out_dir, name):
    """The path of the migrated model inside its output directory."""
    return out_dir if name == "keras_embedding" else os.path.join(out_dir, "model.meta")


@pytest.fixture(scope="session")
def migrated(tmp_path_factory):
    """name -> (output directory, MigrationReport); each fixture migrated once."""
    from graphopt.rewrite.targets.ev.migrate import migrate_model

    done = {}

    def get(name):
        if name not in done:
            out = str(tmp_path_factory.mktemp("migrated") / name)
            done[name] = (out, migrate_model(fixture_path(name), out, debug=True))
        return done[name]

    return get


@pytest.fixture
def copy_of(tmp_path):
    """A writable copy of a fixture's directory."""

    def copy(name):
        dst = tmp_path / name
        shutil.copytree(os.path.join(FIXTURES, name), dst)
        return str(dst)

    return copy
