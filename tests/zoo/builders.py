"""The model zoo: recommendation models built with the public APIs of the libraries users train with.

Each builder uses its library's own API and defaults (regularizers included), shrinks only the
layer sizes, trains a few steps on small synthetic data and saves the way that library's users
save. DeepCTR and TensorFlow Recommenders are tf_keras libraries: they are built in a subprocess
with ``TF_USE_LEGACY_KERAS=1`` so the calling process keeps Keras 3. Every built model is a
folder holding:

- ``saved_model/``: what ``graphopt rewrite`` reads (tf_keras ``model.save``, ``tf.saved_model.save``
  or Keras 3 ``model.export``, as the library's users do);
- ``model.keras`` (Keras 3 models): the file Keras 3 users reload and train;
- ``zoo.json``: the entry (library, how it was saved, which tables are hashed or looked up, the
  signature's input names) and the table names the model's own layers hold;
- ``tables.npz``: the value of each such table, by name (what detection must find);
- ``feed.npz``: one batch of the signature's inputs and ``oov.npz`` the same batch with ids
  outside every vocabulary (strings never seen, integers past the rows).

    python -m tests.zoo.builders OUT_DIR [NAME ...]   # builds into OUT_DIR/NAME
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = 20  # ids per categorical field (kept tiny: the suite builds every model)
DIM = 4
BATCH = 16
STEPS = 2
# DeepCTR models are compiled with the optimizer the suite's fit-after-reload check compiles with:
# a rewritten tf_keras table trains with the optimizer its model was saved with (recompiling
# changes the dense layers' only; docs/training.md), so fits compare like with like this way.
FIT_LR = 0.5  # large enough that a frozen table shows in the predictions


@dataclasses.dataclass(frozen=True)
class Entry:
    """One zoo model: its library, how it is saved, and what the checks expect of it."""

    name: str
    library: str  # deepctr | tfrs | keras-rs | keras
    saved_as: str  # how the SavedModel was written
    legacy: bool  # built with tf_keras (TF_USE_LEGACY_KERAS=1)
    hashed: tuple[str, ...] = ()  # fields whose ids are hashed or looked up before their table
    reloads: str | None = None  # how users reload it to train: tf_keras | keras (the .keras file)


ZOO = [
    Entry("deepctr_deepfm", "deepctr", "tf_keras model.save", True, reloads="tf_keras"),
    Entry("deepctr_wdl", "deepctr", "tf_keras model.save", True, reloads="tf_keras"),
    Entry("deepctr_dcn", "deepctr", "tf_keras model.save", True, reloads="tf_keras"),
    Entry("deepctr_din", "deepctr", "tf_keras model.save", True, reloads="tf_keras"),
    Entry("deepctr_xdeepfm", "deepctr", "tf_keras model.save", True, reloads="tf_keras"),
    Entry("deepctr_mmoe", "deepctr", "tf_keras model.save", True, reloads="tf_keras"),
    Entry(
        "deepctr_deepfm_hash",
        "deepctr",
        "tf_keras model.save",
        True,
        hashed=("C0", "C1", "C2"),
        reloads="tf_keras",
    ),
    Entry("tfrs_retrieval", "tfrs", "tf.saved_model.save (BruteForce index)", True, hashed=("user_id",)),
    Entry("tfrs_ranking", "tfrs", "tf.saved_model.save", True, hashed=("user_id", "movie_title")),
    Entry("keras_rs_dcn", "keras-rs", "model.export + .keras", False, reloads="keras"),
    Entry("keras_rs_dcn_distributed", "keras-rs", "model.export + .keras", False, reloads="keras"),
    Entry("keras_regularizer", "keras", "model.export + .keras", False, reloads="keras"),
    Entry("keras_mask_zero", "keras", "model.export + .keras", False, reloads="keras"),
    Entry("keras_shared_table", "keras", "model.export + .keras", False, reloads="keras"),
    Entry("keras_multi_hot", "keras", "model.export + .keras", False, reloads="keras"),
]
BY_NAME = {e.name: e for e in ZOO}


# ---------------------------------------------------------------------------------------------
# Synthetic data


def _ints(rng, n=BATCH, rows=ROWS, shape=()):
    return rng.randint(0, rows, (n, *shape)).astype("int64")


def _strings(rng, prefix, n=BATCH, distinct=ROWS * 2):
    return np.array([f"{prefix}{i}".encode() for i in rng.randint(0, distinct, n)], dtype=object)


def _labels(rng, n=BATCH):
    return rng.randint(0, 2, (n, 1)).astype("float32")


# ---------------------------------------------------------------------------------------------
# DeepCTR (tf_keras)


def _deepctr_columns(use_hash=False):
    from deepctr.feature_column import DenseFeat, SparseFeat

    sparse = [
        SparseFeat(
            f"C{i}",
            vocabulary_size=ROWS,
            embedding_dim=DIM,
            use_hash=use_hash,
            dtype="string" if use_hash else "int32",
        )
        for i in range(3)
    ]
    return sparse + [DenseFeat("I0", 1)]


def _deepctr_feed(rng, use_hash=False):
    feed = {
        f"C{i}": (_strings(rng, f"c{i}_") if use_hash else rng.randint(0, ROWS, BATCH).astype("int32"))
        for i in range(3)
    }
    feed["I0"] = rng.rand(BATCH).astype("float32")
    return feed


def _deepctr_oov(feed):
    out = dict(feed)
    for k, v in feed.items():
        if v.dtype == object:
            out[k] = np.array([b"never_seen_" + s for s in v], dtype=object)
        elif k != "I0":
            out[k] = (v + ROWS * 7).astype(v.dtype)
    return out


def _deepctr(name, rng):
    from deepctr.models import DCN, WDL, DeepFM, xDeepFM

    hidden = (8,)
    if name == "deepctr_deepfm_hash":
        cols = _deepctr_columns(use_hash=True)
        return DeepFM(cols, cols, dnn_hidden_units=hidden), _deepctr_feed(rng, True)
    cols = _deepctr_columns()
    feed = _deepctr_feed(rng)
    if name == "deepctr_deepfm":
        return DeepFM(cols, cols, dnn_hidden_units=hidden), feed
    if name == "deepctr_wdl":
        return WDL(cols, cols, dnn_hidden_units=hidden), feed
    if name == "deepctr_dcn":
        return DCN(cols, cols, cross_num=1, dnn_hidden_units=hidden), feed
    if name == "deepctr_xdeepfm":
        return xDeepFM(cols, cols, dnn_hidden_units=hidden, cin_layer_size=(4,)), feed
    if name == "deepctr_mmoe":
        from deepctr.models import MMOE

        model = MMOE(cols, num_experts=2, expert_dnn_hidden_units=hidden, tower_dnn_hidden_units=(4,))
        return model, feed
    if name == "deepctr_din":
        from deepctr.feature_column import SparseFeat, VarLenSparseFeat
        from deepctr.models import DIN

        cols = [
            SparseFeat("user", ROWS, embedding_dim=DIM),
            SparseFeat("item_id", ROWS, embedding_dim=DIM),
            VarLenSparseFeat(
                SparseFeat("hist_item_id", ROWS, embedding_dim=DIM, embedding_name="item_id"), maxlen=3
            ),
        ]
        feed = {
            "user": rng.randint(0, ROWS, BATCH).astype("int32"),
            "item_id": rng.randint(1, ROWS, BATCH).astype("int32"),
            "hist_item_id": rng.randint(0, ROWS, (BATCH, 3)).astype("int32"),
        }
        return DIN(cols, ["item_id"], dnn_hidden_units=hidden, att_hidden_size=(4,)), feed
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# TensorFlow Recommenders (tf_keras)

_USERS = [f"user{i}".encode() for i in range(ROWS)]
_MOVIES = [f"movie{i}".encode() for i in range(ROWS)]


def _tfrs(name, rng, out_dir):
    import tensorflow as tf
    import tensorflow_recommenders as tfrs
    import tf_keras as keras

    users = _strings(rng, "user", n=64, distinct=ROWS)
    movies = _strings(rng, "movie", n=64, distinct=ROWS)

    def tower(vocab):
        return keras.Sequential(
            [
                keras.layers.StringLookup(vocabulary=vocab, mask_token=None),
                keras.layers.Embedding(len(vocab) + 1, DIM),
            ]
        )

    if name == "tfrs_retrieval":
        user_model, movie_model = tower(_USERS), tower(_MOVIES)
        candidates = tf.data.Dataset.from_tensor_slices(np.array(_MOVIES, dtype=object)).batch(8)

        class MovielensModel(tfrs.Model):
            def __init__(self):
                super().__init__()
                self.user_model, self.movie_model = user_model, movie_model
                self.task = tfrs.tasks.Retrieval(
                    metrics=tfrs.metrics.FactorizedTopK(candidates=candidates.map(movie_model))
                )

            def compute_loss(self, features, training=False):
                return self.task(
                    self.user_model(features["user_id"]), self.movie_model(features["movie_title"])
                )

        model = MovielensModel()
        model.compile(optimizer=keras.optimizers.Adagrad(0.1))
        data = tf.data.Dataset.from_tensor_slices({"user_id": users, "movie_title": movies}).batch(BATCH)
        model.fit(data.take(STEPS), epochs=1, verbose=0)
        index = tfrs.layers.factorized_top_k.BruteForce(model.user_model, k=3)
        index.index_from_dataset(tf.data.Dataset.zip((candidates, candidates.map(model.movie_model))))
        index(tf.constant([b"user0"]))
        tf.saved_model.save(index, os.path.join(out_dir, "saved_model"))
        return model.user_model, {"user_id": users[:BATCH]}

    if name == "tfrs_ranking":

        class RankingModel(tfrs.models.Model):
            def __init__(self):
                super().__init__()
                self.user_embeddings = tower(_USERS)
                self.movie_embeddings = tower(_MOVIES)
                self.ratings = keras.Sequential(
                    [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
                )
                self.task = tfrs.tasks.Ranking(
                    loss=keras.losses.MeanSquaredError(), metrics=[keras.metrics.RootMeanSquaredError()]
                )

            def call(self, features):
                u = self.user_embeddings(features["user_id"])
                m = self.movie_embeddings(features["movie_title"])
                return self.ratings(tf.concat([u, m], axis=1))

            def compute_loss(self, features, training=False):
                labels = features.pop("user_rating")
                return self.task(labels=labels, predictions=self(features))

        model = RankingModel()
        model.compile(optimizer=keras.optimizers.Adagrad(0.1))
        ratings = rng.randint(1, 6, 64).astype("float32")
        data = tf.data.Dataset.from_tensor_slices(
            {"user_id": users, "movie_title": movies, "user_rating": ratings}
        ).batch(BATCH)
        model.fit(data.take(STEPS), epochs=1, verbose=0)
        feed = {"user_id": users[:BATCH], "movie_title": movies[:BATCH]}
        model({k: tf.constant(v) for k, v in feed.items()})
        tf.saved_model.save(model, os.path.join(out_dir, "saved_model"))
        return model, feed
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# keras-rs and Keras 3


def _keras_rs(name, rng):
    import keras
    import keras_rs

    inputs = {f: keras.Input((), dtype="int32", name=f) for f in ("user", "item", "genre")}
    if name == "keras_rs_dcn":
        embedded = [keras.layers.Embedding(ROWS, DIM, name=f"{f}_emb")(inputs[f]) for f in inputs]
    else:
        configs = {
            f: keras_rs.layers.FeatureConfig(
                name=f,
                table=keras_rs.layers.TableConfig(name=f"{f}_table", vocabulary_size=ROWS, embedding_dim=DIM),
                input_shape=(BATCH,),
                output_shape=(BATCH, DIM),
            )
            for f in inputs
        }
        looked_up = keras_rs.layers.DistributedEmbedding(configs, name="distributed_embedding")(inputs)
        embedded = [looked_up[f] for f in inputs]
    x0 = keras.layers.Concatenate()(embedded)
    x = keras_rs.layers.FeatureCross()(x0, x0)
    x = keras.layers.Dense(8, activation="relu")(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    feed = {f: rng.randint(0, ROWS, BATCH).astype("int32") for f in inputs}
    return keras.Model(inputs, out), feed


class _MultiHotTables:
    """Holds the Keras 3 multi-hot model's custom layer (defined lazily: it needs keras)."""

    cls = None


