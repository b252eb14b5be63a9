"""Benchmark: rewriting a model with one big table vs copying the model directory.

Targets (issue 5): rewrite time <= 1.5x the time of copying the model directory; peak memory
<= 1.5x the table's size. One run of this script builds the model once (in a child process),
then alternates copy and rewrite ``--repeats`` times and prints medians and ratios. Each
rewrite runs in a fresh child process so that its peak RSS is its own; its time is measured
inside the child around ``rewrite_model`` (the TensorFlow import is reported separately).

    .venv/bin/python bench/rewrite.py                  # 10,000,000 x 64 float32 (2.56 GB)
    .venv/bin/python bench/rewrite.py --rows 1000000   # a quick run
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

BUILD = r"""
import sys, tensorflow as tf
rows, dim, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
class Net(tf.Module):
    def __init__(self):
        super().__init__()
        with tf.device("/CPU:0"):
            self.emb = tf.Variable(tf.random.stateless_uniform([rows, dim], seed=[1, 2]), name="emb")
        self.w = tf.Variable(tf.ones([dim, 1]), name="w")
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
    def __call__(self, ids):
        return {"score": tf.matmul(tf.nn.embedding_lookup(self.emb, ids), self.w)}
net = Net()
tf.saved_model.save(net, path, signatures={"serving_default": net.__call__})
"""

REWRITE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import graphopt
from graphopt.rewrite import rewrite_model
t1 = time.perf_counter()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = rewrite_model(sys.argv[1], sys.argv[2])
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"import_s": t1 - t0, "rewrite_s": t2 - t1, "rss_after_import": base * 1024,
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
    work = tempfile.mkdtemp(prefix="graphopt-bench-", dir=args.workdir)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        model = os.path.join(work, "model")
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", BUILD, str(args.rows), str(args.dim), model], check=True, env=env
        )
        print(
            f"built {args.rows} x {args.dim} table model in {time.perf_counter() - t:.1f}s "
            f"({_dir_bytes(model) / 1e9:.2f} GB on disk)"
        )
        table_bytes = args.rows * args.dim * 4
        copies, runs = [], []
        for i in range(args.repeats):
            dst = os.path.join(work, "copy")
            t = time.perf_counter()
            shutil.copytree(model, dst)
            copies.append(time.perf_counter() - t)
            shutil.rmtree(dst)
            out = os.path.join(work, "out")
            proc = subprocess.run(
                [sys.executable, "-c", REWRITE, model, out],
                check=True,
                env=env,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            shutil.rmtree(out)
            print(
                f"  run {i + 1}: copy {copies[-1]:.2f}s, rewrite {runs[-1]['rewrite_s']:.2f}s "
                f"(+{runs[-1]['import_s']:.1f}s import), peak RSS {runs[-1]['peak_rss'] / 1e9:.2f} GB"
            )
        copy_s = statistics.median(copies)
        rewrite_s = statistics.median(r["rewrite_s"] for r in runs)
        peak = statistics.median(r["peak_rss"] for r in runs)
        base = statistics.median(r["rss_after_import"] for r in runs)
        print(f"table {table_bytes / 1e9:.2f} GB; medians of {args.repeats}:")
        print(f"  copy directory   {copy_s:.2f}s")
        print(f"  rewrite_model    {rewrite_s:.2f}s   ratio {rewrite_s / copy_s:.2f}x (target <= 1.5x)")
        print(
            f"  peak RSS         {peak / 1e9:.2f} GB   "
            f"ratio {peak / table_bytes:.2f}x of table (target <= 1.5x)"
        )
        print(
            f"  peak RSS - RSS after import {(peak - base) / 1e9:.2f} GB   "
            f"ratio {(peak - base) / table_bytes:.2f}x"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
