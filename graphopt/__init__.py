"""graphopt: rewrite trained TensorFlow recommendation models onto dynamic-hash EmbeddingVariables.

Importing graphopt is cheap: TensorFlow and the op library load when something needs them
(``graphopt.EmbeddingVariable``, a command that runs), so ``graphopt --help`` and ``--version``
answer at once and work even when the op library is missing or stale.
"""

from graphopt.errors import GraphoptError, OpLibraryError

__version__ = "0.1.0"

__all__ = ["EmbeddingVariable", "GraphoptError", "OpLibraryError", "__version__"]


def __getattr__(name):
    if name == "EmbeddingVariable":
        # Imports TensorFlow and loads the op library (OpLibraryError if it is missing or was
        # built for another TensorFlow).
        from graphopt._tensorflow import import_tensorflow_quietly

        import_tensorflow_quietly()
        from graphopt.ops import EmbeddingVariable

        globals()["EmbeddingVariable"] = EmbeddingVariable
        return EmbeddingVariable
    raise AttributeError(f"module 'graphopt' has no attribute {name!r}")
