"""Collisionless migration benchmark: continue training a hashed model as is, or migrated.

A model whose ids were hashed into M buckets (M much smaller than the distinct ids) is trained
on the first windows of a stream; then two copies continue on the same later windows, side by
side in ONE process:
  (a) hashed:   the table keyed by bucket (find-or-insert on the bucket, as the model was built);
  (b) migrated: the same table after collisionless migration: each raw id keyed by itself, a
      new id inserted with its old bucket's row (GraphoptEvFindOrInsertWithFallback).
Both use the op-level API (graphopt.EmbeddingVariable, Adagrad in the rows). Each window is
scored before the model trains on it (progressive validation), so AUC per window is out of
sample. Streams:
  synthetic: ids drawn Zipf-like from a universe of >= 1M 40-bit ids, each with its own hidden
             effect on the label, hashed into 10,000 buckets;
  course:    the course's testSamples.csv in time order, userId hashed into 1,000 buckets,
             movieId indexing its own table (rows 0..1000) in both variants.

    python bench/collisionless.py --quick   # < 5 minutes; last line is the headline
"""

import argparse
import os
import sys
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from graphopt import EmbeddingVariable  # noqa: E402
from graphopt.ops import fallback, optimizers  # noqa: E402

DIM = 8
COURSE_CSV = "/work/shared/data/sparrowrecsys/testSamples.csv"


