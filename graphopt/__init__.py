"""graphopt: rewrite trained TensorFlow recommendation models onto dynamic-hash EmbeddingVariables."""

from graphopt.errors import GraphoptError

__version__ = "0.1.0"

__all__ = ["GraphoptError", "__version__"]