def _multi_hot_layer():
    if _MultiHotTables.cls is not None:
        return _MultiHotTables.cls
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="graphopt_zoo")
    class MultiHotEmbedding(keras.layers.Layer):
        """Pools each row's ids with tf.nn.safe_embedding_lookup_sparse (mean) and
        tf.nn.embedding_lookup_sparse (sqrtn), one table each."""

        def __init__(self, rows, dim, **kwargs):
            super().__init__(**kwargs)
            self.rows, self.dim = rows, dim

        def build(self, input_shape):
            self.genres = self.add_weight(shape=(self.rows, self.dim), name="genres", initializer="uniform")
            self.tags = self.add_weight(shape=(self.rows, self.dim), name="tags", initializer="uniform")

        def call(self, inputs):
            genres, tags = inputs
            g = tf.sparse.from_dense(tf.cast(genres, "int64"))  # 0 pads
            t = tf.sparse.from_dense(tf.cast(tags, "int64"))
            pooled_g = tf.nn.safe_embedding_lookup_sparse(self.genres.value, g, None, combiner="mean")
            pooled_t = tf.nn.embedding_lookup_sparse(self.tags.value, t, None, combiner="sqrtn")
            missing = tf.cast(tf.shape(genres)[0] - tf.shape(pooled_t)[0], "int32")
            pooled_t = tf.pad(pooled_t, [[0, missing], [0, 0]])
            return tf.concat([pooled_g, pooled_t], axis=1)

        def get_config(self):
            return {**super().get_config(), "rows": self.rows, "dim": self.dim}

    _MultiHotTables.cls = MultiHotEmbedding
    return MultiHotEmbedding


