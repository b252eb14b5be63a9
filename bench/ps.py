"""Parameter-server benchmark: a ShardedEmbeddingVariable on a loopback cluster, 1 PS vs 2 PS.

This process is the ParameterServerStrategy coordinator; it starts its own cluster (2 PS tasks,
1 worker, each a separate `tf.distribute.Server` process on 127.0.0.1) and stops it at the end.
Side by side on that one cluster: a table with its 1 shard on PS 0, and a table with 2 shards on
PS 0 and PS 1. Each scheduled closure runs `--unroll` lookups (or train steps: find-or-insert,
gradient, Adagrad apply on the PS) of `--batch` ids on the worker; we report the median ids/s
of several repetitions, and the bytes sent and received on the PS tasks' TCP connections
(tcp_info through `ss`: their gRPC traffic both ways) per id against the row size. Equality: the 2-shard
table against one local EmbeddingVariable, same steps.

This machine has 2 cores shared by every process here: the 1-vs-2 PS figures are a sanity
check, not a scaling claim.

    .venv/bin/python bench/ps.py --quick      # < 3 minutes
    .venv/bin/python bench/ps.py              # bigger batches, more repetitions
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import graphopt  # noqa: E402
from graphopt.distribute import ShardedEmbeddingVariable, ps_devices, shard_of  # noqa: E402
from graphopt.distribute.loopback import LoopbackCluster  # noqa: E402


def socket_bytes(pids) -> int:
    """Bytes sent + received so far on every established TCP connection of the processes
    ``pids`` (tcp_info through `ss`): a PS task's gRPC traffic both ways, whichever side opened
    the connection (TF's RecvTensor is pulled by the receiving task)."""
    out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True, text=True, check=True)
    wanted = {f"pid={pid}," for pid in pids}
    total, owned = 0, False
    for line in out.stdout.splitlines():
        if not line[:1].isspace():  # a socket's line; its tcp_info follows on an indented line
            owned = any(w in line for w in wanted)
            continue
        if owned:
            for field in line.split():
                if field.startswith(("bytes_sent:", "bytes_received:")):
                    total += int(field.split(":")[1])
    return total


def loss_of(rows, dim):
    return tf.reduce_sum(rows * rows * tf.range(1, dim + 1, dtype=tf.float32))


def closures(strategy, table, dim, unroll):
    @tf.function
    def lookup(ids):  # ids [unroll, batch]
        return strategy.run(
            lambda x: tf.add_n([tf.reduce_sum(table.lookup(x[i])) for i in range(unroll)]), args=(ids,)
        )

    def train_steps(ids, step):
        losses = []
        for i in range(unroll):
            with tf.GradientTape() as tape:
                tape.watch(table.handles)
                loss = loss_of(table.lookup(ids[i], insert_missing=True, step=step), dim)
            with tf.control_dependencies(
                [table.apply_gradients(tape.gradient(loss, table.handles), step=step)]
            ):
                losses.append(tf.identity(loss))
        return tf.add_n(losses)

    @tf.function
    def train(ids, step):
        return strategy.run(train_steps, args=(ids, step))

    return lookup, train


def measure(coordinator, fn, args, ids_per_closure, closures_per_rep, reps, ps_pids):
    rates, traffic = [], []
    coordinator.schedule(fn, args=args)  # warm-up: tracing, first inserts
    coordinator.join()
    for _ in range(reps):
        before, start = socket_bytes(ps_pids), time.perf_counter()
        for _ in range(closures_per_rep):
            coordinator.schedule(fn, args=args)
        coordinator.join()
        seconds = time.perf_counter() - start
        rates.append(ids_per_closure * closures_per_rep / seconds)
        traffic.append((socket_bytes(ps_pids) - before) / (ids_per_closure * closures_per_rep))
    return statistics.median(rates), statistics.median(traffic)


