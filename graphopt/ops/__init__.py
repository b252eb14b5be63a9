"""The EmbeddingVariable ops: loading the kernel library once, and the Python API."""

from graphopt.ops import fallback, optimizers
from graphopt.ops.embedding_variable import EmbeddingVariable
from graphopt.ops.library import load_library

load_library()  # importing graphopt.ops registers the ops

__all__ = ["EmbeddingVariable", "fallback", "load_library", "optimizers"]
