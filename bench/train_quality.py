"""What dynamic tables buy when training continues: static Keras Embeddings vs DynamicEmbedding.

(a) The course's real samples in time order, progressive validation: the course's Keras model is
    trained on the first window, then converted (graphopt.keras.convert); from then on each window
    is first scored by both models (AUC), then both train on it (one pass, same batches).
(b) A synthetic stream whose user ids arrive over time with drift (graphopt.course.data.synthetic
    stream_window): a static table of M hashed buckets (id mod M) vs a DynamicEmbedding with
    admission (min_count 2) and a row cap (LRU), both with Adagrad, at the same memory: the
    dynamic table's resident bytes (rows, slots, index, admission state: GraphoptEvStats'
    bytes_used) are held to the static table's rows + accumulators. With --admission bloom
    (the default) the cap is --cap rows (default M / 2) and the counting Bloom filter gets the
    bytes left over, measured on a table filled to the cap before the stream starts; with
    --admission counter the exact counters grow with every id seen once (not bounded).
    AUC per window, resident bytes.

    python bench/train_quality.py --quick          # (a) alone, < 5 minutes
    python bench/train_quality.py --windows 10 --rows 200000 --cohort 400000 --buckets 100000
    python bench/train_quality.py --windows 20 --rows 500000 --cohort 1000000 --buckets 200000

The last line: ``progressive AUC static/dynamic: A / B`` (row-weighted over the scored windows of (a)).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REAL_SAMPLES = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "..",
    "shared",
    "data",
    "sparrowrecsys",
    "testSamples.csv",
)


def progressive_real(path, windows, seed):
    import keras

    import graphopt  # noqa: F401
    from graphopt.course.data import TIMESTAMP, read_samples
    from graphopt.course.models import keras_form
    from graphopt.course.models.features import LEARNING_RATE, Normalization, dataset
    from graphopt.course.models.metrics import roc_auc
    from graphopt.keras import convert

    samples = read_samples(path)
    order = np.argsort(samples.columns[TIMESTAMP], kind="stable")
    parts = [samples.take(idx) for idx in np.array_split(order, windows)]
    keras.utils.set_random_seed(seed)
    static = keras_form.build(Normalization.fit(parts[0]))
    static.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="binary_crossentropy", jit_compile=False
    )
    static.fit(dataset(parts[0]), epochs=1, verbose=0)
    dynamic = convert(static)
    seen = set(parts[0].columns["userId"].tolist())
    # A table that only ever held the ids it trained on: convert() keeps every row of the static
    # table (row i -> key i, so it computes exactly what the static model does); this variant
    # drops the rows of ids window 0 never had, so a new user reads the zero default row
    # instead of an untrained random one, and gets a fresh initializer row when it trains.
    seen_only = convert(static)
    for name, seen_ids in (
        ("userId_embedding", seen),
        ("movieId_embedding", set(parts[0].columns["movieId"].tolist())),
    ):
        table = seen_only.get_layer(name).table
        table.remove([k for k in table.export()[0].numpy().tolist() if k not in seen_ids])
    models = (("static", static), ("dynamic", dynamic), ("seen-only", seen_only))
    totals = {name: [] for name, _ in models}
    print(f"(a) {path}: {len(samples)} rows in {windows} time-ordered windows; window 0 trains all")
    print("window   rows  new-user rows  AUC static  AUC dynamic  AUC dynamic, seen ids only")
    for w, part in enumerate(parts[1:], 1):
        users = part.columns["userId"]
        new = np.mean([u not in seen for u in users.tolist()])
        aucs = {}
        for name, model in models:
            scores = model.predict(dataset(part, batch_size=1024), verbose=0).reshape(-1)
            aucs[name] = roc_auc(part.labels, scores)
            totals[name].append((aucs[name], len(part)))
            model.fit(dataset(part), epochs=1, verbose=0)
        seen.update(users.tolist())
        print(
            f"{w:6d} {len(part):6d} {new:14.1%} {aucs['static']:11.4f} {aucs['dynamic']:12.4f} "
            f"{aucs['seen-only']:26.4f}"
        )

    def mean(name):
        return sum(a * n for a, n in totals[name]) / sum(n for _, n in totals[name])

    print(f"mean AUC, dynamic with seen ids only: {mean('seen-only'):.4f}")
    return mean("static"), mean("dynamic")


def stream_model(user_layer, n_items, dim, lr):
    import keras

    user = keras.Input(shape=(), dtype="int64", name="user")
    item = keras.Input(shape=(), dtype="int64", name="item")
    u = user_layer(user)
    i = keras.layers.Embedding(n_items, dim, name="item_embedding")(item)
    x = keras.layers.Concatenate()([u, i, keras.layers.Multiply()([u, i])])
    x = keras.layers.Dense(16, activation="relu")(x)
    model = keras.Model({"user": user, "item": item}, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=keras.optimizers.Adagrad(lr), loss="binary_crossentropy", jit_compile=False)
    return model


def filter_counters_for(static_bytes, cap, dim, lr):
    """Counters (bytes) of the admission filter that bring a table capped at `cap` rows to
    static_bytes: the rows' share is measured on a table filled to its cap with keys arriving
    and leaving (so its index and free lists are at their steady size)."""
    import graphopt
    from graphopt.ops import optimizers

    probe = graphopt.EmbeddingVariable(dim, optimizer=optimizers.Adagrad(lr), max_rows=cap)
    keys = np.random.default_rng(0).integers(-(2**62), 2**62, size=4 * cap)
    for part in np.array_split(keys, 16):
        probe.lookup(part, insert_missing=True)
    rows_bytes = int(probe.stats()["bytes"])
    if rows_bytes >= static_bytes:
        raise SystemExit(f"{cap} rows take {rows_bytes} bytes, more than the static {static_bytes}")
    return static_bytes - rows_bytes


def synthetic_stream(windows, rows, cohort, buckets, dim, seed, admission="bloom", cap=0):
    import keras

    import graphopt  # noqa: F401
    from graphopt.course.data.synthetic import stream_window
    from graphopt.course.models.metrics import roc_auc
    from graphopt.keras import DynamicEmbedding

    n_items, lr = 1000, 0.05
    static_bytes = buckets * dim * 4 * 2  # rows + Adagrad accumulators
    cap = cap or buckets // 2
    options = {"admission": admission}
    if admission == "bloom":
        options.update(bloom_counters=filter_counters_for(static_bytes, cap, dim, lr), bloom_hashes=3)
    keras.utils.set_random_seed(seed)
    static = stream_model(keras.layers.Embedding(buckets, dim, name="user_embedding"), n_items, dim, lr)
    table = DynamicEmbedding(
        dim,
        optimizer=keras.optimizers.Adagrad(lr),
        min_count=2,
        max_rows=cap,
        name="user_embedding",
        **options,
    )
    dynamic = stream_model(table, n_items, dim, lr)
    distinct = set()
    print(
        f"(b) stream: {windows} windows x {rows} rows, cohorts of {cohort} new ids, "
        f"M = {buckets} buckets, dim {dim}; dynamic: min_count 2, cap {cap} rows (LRU), "
        f"admission {admission} {options.get('bloom_counters', '')}"
    )
    print(
        "window  distinct ids so far  AUC static  AUC dynamic  static MiB  dynamic MiB  table rows"
        "  pending ids"
    )
    scored = {"static": [], "dynamic": []}
    for w in range(windows):
        users, items, labels = stream_window(w, rows, cohort, n_items, seed=seed)
        distinct.update(users.tolist())
        batch = 1024
        aucs = {}
        for name, model, ids in (("static", static, users % buckets), ("dynamic", dynamic, users)):
            x = {"user": ids, "item": items}
            if w:
                aucs[name] = roc_auc(labels, model.predict(x, batch_size=4096, verbose=0).reshape(-1))
                scored[name].append(aucs[name])
            model.fit(x, labels, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        stats = {k: int(v) for k, v in table.table.stats().items()}
        print(
            f"{w:6d} {len(distinct):20d} {aucs.get('static', float('nan')):11.4f} "
            f"{aucs.get('dynamic', float('nan')):12.4f} {static_bytes / 2**20:11.1f} "
            f"{stats['bytes'] / 2**20:12.1f} {stats['size']:11d} {stats['pending']:12d}",
            flush=True,
        )
    if windows > 1:
        wins = sum(d > s for s, d in zip(scored["static"], scored["dynamic"], strict=True))
        print(
            f"(b) mean AUC static / dynamic over {windows - 1} windows: {np.mean(scored['static']):.4f} / "
            f"{np.mean(scored['dynamic']):.4f}; dynamic higher in {wins}"
        )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="(a) alone")
    parser.add_argument("--data", default=REAL_SAMPLES)
    parser.add_argument("--real-windows", type=int, default=10)
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--cohort", type=int, default=400_000)
    parser.add_argument("--buckets", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--admission", choices=("bloom", "counter"), default="bloom")
    parser.add_argument("--cap", type=int, default=0, help="row cap of the dynamic table (0: M / 2)")
    args = parser.parse_args()
    start = time.perf_counter()
    if not args.quick:
        synthetic_stream(
            args.windows, args.rows, args.cohort, args.buckets, args.dim, args.seed, args.admission, args.cap
        )
        print(f"(b) took {time.perf_counter() - start:.0f} s")
    static, dynamic = progressive_real(os.path.normpath(args.data), args.real_windows, args.seed)
    print(f"took {time.perf_counter() - start:.0f} s")
    print(f"progressive AUC static/dynamic: {static:.4f} / {dynamic:.4f}")


if __name__ == "__main__":
    main()
