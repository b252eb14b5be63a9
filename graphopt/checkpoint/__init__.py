"""Checkpoints: the tensor bundle index codec (``bundle``), reading a checkpoint (``index``) and
table conversion (``conversion``)."""

from graphopt.checkpoint.conversion import TableConversion, convert_checkpoint, copy_checkpoint
from graphopt.checkpoint.index import OBJECT_GRAPH_KEY, TensorInfo, check_files, checkpoint_tensors

__all__ = [
    "OBJECT_GRAPH_KEY",
    "TableConversion",
    "TensorInfo",
    "check_files",
    "checkpoint_tensors",
    "convert_checkpoint",
    "copy_checkpoint",
]
