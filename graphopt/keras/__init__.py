"""Keras 3 training of dynamic tables: the DynamicEmbedding layer and the Embedding converter."""

from graphopt.keras.convert import ConversionReport, convert, convert_file
from graphopt.keras.layer import DynamicEmbedding, compressed_tables

__all__ = [
    "ConversionReport",
    "DynamicEmbedding",
    "compressed_tables",
    "convert",
    "convert_file",
]
