"""graphopt: rewrite trained TensorFlow recommendation models onto dynamic-hash EmbeddingVariables."""

from graphopt.errors import GraphoptError
# Loads the op library (OpLibraryError if it is missing or built for another TensorFlow).
from graphopt.ops import EmbeddingVariable

__version__ = "0.1.0"

__all__ = ["EmbeddingVariable", "GraphoptError", "__version__"]
