"""Killing a run mid-way: SIGINT and SIGTERM clean up at once, SIGKILL's leftovers go with the next
run; the input is never touched, and the output is complete or absent.

The model is a tf.Module with a 2M x 32 float table (256 MB), so the rewrite is still copying and
converting when the signal lands: the signal is sent as soon as the stage folder appears.
"""

import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from graphopt.output import LOCK_FILE, remove_stale_stages, staged_output

GRAPHOPT = [sys.executable, "-m", "graphopt"]
ROWS, DIM = 2_000_000, 32


def tree_digest(root):
    """One hash over every file's relative path and bytes under ``root``."""
    digest = hashlib.sha256()
    for directory, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    import tensorflow as tf

    path = str(tmp_path_factory.mktemp("interrupt") / "big")
    module = tf.Module()
    values = np.random.default_rng(0).random((ROWS, DIM), dtype=np.float32)
    module.table = tf.Variable(values, name="table")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
    def serve(ids):
        return {"rows": tf.gather(module.table, ids)}

    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    return path, tree_digest(path)


def leftovers(parent, tmpdir):
    hidden = [p for p in os.listdir(parent) if ".partial-" in p]
    # TensorFlow's autograph imports the code it generates from the temporary directory, and
    # Python caches the bytecode beside it: that cache is Python's, not a file of the run.
    return hidden + [os.path.join(tmpdir, p) for p in os.listdir(tmpdir) if p != "__pycache__"]


def start(args, tmpdir):
    env = dict(os.environ, TMPDIR=str(tmpdir))  # where tempfile would put EV templates
    return subprocess.Popen(
        GRAPHOPT + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def signal_when_staged(proc, parent, sig, timeout=300):
    """Sends ``sig`` as soon as a stage folder appears in ``parent``; returns (stdout, stderr)."""
    deadline = time.monotonic() + timeout
    while not any(".partial-" in p for p in os.listdir(parent)):
        assert proc.poll() is None, "the run ended before its stage folder appeared: " + proc.stderr.read()
        assert time.monotonic() < deadline, "no stage folder appeared"
        time.sleep(0.005)
    proc.send_signal(sig)
    return proc.communicate(timeout=timeout)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 128 + 15), (signal.SIGINT, 1), (signal.SIGKILL, -9)])
def test_rewrite_killed_mid_run_leaves_nothing_after_the_next_run(big_model, tmp_path, sig, code):
    model, digest = big_model
    parent, tmpdir = tmp_path / "serving", tmp_path / "tmp"
    parent.mkdir()
    tmpdir.mkdir()
    out = parent / "1"
    proc = start(["rewrite", model, "-o", str(out)], tmpdir)
    _, stderr = signal_when_staged(proc, parent, sig)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert not out.exists(), "an interrupted run must not leave an output"
    if sig != signal.SIGKILL:
        assert leftovers(parent, tmpdir) == [], "SIGINT and SIGTERM must clean up at once"
    else:
        assert [p for p in os.listdir(parent) if ".partial-" in p], "SIGKILL landed after the run"

    again = start(["rewrite", model, "-o", str(out), "--json"], tmpdir)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    assert leftovers(parent, tmpdir) == [], "the next run must remove a killed run's stage"
    assert os.path.isfile(out / "saved_model.pb") and os.path.isfile(out / "graphopt_manifest.json")
    assert tree_digest(model) == digest, "the input must never change"


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 128 + 15), (signal.SIGKILL, -9)])
def test_build_model_killed_mid_training(tmp_path, sig, code):
    out, tmpdir = tmp_path / "model", tmp_path / "tmp"
    tmpdir.mkdir()
    proc = start(["build-model", str(out), "--form", "tf1", "--epochs", "50"], tmpdir)
    _, stderr = signal_when_staged(proc, tmp_path, sig)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and not out.exists()
    if sig == signal.SIGKILL:
        remove_stale_stages(str(tmp_path))  # what the next run in this folder does first
    assert leftovers(tmp_path, tmpdir) == []


def test_stale_stage_is_removed_and_a_live_runs_stage_kept(tmp_path):
    # A killed run's stage: its lock file exists and nobody holds it.
    dead = tmp_path / f".out.partial-{2**22 + 1}-abc"
    dead.mkdir()
    (dead / LOCK_FILE).touch()
    (dead / "output").mkdir()
    # A running run's stage (of another output: one into "out" would refuse this run, see
    # tests/test_output.py): locked, here by this process, under a pid that is alive.
    live = tmp_path / f".served.partial-{os.getpid()}-def"
    live.mkdir()
    held = os.open(live / LOCK_FILE, os.O_CREAT | os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    # A stage whose owner is between creating it and locking it: no lock file, owner alive.
    starting = tmp_path / f".other.partial-{os.getppid()}-ghi"
    starting.mkdir()
    # No lock file and its owner gone: killed in that same gap.
    orphan = tmp_path / ".other.partial-999999999-jkl"
    orphan.mkdir()
    # Not a stage at all.
    (tmp_path / ".cache.partial").mkdir()
    try:
        with staged_output(str(tmp_path / "out"), overwrite=False) as stage:
            os.makedirs(stage)
            assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".")) == sorted(
                [".cache.partial", live.name, starting.name, os.path.basename(os.path.dirname(stage))]
            )
    finally:
        os.close(held)
    assert (tmp_path / "out").is_dir()
    assert sorted(os.listdir(tmp_path)) == sorted([".cache.partial", live.name, starting.name, "out"])


def test_stage_holds_its_lock_until_done(tmp_path):
    with staged_output(str(tmp_path / "out")) as stage:
        lock = os.open(os.path.join(os.path.dirname(stage), LOCK_FILE), os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(lock)
        assert remove_stale_stages(str(tmp_path)) == []
        os.makedirs(stage)
    assert os.listdir(tmp_path) == ["out"]
