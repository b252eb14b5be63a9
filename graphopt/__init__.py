"""graphopt: rewrite trained TensorFlow recommendation models onto dynamic-hash EmbeddingVariables."""

import os

from graphopt.errors import GraphoptError
from graphopt.startup import import_tensorflow_quietly

# Loading the op library imports TensorFlow; its start-up lines would reach every CLI user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import_tensorflow_quietly()

# Loads the op library (OpLibraryError if it is missing or built for another TensorFlow).
from graphopt.ops import EmbeddingVariable  # noqa: E402

__version__ = "0.1.0"

__all__ = ["EmbeddingVariable", "GraphoptError", "__version__"]
