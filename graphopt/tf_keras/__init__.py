"""tf_keras training of dynamic tables: DynamicEmbedding, the layer a rewritten tf_keras
SavedModel's Embeddings are revived as by ``tf_keras.models.load_model`` (docs/training.md)."""

from graphopt.tf_keras.layer import DynamicEmbedding
from graphopt.tf_keras.saved_tables import SavedTables

__all__ = ["DynamicEmbedding", "SavedTables"]
