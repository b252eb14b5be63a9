"""Online updates: deltas of EmbeddingVariables (and dense variables) written while training,
applied live by serving.

``export_model`` exports a Keras model with its tables named for deltas; ``DeltaWriter`` and
``DeltaCallback`` (Keras) write them; ``graphopt serve`` applies them; the
format is ``graphopt.online.delta_format`` (docs/online.md).
"""

from graphopt.online.delta_format import Delta, DeltaError, DenseDelta, TableDelta, read_delta, write_delta
from graphopt.online.export import export_model
from graphopt.online.writer import DeltaWriter

__all__ = [
    "Delta",
    "DeltaCallback",
    "DeltaError",
    "DeltaWriter",
    "DenseDelta",
    "TableDelta",
    "export_model",
    "read_delta",
    "write_delta",
]


def __getattr__(name):
    if name == "DeltaCallback":  # imports Keras: only when asked for
        from graphopt.online.keras_callback import DeltaCallback

        return DeltaCallback
    raise AttributeError(f"module 'graphopt.online' has no attribute {name!r}")