def equality(strategy, coordinator, dim, batch, steps=3):
    """(lookup equal, train step equal): 2 shards on 2 PS against one local table."""
    with strategy.scope():
        sharded = ShardedEmbeddingVariable(dim, devices=ps_devices(2), optimizer="adagrad", seed=5)
    with tf.device("/job:chief/replica:0/task:0/device:CPU:0"):
        single = graphopt.EmbeddingVariable(dim, optimizer="adagrad", seed=5)
    _, train = closures(strategy, sharded, dim, 1)
    rng = np.random.default_rng(1)
    train_equal = True
    for step in range(1, steps + 1):
        ids = rng.integers(0, 100_000, size=(1, batch)).astype(np.int64)
        coordinator.schedule(train, args=(tf.constant(ids), tf.constant(step, tf.int64)))
        coordinator.join()
        with tf.GradientTape() as tape:
            tape.watch(single.handle)
            loss = loss_of(single.lookup(ids[0], insert_missing=True, step=step), dim)
        single.apply_gradients(tape.gradient(loss, single.handle), step=step)
        a, b = sharded.export(), single.export()
        oa, ob = np.argsort(a[0].numpy()), np.argsort(b[0].numpy())
        train_equal &= all(np.array_equal(x.numpy()[oa], y.numpy()[ob]) for x, y in zip(a, b, strict=True))
    probe = rng.integers(0, 100_000, size=batch).astype(np.int64)
    lookup_equal = np.array_equal(sharded.lookup(probe).numpy(), single.lookup(probe).numpy())
    return lookup_equal, train_equal


def max_shard_load(num_shards=2):
    worst = 0.0
    rng = np.random.default_rng(0)
    for keys in (rng.integers(-(2**63), 2**63 - 1, size=1_000_000, dtype=np.int64), np.arange(1_000_000)):
        counts = np.bincount(shard_of(tf.constant(keys), num_shards).numpy(), minlength=num_shards)
        worst = max(worst, counts.max() / counts.mean())
    return worst


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="B = 4,096, 3 repetitions (< 3 min)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=1_000_000)
    parser.add_argument("--unroll", type=int, default=4, help="lookups or train steps per closure")
    args = parser.parse_args()
    batch, reps, per_rep = (4096, 5, 4) if args.quick else (16384, 7, 8)
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    cluster = LoopbackCluster(num_ps=2, num_workers=1)
    try:
        cluster.start()
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster.spec), task_type="chief", task_id=0, rpc_layer="grpc"
        )
        strategy = tf.distribute.experimental.ParameterServerStrategy(resolver)
        coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
        ps_pids = [cluster.processes[("ps", i)].pid for i in range(2)]
        print(
            f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs (shared), loopback gRPC, D={args.dim}, "
            f"B={batch:,}, {args.unroll} batches per closure, {per_rep} closures per repetition, "
            f"median of {reps}; row = {4 * args.dim} B"
        )
        ids = np.random.default_rng(0).integers(0, args.vocab, size=(args.unroll, batch)).astype(np.int64)
        ids_per_closure = ids.size
        results = {}
        for num_ps in (1, 2):
            with strategy.scope():
                table = ShardedEmbeddingVariable(
                    args.dim, devices=ps_devices(num_ps), optimizer="adagrad", seed=3
                )
            lookup, train = closures(strategy, table, args.dim, args.unroll)
            step = tf.constant(1, tf.int64)
            train_rate, train_bytes = measure(
                coordinator, train, (tf.constant(ids), step), ids_per_closure, per_rep, reps, ps_pids
            )
            lookup_rate, lookup_bytes = measure(
                coordinator, lookup, (tf.constant(ids),), ids_per_closure, per_rep, reps, ps_pids
            )
            results[num_ps] = (lookup_rate, train_rate)
            print(
                f"  {num_ps} PS: lookup {lookup_rate / 1e6:6.2f} M ids/s, {lookup_bytes:6.1f} B/id at the PS "
                f"({lookup_bytes / (4 * args.dim):.2f}x row); train step {train_rate / 1e6:6.2f} M ids/s, "
                f"{train_bytes:6.1f} B/id ({train_bytes / (4 * args.dim):.2f}x row)"
            )
        print(
            f"  2 PS / 1 PS: lookup {results[2][0] / results[1][0]:.2f}x, "
            f"train {results[2][1] / results[1][1]:.2f}x"
        )
        lookup_equal, train_equal = equality(strategy, coordinator, args.dim, 1024)
        load = max_shard_load()
    finally:
        cluster.stop()
    yes = {True: "yes", False: "no"}
    print(
        f"sharded/single lookup equal: {yes[bool(lookup_equal)]} | "
        f"train step equal: {yes[bool(train_equal)]} "
        f"| max shard load / mean: {load:.4f}",
        flush=True,
    )
    os._exit(0)  # the coordinator's threads would keep the process alive


if __name__ == "__main__":
    main()
