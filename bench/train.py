"""Training benchmark: an EmbeddingVariable train step against a dense tf.Variable's.

A train step is lookup + backward + sparse optimizer update of the looked-up rows:
  EV:    find-or-insert -> loss -> IndexedSlices gradient -> GraphoptEvApply{Adagrad,Adam}
         (slots in the row, duplicates summed inside the op);
  dense: tf.gather on a [V, D] tf.Variable -> loss -> IndexedSlices gradient ->
         tf.unique + unsorted_segment_sum (what TF's optimizers do with duplicate ids) ->
         ResourceSparseApplyAdagradV2 (Adagrad), or lazy Adam as tf-addons' LazyAdam does it
         (gather m, v, var rows; update; scatter back: TF has no sparse Adam kernel).
Both run side by side in ONE process; each repetition is one tf.function looping over its
batches in-graph, repetitions interleave, medians in ns per id. The full run adds resident
memory per key (table + slots vs dense table + slot variables), find-or-insert with
admission on vs off, and evicting 10% of a 1M-key table.

    .venv/bin/python bench/train.py --quick   # Zipf 1.1, B = 65,536, Adagrad (< 3 min)
    .venv/bin/python bench/train.py           # both distributions, batches, optimizers
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lookup import row_chunks, zipf_ids  # noqa: E402

import graphopt  # noqa: E402
from graphopt.ops import optimizers  # noqa: E402

tf.get_logger().setLevel("ERROR")

LR, EPS, BETA_1, BETA_2, INIT_ACCUM = 0.01, 1e-7, 0.9, 0.999, 0.1


def _config(name):
    if name == "adagrad":
        return optimizers.Adagrad(LR, initial_accumulator_value=INIT_ACCUM, epsilon=EPS)
    return optimizers.Adam(LR, BETA_1, BETA_2, EPS)


def build_ev(optimizer, vocab, dim, chunk=65536):
    ev = graphopt.EmbeddingVariable(dim, optimizer=_config(optimizer), name="bench_ev")
    for keys, rows in row_chunks(vocab, dim, chunk):
        ev.insert(keys, rows)
    return ev


def build_dense(optimizer, vocab, dim, chunk=65536):
    var = tf.Variable(tf.zeros([vocab, dim]))
    for keys, rows in row_chunks(vocab, dim, chunk):
        var.scatter_update(tf.IndexedSlices(rows, keys))
    init = INIT_ACCUM if optimizer == "adagrad" else 0.0
    slots = [tf.Variable(tf.fill([vocab, dim], init)) for _ in range(1 if optimizer == "adagrad" else 2)]
    return var, slots


def _loss(rows):
    return 0.5 * tf.reduce_sum(rows * rows)  # d loss / d row = row: a real backward pass


def ev_step(ev, optimizer):
    def step(ids, t):
        with tf.GradientTape() as tape:
            tape.watch(ev.handle)
            loss = _loss(ev.lookup(ids, insert_missing=True, step=t))
        ev.apply_gradients(tape.gradient(loss, ev.handle), step=t)
        return loss

    return step


def dense_step(var, slots, optimizer):
    def step(ids, t):
        with tf.GradientTape() as tape:
            loss = _loss(tf.gather(var, ids))
        grad = tape.gradient(loss, var)
        unique, index = tf.unique(grad.indices)
        summed = tf.math.unsorted_segment_sum(grad.values, index, tf.shape(unique)[0])
        if optimizer == "adagrad":
            tf.raw_ops.ResourceSparseApplyAdagradV2(
                var=var.handle, accum=slots[0].handle, lr=LR, epsilon=EPS, grad=summed, indices=unique
            )
        else:
            tf_t = tf.cast(t, tf.float32)
            alpha = LR * tf.sqrt(1 - BETA_2**tf_t) / (1 - BETA_1**tf_t)
            m = tf.gather(slots[0], unique) * BETA_1 + summed * (1 - BETA_1)
            v = tf.gather(slots[1], unique) * BETA_2 + tf.square(summed) * (1 - BETA_2)
            slots[0].scatter_update(tf.IndexedSlices(m, unique))
            slots[1].scatter_update(tf.IndexedSlices(v, unique))
            var.scatter_sub(tf.IndexedSlices(alpha * m / (tf.sqrt(v) + EPS), unique))
        return loss

    return step


def timed_loop(step, batches):
    """A tf.function running step over every batch sequentially, in-graph."""
    count = batches.shape[0]

    @tf.function
    def run(first_step):
        def body(i, acc):
            return i + 1, acc + step(batches[i], first_step + tf.cast(i, tf.int64))

        return tf.while_loop(
            lambda i, _: i < count, body, (tf.constant(0), tf.constant(0.0)), parallel_iterations=1
        )[1]

    return run


def measure(runs, ids, reps):
    """Median ns/id per run, repetitions interleaved so machine load falls on all alike."""
    for run in runs.values():
        run(tf.constant(1, tf.int64)).numpy()  # trace and warm up
    times = {name: [] for name in runs}
    for rep in range(reps):
        for name, run in runs.items():
            start = time.perf_counter()
            run(tf.constant(1000 * (rep + 1), tf.int64)).numpy()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) / ids * 1e9 for name, t in times.items()}


def train_cells(args, dists, batches, opts):
    rng = np.random.default_rng(2026)
    streams = {
        f"zipf({args.zipf})": zipf_ids(rng, args.vocab, args.ids_per_rep, args.zipf),
        "uniform": rng.integers(0, args.vocab, args.ids_per_rep).astype(np.int64),
    }
    ratios = {}
    print(f"\n{'optimizer':<9} {'ids':<10} {'batch':>7} {'dense ns/id':>12} {'EV ns/id':>9} {'EV/dense':>9}")
    for optimizer in opts:
        ev = build_ev(optimizer, args.vocab, args.dim)
        var, slots = build_dense(optimizer, args.vocab, args.dim)
        for dist in dists:
            stream = streams[dist]
            for batch in batches:
                batched = tf.constant(stream[: stream.size // batch * batch].reshape(-1, batch))
                ids = int(batched.shape[0]) * batch
                row = measure(
                    {
                        "dense": timed_loop(dense_step(var, slots, optimizer), batched),
                        "EV": timed_loop(ev_step(ev, optimizer), batched),
                    },
                    ids,
                    args.reps,
                )
                ratios[(optimizer, dist, batch)] = row["EV"] / row["dense"]
                print(
                    f"{optimizer:<9} {dist:<10} {batch:>7} {row['dense']:12.1f} "
                    f"{row['EV']:9.1f} {row['EV'] / row['dense']:8.2f}x",
                    flush=True,
                )
        del ev, var, slots
    return ratios


def resident_bytes_of(kind, optimizer, vocab, dim):
    """Resident bytes a table with its slots adds, built in a fresh process."""
    here = os.path.dirname(os.path.abspath(__file__))
    build = "build_ev" if kind == "EV" else "build_dense"
    code = (
        f"import sys; sys.path.insert(0, {here!r}); import train as b; "
        f"b.{build}({optimizer!r}, 1000, {dim}, 100); "
        f"[0 for _ in b.row_chunks({vocab}, {dim}, 65536)]; r = b.resident_bytes(); "
        f"t = b.{build}({optimizer!r}, {vocab}, {dim}); print(b.resident_bytes() - r)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MALLOC_MMAP_THRESHOLD_="131072"),
    )
    return int(out.stdout.split()[-1])


def admission_cost(args):
    """find-or-insert ns/id over a Zipf stream into an empty table: min_count 0 vs 2."""
    rng = np.random.default_rng(7)
    stream = zipf_ids(rng, args.vocab, args.ids_per_rep, args.zipf)
    batched = stream[: stream.size // 65536 * 65536].reshape(-1, 65536)
    times = {0: [], 2: []}
    for _ in range(args.reps):
        for min_count in times:
            ev = graphopt.EmbeddingVariable(args.dim, min_count=min_count)
            start = time.perf_counter()
            for step, ids in enumerate(batched):
                ev.lookup(ids, insert_missing=True, step=step)
            times[min_count].append(time.perf_counter() - start)
            admitted = int(ev.size())
    ids = batched.size
    off, on = (statistics.median(times[m]) / ids * 1e9 for m in (0, 2))
    print(
        f"\nfind-or-insert into an empty table, Zipf, B = 65,536, {ids:,} ids: admission off "
        f"{off:.1f} ns/id, min_count=2 {on:.1f} ns/id ({on / off:.2f}x; {admitted:,} keys "
        "admitted with min_count=2)"
    )


def eviction_cost(args):
    """Seconds to evict 10% of a 1M-key table (LRU by last step; then by TTL)."""
    ev = graphopt.EmbeddingVariable(args.dim, initializer="zeros")
    n = args.vocab
    for step, start in enumerate(range(0, n, 65536)):
        ev.lookup(np.arange(start, min(n, start + 65536)), insert_missing=True, step=step)
    start = time.perf_counter()
    evicted = int(tf.size(ev.evict(max_rows=n - n // 10)))
    lru = time.perf_counter() - start
    start = time.perf_counter()
    evicted_ttl = int(tf.size(ev.evict(step=10_000, ttl=10_000 - 2)))
    ttl = time.perf_counter() - start
    print(
        f"evict {evicted:,} of {n:,} keys (max_rows, LRU): {lru:.2f} s; then "
        f"{evicted_ttl:,} by TTL: {ttl:.2f} s"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the Zipf, B = 65,536, Adagrad cell")
    parser.add_argument("--vocab", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ids-per-rep", type=int, default=1 << 20)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--zipf", type=float, default=1.1)
    args = parser.parse_args()
    print(
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, V={args.vocab:,} D={args.dim}, "
        f"{args.ids_per_rep:,} ids per repetition, median of {args.reps}"
    )
    zipf = f"zipf({args.zipf})"
    if args.quick:
        ratios = train_cells(args, [zipf], [65536], ["adagrad"])
    else:
        ratios = train_cells(args, [zipf, "uniform"], [4096, 65536], ["adagrad", "adam"])
        print(
            f"\nresident memory per key, {args.vocab:,} keys x {args.dim} floats + slots "
            "(each built in a fresh process):"
        )
        for optimizer in ("adagrad", "adam"):
            ev = resident_bytes_of("EV", optimizer, args.vocab, args.dim)
            dense = resident_bytes_of("dense", optimizer, args.vocab, args.dim)
            print(
                f"  {optimizer:<8} EV {ev / args.vocab:7.1f} B/key, "
                f"dense {dense / args.vocab:7.1f} B/key: {ev / dense:.3f}x dense"
            )
        admission_cost(args)
        eviction_cost(args)
        print("\ntargets: train step <= 1.0x dense (above 1.5x is not done), memory <= 1.15x")
    print(f"train step EV/dense: {ratios[('adagrad', zipf, 65536)]:.2f}")


if __name__ == "__main__":
    main()
