"""Sharded tables on real loopback clusters: separate processes, tf.distribute.Server over gRPC.

Each test runs a coordinator/chief program (tests/distribute/programs.py) in its own process
group; the program starts 2 PS and 1-2 workers in that group, so killing the group at the end
stops every process the test started, also when it fails or times out.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.timeout(400)


def run_program(mode, outdir, timeout=240):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.distribute.programs", mode, str(outdir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the program and every task it started
        except ProcessLookupError:
            pass
        process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    with open(os.path.join(outdir, f"{mode}.json")) as f:
        result = json.load(f)
    return result, dict(np.load(os.path.join(outdir, f"{mode}.npz")))


def test_parameter_server_strategy_equals_single_table_and_ps_failure_resumes(tmp_path):
    result, arrays = run_program("pss", tmp_path)
    # Every step (lookup with insertion, Adagrad apply on the PS shards) equals one local table.
    assert result["equal_steps"] == [True] * 6
    np.testing.assert_array_equal(arrays["lookup"], arrays["reference_lookup"])
    assert not arrays["first_rows"].any()
    assert result["shard_devices"] == [f"/job:ps/replica:0/task:{i}/device:CPU:0" for i in range(2)]
    assert min(result["shard_sizes"]) > 0
    # A dead PS fails the step loudly ...
    assert result["ps_failure"] and result["ps_failure"].startswith("UnavailableError"), result
    # ... and a fresh cluster resumes from the last checkpoint with everything in it.
    resumed, restored = run_program("pss-resume", tmp_path)
    for name in ("keys", "values", "freqs", "versions", "slot-accumulator"):
        np.testing.assert_array_equal(restored[f"restored_{name}"], arrays[f"ckpt_{name}"], err_msg=name)
        np.testing.assert_array_equal(restored[f"parts_{name}"], arrays[f"ckpt_{name}"], err_msg=name)
    assert resumed["size_after_step"] > len(arrays["ckpt_keys"])  # it trains on


@pytest.mark.slow
def test_worker_killed_mid_training_recovers_without_losing_rows(tmp_path):
    result, _ = run_program("pss-kill-worker", tmp_path)
    assert result["losses_fetched"] == result["steps"] == 12
    assert result["all_keys_held"], result
    assert result["keys_held"] == result["keys_expected"]


@pytest.mark.slow
def test_tf1_replica_device_setter_monitored_session_equals_single_table(tmp_path):
    result, _ = run_program("tf1", tmp_path)
    assert result["devices"] == [f"/job:ps/replica:0/task:{i}/device:CPU:0" for i in range(2)]
    assert result["equal"]
    assert result["checkpoint"].endswith("model.ckpt-6")
    import tensorflow as tf

    names = dict(tf.train.list_variables(result["checkpoint"]))
    assert names["emb-keys"][0] > 0 and "emb-slot-accumulator" in names
