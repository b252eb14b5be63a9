"""Fixtures: exported model versions, and started servers on ephemeral loopback ports."""

import pytest
import tensorflow as tf

from graphopt.serve import ModelServer
from tests.serve.serve_models import Tower, export_recommender, make_base


@pytest.fixture(scope="session")
def model_store(tmp_path_factory):
    """Exported versions to copy into base paths: rec-v1, rec-v2 (other weights), tower."""
    root = tmp_path_factory.mktemp("exports")
    export_recommender(str(root / "rec-v1"), seed=1)
    export_recommender(str(root / "rec-v2"), seed=2)
    tower = Tower()
    tf.saved_model.save(
        tower, str(root / "tower"), signatures={"serving_default": tower.scores, "words": tower.words}
    )
    return root


@pytest.fixture(scope="module")
def rec_server(model_store, tmp_path_factory):
    """A started server for the recommender (model name "rec", version 3) on ephemeral ports."""
    base = make_base(model_store, tmp_path_factory.mktemp("rec"), {3: "rec-v1"})
    with ModelServer(
        str(base), "rec", rest_port=0, grpc_port=0, poll_seconds=0.1, max_body_bytes=64 * 1024
    ) as server:
        yield server


@pytest.fixture(scope="module")
def tower_server(model_store, tmp_path_factory):
    """A started server for the two-signature Tower module (model name "tower")."""
    base = make_base(model_store, tmp_path_factory.mktemp("tower"), {1: "tower"})
    with ModelServer(str(base), "tower", rest_port=0, grpc_port=0, poll_seconds=0.1) as server:
        yield server
