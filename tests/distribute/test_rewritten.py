"""A rewritten course model's tables, sharded for PS training (the `--shards` equivalent)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import graphopt
from graphopt.distribute import sharded_tables
from graphopt.distribute.rewritten import rewritten_checkpoint
from graphopt.errors import GraphoptError
from graphopt.rewrite import rewrite_model


@pytest.mark.slow
@pytest.mark.parametrize("form", ["keras", "tf1"])
def test_rewritten_model_tables_restore_sharded(course_models, tmp_path, form):
    src, _ = course_models(form)
    out = str(tmp_path / "out")
    rewrite_model(src, out)
    with open(os.path.join(out, "graphopt_manifest.json")) as f:
        manifest = json.load(f)["tables"]
    assert manifest
    tables = sharded_tables(out, devices=["/cpu:0"] * 3, seed=1)
    checkpoint = rewritten_checkpoint(out)
    source = tf.train.load_checkpoint(os.path.join(src, "variables", "variables"))
    compared = 0
    for entry in manifest:
        rows, dim = entry["shape"]
        table = tables[entry["name"]]
        assert table.num_shards == 3 and int(table.size()) == rows
        assert min(table.shard_sizes().numpy()) > 0
        single = graphopt.EmbeddingVariable(dim, seed=1)
        single.restore_from(checkpoint, entry["checkpoint_key"])
        ids = np.arange(-2, rows + 2)
        np.testing.assert_array_equal(table.lookup(ids).numpy(), single.lookup(ids).numpy())
        if entry["partitions"] == 1 and source.has_tensor(entry["checkpoint_key"]):
            dense = source.get_tensor(entry["checkpoint_key"])
            np.testing.assert_array_equal(table.lookup(np.arange(rows)).numpy(), dense)
            compared += 1
    assert compared  # the trained dense rows themselves, not only the converted tensors


def test_not_a_rewrite_output(tmp_path):
    with pytest.raises(GraphoptError, match="graphopt_manifest.json"):
        sharded_tables(str(tmp_path), num_shards=2)