def register_custom_layers():
    """Registers the Keras 3 classes the zoo's .keras files hold, for keras.models.load_model."""
    import keras_rs  # noqa: F401  (FeatureCross, DistributedEmbedding)

    _multi_hot_layer()


def _keras(name, rng):
    import keras

    if name == "keras_multi_hot":
        genres = keras.Input((3,), dtype="int64", name="genres")
        tags = keras.Input((3,), dtype="int64", name="tags")
        pooled = _multi_hot_layer()(ROWS, DIM, name="multi_hot")([genres, tags])
        out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(8, activation="relu")(pooled))
        ids = rng.randint(1, ROWS, (BATCH, 3)).astype("int64")
        ids[:, 2] = 0  # a padded position in every row; one row with only padding
        ids[0, :] = 0
        return keras.Model([genres, tags], out), {"genres": ids, "tags": ids[::-1].copy()}
    if name == "keras_shared_table":
        user, friend = (keras.Input((1,), dtype="int64", name=n) for n in ("user", "friend"))
        item = keras.Input((1,), dtype="int64", name="item")
        users = keras.layers.Embedding(ROWS, DIM, name="user_emb")  # one table, two inputs
        x = keras.layers.Concatenate()(
            [
                keras.layers.Flatten()(users(user)),
                keras.layers.Flatten()(users(friend)),
                keras.layers.Flatten()(keras.layers.Embedding(ROWS, DIM, name="item_emb")(item)),
            ]
        )
        out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(8, activation="relu")(x))
        feed = {n: _ints(rng, shape=(1,)) for n in ("user", "friend", "item")}
        return keras.Model({"user": user, "friend": friend, "item": item}, out), feed
    if name == "keras_mask_zero":
        hist = keras.Input((4,), dtype="int64", name="history")
        emb = keras.layers.Embedding(ROWS, DIM, mask_zero=True, name="history_emb")(hist)
        pooled = keras.layers.GlobalAveragePooling1D()(emb)  # uses the mask: padding does not count
        out = keras.layers.Dense(1, activation="sigmoid")(pooled)
        ids = _ints(rng, shape=(4,))
        ids[:, 3] = 0
        return keras.Model({"history": hist}, out), {"history": ids}
    if name == "keras_regularizer":
        inputs = {f: keras.Input((1,), dtype="int64", name=f) for f in ("user", "item")}
        embedded = [
            keras.layers.Flatten()(
                keras.layers.Embedding(
                    ROWS, DIM, embeddings_regularizer=keras.regularizers.L2(1e-4), name=f"{f}_emb"
                )(inputs[f])
            )
            for f in inputs
        ]
        x = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()(embedded))
        out = keras.layers.Dense(1, activation="sigmoid")(x)
        return keras.Model(inputs, out), {f: _ints(rng, shape=(1,)) for f in inputs}
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------


