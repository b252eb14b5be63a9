"""graphopt serve: a TensorFlow Serving-compatible REST and gRPC server for (rewritten) SavedModels."""

import graphopt.ops  # noqa: F401  (registers the GraphoptEv* ops that served models may use)
from graphopt.serve.repository import ModelRepository, ServableVersion, load_version
from graphopt.serve.server import ModelServer, demo_prediction, one_prediction, serve_until_signal

__all__ = [
    "ModelRepository",
    "ModelServer",
    "demo_prediction",
    "ServableVersion",
    "load_version",
    "one_prediction",
    "serve_until_signal",
]
