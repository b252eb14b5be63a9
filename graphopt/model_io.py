"""Reading a model from disk: its graph (``graphopt.graph.io``) and a first look at its checkpoint
(``graphopt.checkpoint``), so that a damaged model is refused before any work."""

from graphopt.checkpoint import check_files
from graphopt.graph.io import ModelSource, read_model_graph

__all__ = ["ModelSource", "read_model"]


def read_model(path, tags=None, check_integrity=True) -> ModelSource:
    """Reads a SavedModel directory, or a TF1 meta graph (.meta / .pbtxt) with its checkpoint.

    Refuses (ModelError) a damaged model: a graph file that does not parse, a checkpoint index
    that fails its block CRCs, data files shorter than the index says; with ``check_integrity``
    also saved_model.pb no longer matching the checksum its fingerprint.pb recorded at export,
    and a graph whose nodes read nodes that do not exist (a flipped bit in a name)."""
    source = read_model_graph(path, tags, check_integrity)
    if source.checkpoint_prefix is not None:
        check_files(source.checkpoint_prefix)
    return source
