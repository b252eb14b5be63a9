"""A TensorFlow cluster of separate processes on 127.0.0.1 (tests, benchmarks, demos).

Every task is ``python -m graphopt.distribute.loopback JOB TASK CLUSTER_JSON``: a
``tf.distribute.Server`` over gRPC with the op library loaded (a PS must know the
EmbeddingVariable kernels to hold tables). Each task runs in its own process group, so stopping it
also stops anything it started; ``LoopbackCluster`` stops every task on exit, also on error,
and a task dies with the process that started it.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time


def free_ports(count: int) -> list:
    """Ports free on 127.0.0.1 now (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LoopbackCluster:
    """``num_ps`` PS tasks and ``num_workers`` worker tasks as subprocesses; ``chief`` adds a
    chief/coordinator address (the caller's own process or a subprocess serves it)."""

    def __init__(self, num_ps=2, num_workers=1, chief=True, own_groups=True):
        # own_groups=False keeps the tasks in the caller's process group, so whoever kills that
        # group (a test fixture killing a coordinator subprocess) stops them too.
        self.own_groups = own_groups
        ports = iter(free_ports(num_ps + num_workers + int(chief)))
        self.spec = {
            "ps": [f"127.0.0.1:{next(ports)}" for _ in range(num_ps)],
            "worker": [f"127.0.0.1:{next(ports)}" for _ in range(num_workers)],
        }
        if chief:
            self.spec["chief"] = [f"127.0.0.1:{next(ports)}"]
        self.processes: dict = {}

    def start_task(self, job: str, task: int):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        self.processes[(job, task)] = subprocess.Popen(
            [sys.executable, "-m", "graphopt.distribute.loopback", job, str(task), json.dumps(self.spec)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=self.own_groups,
            preexec_fn=_die_with_parent,
        )

    def start(self):
        for job in ("ps", "worker"):
            for task in range(len(self.spec[job])):
                self.start_task(job, task)
        self.wait_listening()
        return self

    def wait_listening(self, timeout=60.0):
        """Waits until every started task accepts connections on its port."""
        deadline = time.monotonic() + timeout
        for (job, task), process in self.processes.items():
            host, port = self.spec[job][task].rsplit(":", 1)
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{job}:{task} exited with {process.returncode}")
                try:
                    socket.create_connection((host, int(port)), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{job}:{task} did not listen within {timeout}s") from None
                    time.sleep(0.2)

    def kill(self, job: str, task: int):
        """SIGKILLs one task's process group (a crashed machine: no clean shutdown)."""
        _kill(self.processes.pop((job, task)), self.own_groups)

    def stop(self):
        for key in list(self.processes):
            _kill(self.processes.pop(key), self.own_groups)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _die_with_parent():
    """In the task, before exec: SIGKILL it when the process that started it dies (even by
    SIGKILL), so no task outlives its cluster's owner (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _kill(process, group: bool):
    try:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def _serve(job: str, task: int, spec: dict):
    import tensorflow as tf

    from graphopt.ops.library import load_library

    load_library()  # the EmbeddingVariable kernels, for the tables this task holds

    server = tf.distribute.Server(
        tf.train.ClusterSpec(spec), job_name=job, task_index=task, protocol="grpc", start=True
    )
    server.join()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))