def _embedding_tables(model) -> dict[str, np.ndarray]:
    """{name: value} of every table the model's own layers hold: Embedding layers' embeddings (of
    tf_keras, Keras 3, TFRS towers, keras-rs DistributedEmbedding) and the multi-hot layer's."""
    out = {}
    seen = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        cls = type(layer).__name__
        variables = []
        if any(c.__name__ == "Embedding" for c in type(layer).__mro__):  # keras-rs EmbedReduce too
            variables = [layer.embeddings]
        elif cls == "MultiHotEmbedding":
            variables = [layer.genres, layer.tags]
        for v in variables:
            key = id(v)
            if key not in seen:
                seen.add(key)
                name = getattr(v, "path", None) or v.name
                out[name] = np.asarray(v.numpy())
    return out


def _oov(feed) -> dict:
    out = {}
    for k, v in feed.items():
        if v.dtype == object:
            out[k] = np.array([b"never_seen_" + bytes(s) for s in v], dtype=object)
        elif np.issubdtype(v.dtype, np.integer):
            out[k] = (v + ROWS * 7).astype(v.dtype)
        else:
            out[k] = v
    return out


def _signature_names(saved_model, feed) -> dict:
    """{feed name: the serving signature's input name} (a lone input may be named by Keras)."""
    import tensorflow as tf

    spec = tf.saved_model.load(saved_model).signatures["serving_default"].structured_input_signature[1]
    if set(spec) == set(feed):
        return {k: k for k in feed}
    if len(spec) == len(feed) == 1:
        return {next(iter(feed)): next(iter(spec))}
    raise ValueError(f"the feed's names {sorted(feed)} are not the signature's {sorted(spec)}")


