"""Embedding tables sharded across TensorFlow parameter servers (tf.distribute / TF1 clusters)."""

from graphopt.distribute.rewritten import sharded_tables
from graphopt.distribute.sharded import ShardedEmbeddingVariable, fmix64, ps_devices, shard_of

__all__ = ["ShardedEmbeddingVariable", "fmix64", "ps_devices", "shard_of", "sharded_tables"]
