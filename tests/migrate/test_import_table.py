"""``graphopt import-table``: HugeCTR key/emb_vector files and HKV/TFRA key-value dumps into a
rewritten model's EmbeddingVariable, written as a new model that serves the dump's rows."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from graphopt.cli import main
from graphopt.validate.reference import MetaGraphModel

TABLE = "user_emb/user_emb_mht_1of1"


def _dump(tmp_path, kind, keys, values):
    d = tmp_path / kind
    d.mkdir()
    if kind == "hugectr":
        keys.astype("<i8").tofile(d / "key")
        values.astype("<f4").tofile(d / "emb_vector")
        return [str(d)]
    if kind == "kv":
        keys.astype("<i8").tofile(d / "user_emb_mht_1of1_rank0_size1-keys")
        values.astype("<f4").tofile(d / "user_emb_mht_1of1_rank0_size1-values")
        return [
            str(d / "user_emb_mht_1of1_rank0_size1-keys"),
            str(d / "user_emb_mht_1of1_rank0_size1-values"),
        ]
    np.savez(d / "t.npz", keys=keys, values=values)
    return [str(d / "t.npz")]


@pytest.mark.parametrize("kind", ["hugectr", "kv", "npz"])
def test_dump_serves_in_the_rewritten_model(migrated, tmp_path, kind):
    out, _ = migrated("tf1_sparse")
    keys = np.array([5, 1 << 50, 42], np.int64)
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    dst = str(tmp_path / "imported")
    before = sorted(os.listdir(out))
    result = CliRunner().invoke(
        main,
        [
            "import-table",
            os.path.join(out, "model.meta"),
            *_dump(tmp_path, kind, keys, values),
            "--table",
            TABLE,
            "-o",
            dst,
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == 3 and sorted(os.listdir(out)) == before
    model = MetaGraphModel(os.path.join(dst, "model.meta"))
    try:
        n = 4
        feeds = {
            "ids_values": np.array([5, 42, 1 << 50, 7], np.int64),
            "ids_indices": np.array([[i, 0] for i in range(n)], np.int64),
            "ids_dense_shape": np.array([n, 1], np.int64),
        }
        got = model.run("serving_default", feeds)["emb"]
    finally:
        model.close()
    assert np.array_equal(got[:3], values[[0, 2, 1]]) and not got[3].any()  # 7 is not in the dump
