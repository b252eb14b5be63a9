"""Checkpoints: the tensor bundle index codec (``bundle``) and table conversion (``convert``)."""

from graphopt.checkpoint.conversion import (
    OBJECT_GRAPH_KEY,
    TableConversion,
    TensorInfo,
    checkpoint_tensors,
    convert_checkpoint,
    copy_checkpoint,
)

__all__ = [
    "OBJECT_GRAPH_KEY",
    "TableConversion",
    "TensorInfo",
    "checkpoint_tensors",
    "convert_checkpoint",
    "copy_checkpoint",
]
