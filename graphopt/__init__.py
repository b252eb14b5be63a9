"""graphopt: rewrite trained TensorFlow recommendation models onto dynamic-hash EmbeddingVariables."""

import os
import sys

from graphopt._tensorflow import import_tensorflow_quietly
from graphopt.errors import GraphoptError, OpLibraryError

import_tensorflow_quietly()


def _invoked_as_cli():
    # `graphopt ...` (console script) or `python -m graphopt` (argv[0] is "-m" while importing).
    return os.path.basename(sys.argv[0]) == "graphopt" or sys.argv[0] == "-m"


# Loads the op library (OpLibraryError if it is missing or built for another TensorFlow). The
# CLI's error handler does not exist yet at this point, so the CLI's one-line error is given here.
try:
    from graphopt.ops import EmbeddingVariable
except OpLibraryError as exc:
    if not _invoked_as_cli():
        raise
    sys.stderr.write(f"graphopt: error: {exc}\n")
    sys.exit(exc.exit_code)

__version__ = "0.1.0"

__all__ = ["EmbeddingVariable", "GraphoptError", "__version__"]
