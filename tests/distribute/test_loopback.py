"""The loopback cluster launcher stops every task it started: on exit, on error, and when the
process that started the tasks is killed."""

import os
import subprocess
import sys
import time

import pytest

from graphopt.distribute.loopback import LoopbackCluster


def _gone(pid, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:  # a zombie (not reaped yet) is gone too
                if f.read().split()[2] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.2)
    return False


def test_tasks_stop_on_error():
    with (
        pytest.raises(RuntimeError, match="boom"),
        LoopbackCluster(num_ps=1, num_workers=1, chief=False) as cluster,
    ):
        pids = [p.pid for p in cluster.processes.values()]
        assert len(pids) == 2 and all(not _gone(pid, 0.5) for pid in pids)
        raise RuntimeError("boom")
    assert all(_gone(pid) for pid in pids)


@pytest.mark.slow
def test_tasks_die_with_a_killed_owner():
    owner = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\nfrom graphopt.distribute.loopback import LoopbackCluster\n"
            "c = LoopbackCluster(num_ps=1, num_workers=0, chief=False).start()\n"
            "print(*[p.pid for p in c.processes.values()], flush=True)\nos.kill(os.getpid(), 9)\n",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert owner.returncode == -9
    (pid,) = map(int, owner.stdout.split())
    assert _gone(pid)
