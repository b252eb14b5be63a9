"""graphopt: rewrite trained TensorFlow recommendation models onto dynamic-hash EmbeddingVariables.

For library users ``import graphopt`` loads TensorFlow and registers the ``GraphoptEv*`` ops, so a
rewritten model loads right after it. The ``graphopt`` command skips that at import time and
loads TensorFlow only when a command runs, so ``graphopt --help`` and ``--version`` answer at
once and work even when the op library is missing or stale.
"""

import os
import sys

from graphopt.errors import GraphoptError, OpLibraryError
from graphopt.version import __version__

__all__ = ["EmbeddingVariable", "GraphoptError", "OpLibraryError", "ShardedEmbeddingVariable", "__version__"]


def __getattr__(name):
    if name == "EmbeddingVariable":
        # Imports TensorFlow and loads the op library (OpLibraryError if it is missing or was
        # built for another TensorFlow).
        from graphopt._tensorflow import import_tensorflow_quietly

        import_tensorflow_quietly()
        from graphopt.ops import EmbeddingVariable

        globals()["EmbeddingVariable"] = EmbeddingVariable
        return EmbeddingVariable
    if name == "ShardedEmbeddingVariable":
        __getattr__("EmbeddingVariable")
        from graphopt.distribute import ShardedEmbeddingVariable

        globals()["ShardedEmbeddingVariable"] = ShardedEmbeddingVariable
        return ShardedEmbeddingVariable
    raise AttributeError(f"module 'graphopt' has no attribute {name!r}")


def _invoked_as_cli():
    # `graphopt ...` (console script) or `python -m graphopt` (argv[0] is "-m" while the package
    # that -m names is being imported).
    argv0 = sys.argv[0] if sys.argv else ""
    return os.path.basename(argv0) == "graphopt" or argv0 == "-m"


if not _invoked_as_cli():
    __getattr__("EmbeddingVariable")
    # Registers graphopt.keras.DynamicEmbedding with Keras, so keras.saving.load_model reads a
    # converted .keras file right after `import graphopt` (Keras is already loaded by then).
    import graphopt.keras  # noqa: E402, F401