def _save_npz(path, arrays):
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def build(name: str, out_dir: str, seed: int = 0) -> str:
    """Builds, trains and saves zoo model ``name`` into ``out_dir`` in this process (tf_keras
    models need ``TF_USE_LEGACY_KERAS=1`` set before TensorFlow is imported: use ``build_all``)."""
    entry = BY_NAME[name]
    import tensorflow as tf

    tf.random.set_seed(seed)
    rng = np.random.RandomState(seed)
    os.makedirs(out_dir, exist_ok=True)
    sm = os.path.join(out_dir, "saved_model")
    if entry.library == "deepctr":
        model, feed = _deepctr(name, rng)
        feed = {k: v.reshape(len(v), -1) for k, v in feed.items()}  # DeepCTR's inputs are [batch, 1]
        import tf_keras

        model.compile(tf_keras.optimizers.SGD(FIT_LR), "binary_crossentropy")
        labels = _labels(rng) if name != "deepctr_mmoe" else [_labels(rng), _labels(rng)]
        model.fit(feed, labels, batch_size=BATCH // STEPS, epochs=1, verbose=0)
        model.save(sm, save_format="tf")
        oov = _deepctr_oov(feed)
    elif entry.library == "tfrs":
        model, feed = _tfrs(name, rng, out_dir)
        oov = _oov(feed)
    else:
        import keras

        keras.utils.set_random_seed(seed)
        model, feed = _keras_rs(name, rng) if entry.library == "keras-rs" else _keras(name, rng)
        model.compile("adam", "binary_crossentropy")
        model.fit(feed, _labels(rng), batch_size=BATCH // STEPS, epochs=1, verbose=0)
        model.save(os.path.join(out_dir, "model.keras"))
        model.export(sm, verbose=False)
        oov = _oov(feed)
        if name == "keras_multi_hot":  # 0 is padding there: keep the pads, move the ids
            oov = {k: np.where(v > 0, v + ROWS * 7, 0) for k, v in feed.items()}
    names = _signature_names(sm, feed)
    feed, oov = ({names[k]: v for k, v in arrays.items()} for arrays in (feed, oov))
    hashed = sorted(names[h] for h in entry.hashed)
    tables = _embedding_tables(model)
    _save_npz(os.path.join(out_dir, "tables.npz"), tables)
    _save_npz(os.path.join(out_dir, "feed.npz"), feed)
    _save_npz(os.path.join(out_dir, "oov.npz"), oov)
    with open(os.path.join(out_dir, "zoo.json"), "w") as f:
        json.dump({**dataclasses.asdict(entry), "hashed": hashed, "tables": sorted(tables)}, f, indent=1)
    return out_dir


def child_environment(legacy: bool) -> dict:
    """The environment of a zoo subprocess: this repository importable, tf_keras or Keras 3."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("TF_USE_LEGACY_KERAS", None)
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    return env


def build_all(root: str, names=None, env=None) -> dict[str, str]:
    """Builds each named zoo model (default: all) into ``root/NAME``: {name: folder}.

    The tf_keras models are built in one subprocess with ``TF_USE_LEGACY_KERAS=1`` and the Keras 3
    ones in another, side by side; a model already built there (its zoo.json exists) is kept.
    """
    names = [e.name for e in ZOO] if names is None else list(names)
    todo = [n for n in names if not os.path.exists(os.path.join(root, n, "zoo.json"))]
    procs = []
    for legacy in (True, False):
        group = [n for n in todo if BY_NAME[n].legacy == legacy]
        if not group:
            continue
        child_env = {**child_environment(legacy), **(env or {})}
        cmd = [sys.executable, "-m", "tests.zoo.builders", root, *group]
        procs.append(
            (group, subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        )
    for group, p in procs:
        output, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"building {group} failed:\n{output.decode(errors='replace')[-4000:]}")
    return {n: os.path.join(root, n) for n in names}


def load_entry(folder: str) -> dict:
    """zoo.json of a built model."""
    with open(os.path.join(folder, "zoo.json")) as f:
        return json.load(f)


def load_arrays(folder: str, what: str) -> dict[str, np.ndarray]:
    """``feed``, ``oov`` or ``tables`` of a built model, as {name: array}."""
    with np.load(os.path.join(folder, f"{what}.npz"), allow_pickle=True) as z:
        return {k: z[k] for k in z.files}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    root, names = argv[0], argv[1:] or [e.name for e in ZOO]
    for name in names:
        build(name, os.path.join(root, name))
        print(f"built {name}", flush=True)


if __name__ == "__main__":
    main()
