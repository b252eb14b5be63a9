"""Benchmark: migrating a TFRA model with one 10M x 64 table vs ``cp -r`` of its directory.

The model is the TF1 ``de.get_variable`` + ``embedding_lookup_sparse`` fixture
(tests/migrate/fixtures/tfra/tf1_sparse) with its table widened to ``--dim`` and a checkpoint in
TFRA's layout (``user_emb/user_emb_mht_1of1-keys`` int64 [rows], ``-values`` float32 [rows, dim],
the tensor names TFRA's Saver writes) built here in TF 2.21 as a plain tensor bundle: graphopt
reads it as it reads one written by TFRA. One run builds the model once (in a child process),
then alternates ``cp -r`` and ``migrate_model`` ``--repeats`` times, each migration in a fresh
child so that its peak RSS is its own, and prints medians and ratios.

    .venv/bin/python bench/migrate.py                  # 10,000,000 x 64 float32 (2.56 GB)
    .venv/bin/python bench/migrate.py --rows 1000000   # a quick run
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

FIXTURE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "migrate", "fixtures", "tfra", "tf1_sparse"
)

BUILD = r"""
import os, sys, numpy as np, tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
rows, dim, fixture, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.makedirs(out)
mg = meta_graph_pb2.MetaGraphDef()
mg.ParseFromString(open(os.path.join(fixture, "model.meta"), "rb").read())
for n in mg.graph_def.node:
    if n.op == "TFRA>CuckooHashTableOfTensors":
        n.attr["value_shape"].shape.dim[0].size = dim
open(os.path.join(out, "model.meta"), "wb").write(mg.SerializeToString())
open(os.path.join(out, "checkpoint"), "w").write('model_checkpoint_path: "model"\n')
keys = (np.arange(rows, dtype=np.int64) * 2654435761 + 12345) & ((1 << 62) - 1)  # sparse, unique
with tf.device("/CPU:0"):
    values = tf.random.stateless_uniform([rows, dim], seed=[1, 2])
    names = ["user_emb/user_emb_mht_1of1-keys", "user_emb/user_emb_mht_1of1-values", "head/w", "head/b",
             "global_step"]
    tensors = [tf.constant(keys), values, tf.ones([dim, 1]), tf.zeros([1]), tf.constant(8, tf.int64)]
    tf.raw_ops.SaveV2(prefix=os.path.join(out, "model"), tensor_names=names,
                      shape_and_slices=[""] * len(names), tensors=tensors)
"""

MIGRATE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import graphopt
from graphopt.rewrite.targets.ev.migrate import migrate_model
t1 = time.perf_counter()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = migrate_model(sys.argv[1], sys.argv[2])
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"import_s": t1 - t0, "migrate_s": t2 - t1, "rss_after_import": base * 1024,
                  "peak_rss": peak * 1024, "bytes": report.bytes_converted}))
"""


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="where the models go (default: a temp dir)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="graphopt-migrate-bench-", dir=args.workdir)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        model = os.path.join(work, "model")
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", BUILD, str(args.rows), str(args.dim), FIXTURE, model], check=True, env=env
        )
        print(
            f"built the {args.rows} x {args.dim} TFRA-layout model in {time.perf_counter() - t:.1f}s "
            f"({_dir_bytes(model) / 1e9:.2f} GB on disk)"
        )
        table_bytes = args.rows * args.dim * 4
        copies, runs = [], []
        for i in range(args.repeats):
            dst = os.path.join(work, "copy")
            t = time.perf_counter()
            subprocess.run(["cp", "-r", model, dst], check=True)
            copies.append(time.perf_counter() - t)
            shutil.rmtree(dst)
            out = os.path.join(work, "out")
            proc = subprocess.run(
                [sys.executable, "-c", MIGRATE, os.path.join(model, "model.meta"), out],
                check=True,
                env=env,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            shutil.rmtree(out)
            print(
                f"  run {i + 1}: cp -r {copies[-1]:.2f}s, migrate {runs[-1]['migrate_s']:.2f}s "
                f"(+{runs[-1]['import_s']:.1f}s import), peak RSS {runs[-1]['peak_rss'] / 1e9:.2f} GB"
            )
        copy_s = statistics.median(copies)
        migrate_s = statistics.median(r["migrate_s"] for r in runs)
        peak = statistics.median(r["peak_rss"] for r in runs)
        base = statistics.median(r["rss_after_import"] for r in runs)
        print(f"table {table_bytes / 1e9:.2f} GB; medians of {args.repeats}:")
        print(f"  cp -r of the model   {copy_s:.2f}s")
        print(f"  migrate_model        {migrate_s:.2f}s   ratio {migrate_s / copy_s:.2f}x of cp")
        print(f"  peak RSS             {peak / 1e9:.2f} GB   ratio {peak / table_bytes:.2f}x of the table")
        print(
            f"  peak RSS - after import {(peak - base) / 1e9:.2f} GB   "
            f"ratio {(peak - base) / table_bytes:.2f}x"
        )
        print(
            f"migrate {args.rows} x {args.dim}: {migrate_s / copy_s:.2f}x the time of cp, "
            f"{peak / table_bytes:.2f}x the table's bytes in peak memory"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
