"""Compressed serving rows (rewrite --row-dtype): memory, course AUC and find speed, side by side.

In ONE process (the RSS figures each in a fresh process, as bench/lookup.py measures them):
- memory of a V x D table (default 1M x 64) stored float32, int8 row-wise and float16: what
  ``memory()`` reports and the resident bytes it adds; targets int8/fp32 <= 0.30x, fp16 <= 0.52x;
- the course's three model forms trained on the real samples (testSamples.csv, read in place),
  each rewritten with --row-dtype int8 and float16 (ev target), ROC AUC on the test split against
  the original: target |dAUC| <= 0.001, max output difference reported;
- find, uniform and Zipf(1.1) ids, batches 4,096 and 65,536: fp32 find against tf.gather and a
  memcpy of the same number of fp32 rows (targets <= 1.0x gather, <= 1.5x memcpy), int8 find
  against that memcpy (<= 1.0x), the stock target's int8 path (gather of the fused rows + decode in
  core ops) against tf.gather of fp32 rows.

    .venv/bin/python bench/compressed.py            # V = 1,000,000, both batches, 7 repetitions
    .venv/bin/python bench/compressed.py --quick    # B = 65,536 only, 5 repetitions, keras form only

Ends with: int8 memory/fp32: M | int8 find/fp32 memcpy: F | fp32 find/memcpy uniform 65k: P |
fp32 find/gather max: G | course |dAUC| max: A
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lookup  # noqa: E402  (bench/lookup.py: the shared timing loop, id streams, RSS probe)

import graphopt  # noqa: E402
from graphopt.checkpoint import compress  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "..", "shared", "data", "sparrowrecsys", "testSamples.csv")
FORMS = ("keras", "feature-columns", "tf1")


def build_ev(vocab, dim, chunk, row_dtype="float32"):
    ev = graphopt.EmbeddingVariable(dim, name=f"bench_{row_dtype}", row_dtype=row_dtype)
    for keys, rows in lookup.row_chunks(vocab, dim, chunk):
        ev.insert(keys, rows)
    return ev


def build_stock_int8(vocab, dim, chunk):
    """The stock target's int8 table: one uint8 variable of FBGEMM's fused rows, decoded after the
    gather exactly as rewrite --target stock --row-dtype int8 writes it (Cast, Mul, AddV2)."""
    fused = tf.Variable(tf.zeros([vocab, dim + 8], tf.uint8))
    for keys, rows in lookup.row_chunks(vocab, dim, chunk):
        codes, scale_bias = compress.quantize(rows.numpy(), "int8")
        fused.scatter_update(tf.IndexedSlices(np.concatenate([codes, scale_bias.view(np.uint8)], 1), keys))
    stored = tf.convert_to_tensor(fused.read_value())  # scatter updates made the variable copy-on-read

    def find(ids):
        g = tf.gather(stored, ids)
        scale_bias = tf.bitcast(tf.reshape(g[..., dim:], tf.concat([tf.shape(ids), [2, 4]], 0)), tf.float32)
        return tf.cast(g[..., :dim], tf.float32) * scale_bias[..., 0:1] + scale_bias[..., 1:2]

    return find


def rss_of(row_dtype, vocab, dim, chunk):
    """Resident bytes one EV table adds, built in a fresh process (as lookup.resident_bytes_of)."""
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
        "import compressed as c, lookup as b; "
        f"c.build_ev(1000, {dim}, 100, {row_dtype!r}); "
        f"[0 for _ in b.row_chunks({vocab}, {dim}, {chunk})]; "
        f"r = b.resident_bytes(); t = c.build_ev({vocab}, {dim}, {chunk}, {row_dtype!r}); "
        "print(b.resident_bytes() - r, int(t.memory()[0]))"
    )
    rss, reported = (int(x) for x in lookup.fresh_process(code).split()[-2:])
    return rss, reported


def memory(args):
    print(f"\nmemory of a {args.vocab:,} x {args.dim} table (each built in a fresh process):")
    figures = {d: rss_of(d, args.vocab, args.dim, 65536) for d in ("float32", "int8", "float16")}
    fp32_rss, fp32_reported = figures["float32"]
    for d, (rss, reported) in figures.items():
        print(
            f"  {d:<8} reported {reported / args.vocab:6.1f} B/key ({reported / fp32_reported:.3f}x fp32)   "
            f"RSS {rss / args.vocab:6.1f} B/key ({rss / fp32_rss:.3f}x fp32)"
        )
    int8 = max(figures["int8"][0] / fp32_rss, figures["int8"][1] / fp32_reported)
    fp16 = max(figures["float16"][0] / fp32_rss, figures["float16"][1] / fp32_reported)
    print(f"  targets: int8/fp32 <= 0.30x: {int8:.3f}x (worse of the two); fp16/fp32 <= 0.52x: {fp16:.3f}x")
    return int8


def find_speed(args):
    print(f"\nfind, {args.vocab:,} x {args.dim}, ns per id (median of {args.reps}):")
    dense, gather = lookup._dense(args.vocab, args.dim, 65536)
    ev32 = build_ev(args.vocab, args.dim, 65536)
    ev8 = build_ev(args.vocab, args.dim, 65536, "int8")
    lookups = {
        "tf.gather fp32": gather,
        "memcpy fp32": lookup.memcpy_of(dense, args.vocab),
        "EV find fp32": ev32.lookup,
        "EV find int8": ev8.lookup,
        "stock int8 gather+decode": build_stock_int8(args.vocab, args.dim, 65536),
    }
    sample = tf.constant(np.random.default_rng(1).integers(0, args.vocab, 4096), tf.int64)
    np.testing.assert_array_equal(ev32.lookup(sample).numpy(), gather(sample).numpy())
    np.testing.assert_array_equal(
        lookups["stock int8 gather+decode"](sample).numpy(), ev8.lookup(sample).numpy()
    )  # the two targets read the same int8 rows
    rng = np.random.default_rng(2026)
    streams = {
        f"zipf({args.zipf})": lookup.zipf_ids(rng, args.vocab, args.ids_per_rep, args.zipf),
        "uniform": rng.integers(0, args.vocab, args.ids_per_rep).astype(np.int64),
    }
    results = {}
    for dist, stream in streams.items():
        for batch in args.batches:
            batches = tf.constant(stream[: stream.size // batch * batch].reshape(-1, batch))
            runs = {name: lookup.timed_loop(f, batches) for name, f in lookups.items()}
            row = lookup.measure(runs, int(batches.shape[0]) * batch, args.reps)
            results[(dist, batch)] = row
            for name, ns in row.items():
                gather, memcpy = ns / row["tf.gather fp32"], ns / row["memcpy fp32"]
                where = f"{dist:<10} {batch:>6} {name:<26}"
                print(f"  {where} {ns:8.1f}  {gather:5.2f}x gather  {memcpy:5.2f}x memcpy")
    ratio = {
        "fp32/gather": max(r["EV find fp32"] / r["tf.gather fp32"] for r in results.values()),
        "fp32/memcpy": max(r["EV find fp32"] / r["memcpy fp32"] for r in results.values()),
        "int8/memcpy": max(r["EV find int8"] / r["memcpy fp32"] for r in results.values()),
        "stock/gather": max(r["stock int8 gather+decode"] / r["tf.gather fp32"] for r in results.values()),
    }
    uniform65 = results.get(("uniform", 65536))
    ratio["fp32/memcpy uniform 65k"] = (
        uniform65["EV find fp32"] / uniform65["memcpy fp32"] if uniform65 else float("nan")
    )
    print(
        "  worst cell: fp32 find {fp32/gather:.2f}x gather (target <= 1.0x), {fp32/memcpy:.2f}x memcpy "
        "(<= 1.5x); int8 find {int8/memcpy:.2f}x fp32 memcpy (<= 1.0x); stock int8 "
        "{stock/gather:.2f}x tf.gather fp32".format(**ratio)
    )
    return ratio


def course_auc(args, work):
    from graphopt.course.data.samples import read_samples, time_split
    from graphopt.course.models import build_model
    from graphopt.course.models.features import feature_arrays
    from graphopt.course.models.metrics import roc_auc
    from graphopt.rewrite import rewrite_model

    samples = os.path.normpath(args.samples)
    _, test = time_split(read_samples(samples))
    feeds, labels = feature_arrays(test), test.labels
    print(f"\ncourse forms trained on {samples}, ROC AUC on the test split ({len(labels):,} rows):")
    worst = 0.0
    for form in args.forms:
        original = os.path.join(work, form)
        build_model(original, form=form, data=samples, epochs=1, seed=7)
        scores = {"float32": _predict(original, feeds)}
        for row_dtype in ("int8", "float16"):
            out = os.path.join(work, f"{form}-{row_dtype}")
            rewrite_model(original, out, row_dtype=row_dtype)
            scores[row_dtype] = _predict(out, feeds)
        base = roc_auc(labels, scores["float32"])
        for row_dtype in ("int8", "float16"):
            auc = roc_auc(labels, scores[row_dtype])
            diff = np.abs(scores[row_dtype] - scores["float32"])
            worst = max(worst, abs(auc - base))
            print(
                f"  {form:<16} {row_dtype:<8} AUC {base:.5f} -> {auc:.5f} (dAUC {auc - base:+.6f}); "
                f"max |output diff| {diff.max():.3g}, mean {diff.mean():.3g}"
            )
    print(f"  target |dAUC| <= 0.001: max {worst:.6f}")
    return worst


def _predict(path, feeds):
    """Scores of a SavedModel's serving signature through the session loader (TF Serving's path)."""
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_default"]
        feed = {sig.inputs[k].name: v for k, v in feeds.items() if k in sig.inputs}
        (out,) = sig.outputs.values()
        return np.asarray(sess.run(out.name, feed)).reshape(-1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 4,096 and 65,536")
    parser.add_argument("--ids-per-rep", type=int, default=1 << 20)
    parser.add_argument("--reps", type=int, default=None, help="default 7 (--quick: 5)")
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--samples", default=SAMPLES)
    parser.add_argument("--quick", action="store_true", help="batch 65,536 only, 5 repetitions, keras form")
    args = parser.parse_args()
    args.batches = args.batches or ([65536] if args.quick else [4096, 65536])
    args.reps = args.reps or (5 if args.quick else 7)
    args.forms = ("keras",) if args.quick else FORMS
    tf.get_logger().setLevel("ERROR")
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs")
    m = memory(args)
    ratio = find_speed(args)
    with tempfile.TemporaryDirectory(prefix="graphopt-bench-compressed-") as work:
        a = course_auc(args, work)
    print(
        f"int8 memory/fp32: {m:.3f} | int8 find/fp32 memcpy: {ratio['int8/memcpy']:.2f} | "
        f"fp32 find/memcpy uniform 65k: {ratio['fp32/memcpy uniform 65k']:.2f} | "
        f"fp32 find/gather max: {ratio['fp32/gather']:.2f} | course |dAUC| max: {a:.6f}"
    )


if __name__ == "__main__":
    main()
