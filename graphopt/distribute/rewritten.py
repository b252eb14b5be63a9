"""Sharded tables for PS training from a model ``graphopt rewrite`` wrote.

The rewrite's output stores each table as one logical EmbeddingVariable table (checkpoint key
``K``: ``K-keys/-values/-freqs/-versions``, rows keyed by global id, a TF1 partitioned variable's
parts joined into one table by their global ids). That is the layout a ShardedEmbeddingVariable
saves and restores, so PS training needs no second conversion: ``sharded_tables`` reads the
output's manifest, creates one ShardedEmbeddingVariable per table (under the caller's
``strategy.scope()`` or TF1 graph) and restores it, every key re-routed by hash to its shard.
"""

import json
import os

import tensorflow as tf

from graphopt.distribute.sharded import ShardedEmbeddingVariable, ps_devices
from graphopt.errors import GraphoptError
from graphopt.ev import contract


def rewritten_checkpoint(model_dir: str) -> str:
    """The checkpoint prefix of a rewrite's output: a SavedModel's variables or a TF1 checkpoint."""
    saved_model = os.path.join(model_dir, "variables", "variables")
    if os.path.exists(saved_model + ".index"):
        return saved_model
    latest = tf.train.latest_checkpoint(model_dir)
    if latest:
        return latest
    raise GraphoptError(
        f"{model_dir} holds no checkpoint (variables/variables or a TF1 checkpoint); "
        "pass the directory `graphopt rewrite -o` wrote"
    )


def sharded_tables(model_dir: str, num_shards=None, devices=None, **kwargs) -> dict:
    """{table name: ShardedEmbeddingVariable} for every table the rewrite converted, each split
    over ``num_shards`` PS tasks (or ``devices``) and restored from the output's checkpoint.
    ``kwargs`` go to every table (``optimizer``, ``seed``, ``min_count``, ...)."""
    path = os.path.join(model_dir, contract.MANIFEST)
    if not os.path.exists(path):
        raise GraphoptError(
            f"{model_dir} has no {contract.MANIFEST}; pass the directory `graphopt rewrite -o` wrote"
        )
    with open(path) as f:
        tables = json.load(f)["tables"]
    checkpoint = rewritten_checkpoint(model_dir)
    if devices is None:
        devices = ps_devices(num_shards or 1)
    result = {}
    for table in tables:
        name = table["name"].replace("/", "_").replace(":", "_")
        sharded = ShardedEmbeddingVariable(int(table["shape"][1]), devices=devices, name=name, **kwargs)
        sharded.restore_from(checkpoint, table["checkpoint_key"])
        result[table["name"]] = sharded
    return result
