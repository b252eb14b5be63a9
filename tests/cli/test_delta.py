"""graphopt delta: a training checkpoint's changes since a step, as the next delta of a served version."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from graphopt.errors import GraphoptError
from graphopt.online import read_delta
from graphopt.online.delta_format import model_fingerprint
from tests.online.online_models import DIM, save_row_model, train_rows, training_table


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "graphopt", "delta", *args], capture_output=True, text=True, timeout=300
    )


def test_delta_from_a_training_checkpoint(tmp_path):
    version = save_row_model(tmp_path / "base" / "1")
    ev = training_table(step=0)
    train_rows(ev, [3, 77], step=5, value=2)
    ev.remove(tf.constant([8], tf.int64))
    prefix = tf.train.Checkpoint(table=ev).save(str(tmp_path / "train" / "ckpt"))
    done = run(prefix, "--since", "0", "-o", version, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sequence"] == 1 and report["tables"][0]["upserts"] == 2
    (table,) = read_delta(report["delta"], 1, model_fingerprint(version), {"table": DIM}).tables
    assert sorted(table.keys.tolist()) == [3, 77] and table.removed_keys.tolist() == [8]
    assert (np.asarray(table.values) == 2).all()
    again = run(str(tmp_path / "train"), "--since", "5", "-o", version)  # a checkpoint directory too
    assert again.returncode == 0 and "nothing changed after step 5" in again.stdout
    mapped = run(prefix, "--since", "4", "-o", version, "--table", "table=table")
    assert mapped.returncode == 0 and "wrote delta 2 of version 1" in mapped.stdout, mapped.stderr


def test_bad_arguments_are_one_line_errors(tmp_path):
    version = save_row_model(tmp_path / "base" / "1")
    other = tf.Module()
    other.emb = training_table(step=0)
    prefix = tf.train.Checkpoint(emb=other.emb).write(str(tmp_path / "ckpt"))
    cases = [
        ((prefix, "--since", "0", "-o", version), "table emb of"),
        ((prefix, "--since", "0", "-o", version, "--table", "emb"), "must be SOURCE=SERVED"),
        ((prefix, "--since", "0", "-o", version, "--table", "x=table"), "--table names x"),
        ((version, "--since", "0", "-o", str(tmp_path)), "holds no saved_model.pb"),
        ((str(tmp_path / "nope"), "--since", "0", "-o", version), "is not a checkpoint"),
        ((prefix, "--since", "-5", "-o", version, "--table", "emb=table"), "-5 is not in the range x>=0"),
    ]
    for args, message in cases:
        done = run(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not os.path.exists(os.path.join(version, "deltas", "1"))
    np.testing.assert_array_equal(
        run(prefix, "--since", "0", "-o", version, "--table", "emb=table").returncode, 0
    )


def test_a_stock_version_refuses_deltas_and_says_to_serve_the_ev_rewrite(tmp_path):
    from graphopt.online.writer import DeltaWriter
    from graphopt.rewrite import rewrite_model
    from tests.rewrite import cases

    original = cases.tf1_builder(str(tmp_path / "m")).path
    stock = str(tmp_path / "base" / "1")
    rewrite_model(original, stock, target="stock")
    ev = training_table(step=0)
    train_rows(ev, [3], step=5, value=2)
    prefix = tf.train.Checkpoint(table=ev).save(str(tmp_path / "train" / "ckpt"))
    done = run(prefix, "--since", "0", "-o", stock)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "stock versions cannot take deltas" in done.stderr and "--target ev" in done.stderr
    with pytest.raises(GraphoptError, match="stock versions cannot take deltas"):
        DeltaWriter(stock, {"table": ev})
    assert not os.path.exists(os.path.join(stock, "deltas"))
