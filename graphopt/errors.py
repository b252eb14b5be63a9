"""The one root exception of graphopt: every user-facing failure is a GraphoptError."""


class GraphoptError(Exception):
    """A failure the user can fix; the message says what is wrong and what to do."""

    exit_code = 2


class DataError(GraphoptError):
    """Input data (a samples CSV, an .npz) is missing or malformed."""


class ModelError(GraphoptError):
    """A model directory, SavedModel or checkpoint cannot be read or is not what was expected."""


class OutputExistsError(GraphoptError):
    """An output path exists and --overwrite was not given."""


class OpLibraryError(GraphoptError):
    """The compiled op library is missing or was built for another TensorFlow."""


class OutputError(GraphoptError):
    """An output path cannot be created (its parent is a file, or not writable)."""


class ArgumentError(GraphoptError):
    """A command-line value is refused (a bad regex, a count out of range)."""