def auc(labels, scores):
    """Area under the ROC curve (ties share their average rank)."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = np.asarray(scores)[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def buckets_of(ids, m):
    """What Keras Hashing(num_bins=m) does to integer ids: their decimal string, hashed."""
    return tf.strings.to_hash_bucket_fast(tf.strings.as_string(ids), m)


class Model:
    """logit = sum(row of the hashed feature) + sum(row of the other feature, if any) + bias."""

    def __init__(self, lr, other_rows=0):
        self.table = EmbeddingVariable(DIM, initializer="zeros", optimizer=optimizers.Adagrad(lr))
        self.other = EmbeddingVariable(DIM, initializer="zeros", optimizer=optimizers.Adagrad(lr))
        self.bias = tf.Variable(0.0)
        self.lr = lr
        self.has_other = other_rows > 0

    def copy(self):
        twin = Model(self.lr, int(self.has_other))
        for src, dst in ((self.table, twin.table), (self.other, twin.other)):
            keys, values, freqs, versions, slots = src.export_with_slots()
            dst.import_(keys, values, freqs, versions, slots=slots)
        twin.bias.assign(self.bias)
        return twin

    def rows(self, ids, m, migrated, insert):
        b = buckets_of(ids, m)
        if migrated:
            if insert:
                return fallback.find_or_insert_with_fallback(self.table, ids, b)
            return fallback.find_with_fallback(self.table, ids, b)
        return self.table.lookup(b, insert_missing=insert)

    def logits(self, ids, other, m, migrated, insert=False):
        x = tf.reduce_sum(self.rows(ids, m, migrated, insert), 1) + self.bias
        if self.has_other:
            x += tf.reduce_sum(self.other.lookup(other, insert_missing=insert), 1)
        return x


def make_step(model, m, migrated):
    @tf.function
    def step(ids, other, labels):
        with tf.GradientTape() as tape:
            tape.watch([model.table.handle, model.other.handle])
            logits = model.logits(ids, other, m, migrated, insert=True)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
        g_table, g_other, g_bias = tape.gradient(loss, [model.table.handle, model.other.handle, model.bias])
        # The hashed table's gradient rows are keyed by bucket, the migrated one's by raw key:
        # each op's gradient names the keys it read.
        model.table.apply_gradients(g_table)
        if model.has_other:
            model.other.apply_gradients(g_other)
        model.bias.assign_sub(model.lr * 0.1 * g_bias)
        return loss

    @tf.function
    def score(ids, other):
        return model.logits(ids, other, m, migrated)

    return step, score


def train_window(step, ids, other, labels, batch):
    for s in range(0, len(ids), batch):
        step(ids[s : s + batch], other[s : s + batch], labels[s : s + batch])


def run(name, ids, other, labels, windows, pretrain, m, batch, lr, epochs):
    """Pretrains hashed on the first windows, then continues (a) hashed and (b) migrated."""
    n = len(ids)
    bounds = np.linspace(0, n, windows + 1).astype(int)
    base = Model(lr, other_rows=int(other.max()) + 1 if other is not None else 0)
    other = other if other is not None else np.zeros_like(ids)
    step, _ = make_step(base, m, migrated=False)
    for _ in range(epochs):
        train_window(
            step, ids[: bounds[pretrain]], other[: bounds[pretrain]], labels[: bounds[pretrain]], batch
        )
    variants = {}
    for label, migrated in (("hashed", False), ("migrated", True)):
        model = base.copy()
        variants[label] = (model, *make_step(model, m, migrated))
    # At the switch both variants score alike: migration changes no output.
    w0 = slice(bounds[pretrain], bounds[pretrain + 1])
    same = np.array_equal(
        variants["hashed"][2](ids[w0], other[w0]).numpy(), variants["migrated"][2](ids[w0], other[w0]).numpy()
    )
    print(
        f"[{name}] {n} samples, {len(np.unique(ids))} distinct ids into {m} buckets; "
        f"pretrained hashed on {pretrain}/{windows} windows; outputs identical at migration: {same}"
    )
    aucs = {k: [] for k in variants}
    for w in range(pretrain, windows):
        sl = slice(bounds[w], bounds[w + 1])
        line = []
        for label, (_model, step, score) in variants.items():
            t0 = time.perf_counter()
            a = auc(labels[sl], score(ids[sl], other[sl]).numpy())
            train_window(step, ids[sl], other[sl], labels[sl], batch)
            aucs[label].append(a)
            line.append(f"{label} AUC {a:.4f} ({time.perf_counter() - t0:.1f} s)")
        print(f"[{name}] window {w}: " + " | ".join(line))
    out = {}
    for label, (model, _, _) in variants.items():
        rows = int(model.table.size())
        used, _ = (int(x) for x in model.table.memory())
        out[label] = (float(np.nanmean(aucs[label])), rows, used)
        print(
            f"[{name}] {label}: mean AUC {out[label][0]:.4f}, rows {rows}, "
            f"table memory {used / 2**20:.1f} MiB"
        )
    return out


def synthetic_stream(universe, samples, seed=0):
    rng = np.random.default_rng(seed)
    id_values = rng.choice(2**40, size=universe, replace=False).astype(np.int64)
    effect = rng.normal(0.0, 1.5, universe)
    weights = 1.0 / np.arange(1, universe + 1) ** 0.8
    pick = rng.choice(universe, size=samples, p=weights / weights.sum())
    labels = (rng.random(samples) < 1.0 / (1.0 + np.exp(-(effect[pick] - 0.5)))).astype(np.float32)
    return id_values[pick], labels


def course_stream():
    from graphopt.course.data.samples import read_samples

    s = read_samples(COURSE_CSV)
    order = np.argsort(s.columns["timestamp"], kind="mergesort")
    return (
        s.columns["userId"][order].astype(np.int64),
        s.columns["movieId"][order].astype(np.int64),
        s.labels[order].astype(np.float32),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller synthetic stream (< 5 minutes)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    universe, samples = (2_000_000, 4_000_000) if args.quick else (4_000_000, 12_000_000)
    ids, labels = synthetic_stream(universe, samples)
    syn = run("synthetic", ids, None, labels, windows=6, pretrain=2, m=10_000, batch=4096, lr=0.1, epochs=1)
    users, movies, labels = course_stream()
    course = run(
        "course userId", users, movies, labels, windows=5, pretrain=2, m=1_000, batch=256, lr=0.05, epochs=2
    )
    print(f"total {time.perf_counter() - t0:.0f} s")

    def headline(r):
        return (
            f"AUC hashed/migrated: {r['hashed'][0]:.4f} / {r['migrated'][0]:.4f} | "
            f"rows hashed/migrated: {r['hashed'][1]} / {r['migrated'][1]}"
        )

    print(
        f"course userId into 1,000 buckets: {headline(course)} | table memory "
        f"{course['hashed'][2] / 2**20:.2f} / {course['migrated'][2] / 2**20:.2f} MiB"
    )
    print(
        f"synthetic table memory hashed/migrated: {syn['hashed'][2] / 2**20:.1f} / "
        f"{syn['migrated'][2] / 2**20:.1f} MiB; headline (synthetic, 10,000 buckets):"
    )
    print(headline(syn))


if __name__ == "__main__":
    main()
