"""Builds the TFRA 0.8.1 model zoo that tests/migrate uses, in a TF 2.16 + TFRA environment.

Not part of graphopt and never imported by it: TFRA needs TensorFlow <= 2.16.2, graphopt runs on
2.21, so this script runs in its own virtual environment:

    python3.11 -m venv /work/venv-tfra
    /work/venv-tfra/bin/pip install tensorflow==2.16.2 tf_keras==2.16.0 \
        tensorflow-recommenders-addons==0.8.1
    TF_USE_LEGACY_KERAS=1 /work/venv-tfra/bin/python tools/tfra/build_fixtures.py tests/migrate/fixtures/tfra

Each model is trained a few steps on tiny tables and saved the way its users save it; beside it
goes ``reference.npz``, the inputs fed and the outputs the model computed after it was loaded
back from disk, in this environment (``graphopt validate --reference-outputs`` reads it):

- ``keras_embedding/``: a tf_keras model with ``de.keras.layers.Embedding`` trained with
  ``DynamicEmbeddingOptimizer(Adagrad)``, saved with ``model.save`` (SavedModel);
- ``tf1_sparse/``: a TF1 graph with ``de.get_variable`` + ``de.embedding_lookup_sparse`` trained
  with SGD, saved with ``tf.compat.v1.train.Saver`` (checkpoint + .meta);
- ``tf1_adagrad/``: the same graph trained with ``DynamicEmbeddingOptimizer(Adagrad)``, whose slot
  table (the accumulators) the Saver saves beside the embedding table.

The TF1 meta graphs carry a ``serving_default`` signature so the inputs and outputs are named.
"""

import json
import os
import shutil
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders_addons as tfra  # noqa: E402
import tf_keras  # noqa: E402
from tensorflow_recommenders_addons import dynamic_embedding as de  # noqa: E402

DIM = 4
FIELDS = 3
SEED = 7
# Sparse 64-bit keys (hashed feature ids), so nothing here is a dense row index.
KEYS = np.random.default_rng(SEED).integers(1 << 33, 1 << 40, size=40, dtype=np.int64)


def _ids(rng, rows):
    return rng.choice(KEYS, size=(rows, FIELDS)).astype(np.int64)


def _labels(ids):
    return ((ids.sum(axis=1) // 3) % 2).astype(np.float32).reshape(-1, 1)


def _environment():
    return json.dumps(
        {"tensorflow": tf.__version__, "tfra": tfra.__version__, "tf_keras": tf_keras.__version__}
    )


def _save_reference(path, signature, inputs: list[dict], outputs: list[dict]):
    arrays = {"_environment": np.array(_environment())}
    for i, (feed, fetched) in enumerate(zip(inputs, outputs, strict=True)):
        for name, value in feed.items():
            arrays[f"inputs/{signature}/{name}/{i}"] = value
        for name, value in fetched.items():
            arrays[f"outputs/{signature}/{name}/{i}"] = value
    np.savez(path, **arrays)


def build_keras(out):
    tf.random.set_seed(SEED)
    rng = np.random.default_rng(SEED)
    ids = tf_keras.Input(shape=(FIELDS,), dtype=tf.int64, name="ids")
    emb = de.keras.layers.Embedding(
        DIM,
        combiner="sum",
        initializer=tf_keras.initializers.RandomNormal(stddev=0.1, seed=SEED),
        name="emb",
    )
    x = emb(ids)
    x = tf_keras.layers.Flatten(name="lookup")(x) if len(x.shape) > 2 else x
    y = tf_keras.layers.Dense(1, activation="sigmoid", name="head")(x)
    # The lookup is an output too: validate compares it bit for bit, while the head's matmul may
    # round differently in another TensorFlow version (docs/migration.md).
    model = tf_keras.Model(ids, [y, x])
    opt = de.DynamicEmbeddingOptimizer(tf_keras.optimizers.Adagrad(0.1))
    model.compile(optimizer=opt, loss=["binary_crossentropy", None])
    train = _ids(rng, 256)
    model.fit(
        train,
        [_labels(train), np.zeros([len(train), FIELDS * DIM], np.float32)],
        batch_size=32,
        epochs=2,
        verbose=0,
    )
    path = os.path.join(out, "keras_embedding")
    model.save(path, options=tf.saved_model.SaveOptions(namespace_whitelist=["TFRA"]))
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    feeds = [{"ids": train[:16]}, {"ids": _ids(rng, 16)}]
    outputs = [{k: v.numpy() for k, v in serve(ids=tf.constant(f["ids"])).items()} for f in feeds]
    _save_reference(os.path.join(path, "reference.npz"), "serving_default", feeds, outputs)


def _tf1_graph(optimizer):
    tf.compat.v1.reset_default_graph()
    tf.compat.v1.set_random_seed(SEED)
    indices = tf.compat.v1.placeholder(tf.int64, [None, 2], name="ids_indices")
    values = tf.compat.v1.placeholder(tf.int64, [None], name="ids_values")
    dense_shape = tf.compat.v1.placeholder(tf.int64, [2], name="ids_dense_shape")
    labels = tf.compat.v1.placeholder(tf.float32, [None, 1], name="labels")
    sp_ids = tf.SparseTensor(indices, values, dense_shape)
    table = de.get_variable(
        "user_emb",
        key_dtype=tf.int64,
        value_dtype=tf.float32,
        dim=DIM,
        initializer=tf.compat.v1.random_normal_initializer(stddev=0.1, seed=SEED),
    )
    emb = de.embedding_lookup_sparse(table, sp_ids, None, combiner="mean", name="user_lookup")
    w = tf.compat.v1.get_variable("head/w", [DIM, 1], initializer=tf.compat.v1.ones_initializer())
    b = tf.compat.v1.get_variable("head/b", [1], initializer=tf.compat.v1.zeros_initializer())
    logits = tf.matmul(emb, w) + b
    prob = tf.sigmoid(logits, name="prob")
    loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
    opt = de.DynamicEmbeddingOptimizer(optimizer)
    train_op = opt.minimize(loss, global_step=tf.compat.v1.train.get_or_create_global_step(), name="train")
    feeds = {"ids_indices": indices, "ids_values": values, "ids_dense_shape": dense_shape}
    return feeds, labels, prob, emb, loss, train_op


def _sparse_batch(ids):
    rows, fields = ids.shape
    idx = np.array([[r, f] for r in range(rows) for f in range(fields)], np.int64)
    return {
        "ids_indices": idx,
        "ids_values": ids.reshape(-1),
        "ids_dense_shape": np.array([rows, fields], np.int64),
    }


def build_tf1(out, name, optimizer):
    rng = np.random.default_rng(SEED)
    feeds, labels, prob, emb, loss, train_op = _tf1_graph(optimizer)
    saver = tf.compat.v1.train.Saver()
    path = os.path.join(out, name)
    os.makedirs(path)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for _ in range(8):
            batch = _ids(rng, 32)
            feed = {feeds[k]: v for k, v in _sparse_batch(batch).items()}
            feed[labels] = _labels(batch)
            sess.run(train_op, feed)
        saver.save(sess, os.path.join(path, "model"), write_meta_graph=False)
        # One more step after the save, recorded: the migrated model's training must continue
        # from the saved rows and slots to the same rows (tests/migrate/test_tfra.py).
        batch = _ids(rng, 8)
        feed = {feeds[k]: v for k, v in _sparse_batch(batch).items()}
        feed[labels] = _labels(batch)
        sess.run(train_op, feed)
        step = {f"inputs/{k}": v for k, v in _sparse_batch(batch).items()}
        step["labels"] = _labels(batch)
        ids = np.unique(batch)
        lookup = tf.compat.v1.get_default_graph().get_tensor_by_name(
            "user_lookup/embedding_lookup/user_lookup/embedding_lookup/Read/"
            "user_emb_mht_1of1_lookup_table_find/TFRA>CuckooHashTableFind:0"
        )
        unique = tf.compat.v1.get_default_graph().get_tensor_by_name("user_lookup/Unique:0")
        rows, keys = sess.run([lookup, unique], {feeds["ids_values"]: ids})
        step["after/keys"], step["after/values"] = keys, rows
        np.savez(os.path.join(path, "next_step.npz"), **step)
    meta = saver.export_meta_graph()
    sig = tf.compat.v1.saved_model.predict_signature_def(
        {k: v for k, v in feeds.items()}, {"prob": prob, "emb": emb}
    )
    meta.signature_def["serving_default"].CopyFrom(sig)
    with open(os.path.join(path, "model.meta"), "wb") as f:
        f.write(meta.SerializeToString())
    # The outputs of the saved model, read back from disk in a fresh graph.
    tf.compat.v1.reset_default_graph()
    batches = [_sparse_batch(KEYS[:12].reshape(4, 3)), _sparse_batch(_ids(rng, 16))]
    with tf.compat.v1.Session() as sess:
        restorer = tf.compat.v1.train.import_meta_graph(os.path.join(path, "model.meta"))
        restorer.restore(sess, os.path.join(path, "model"))
        names = {k: v.name for k, v in meta.signature_def["serving_default"].outputs.items()}
        outputs = [sess.run(names, {f"{k}:0": v for k, v in b.items()}) for b in batches]
    _save_reference(os.path.join(path, "reference.npz"), "serving_default", batches, outputs)


def build_tf1_strings(out):
    """A string-keyed table (``de.get_variable(key_dtype=tf.string)`` + ``de.embedding_lookup``)."""
    tf.compat.v1.reset_default_graph()
    tf.compat.v1.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    words = np.array([f"item-{k}".encode() for k in KEYS[:20]], dtype=bytes)
    ids = tf.compat.v1.placeholder(tf.string, [None], name="ids")
    labels = tf.compat.v1.placeholder(tf.float32, [None, 1], name="labels")
    table = de.get_variable(
        "word_emb",
        key_dtype=tf.string,
        value_dtype=tf.float32,
        dim=DIM,
        initializer=tf.compat.v1.random_normal_initializer(stddev=0.1, seed=SEED),
    )
    emb = tf.identity(de.embedding_lookup(table, ids, name="word_lookup"), name="emb")
    w = tf.compat.v1.get_variable("head/w", [DIM, 1], initializer=tf.compat.v1.ones_initializer())
    logits = tf.matmul(emb, w)
    loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
    train_op = de.DynamicEmbeddingOptimizer(tf.compat.v1.train.GradientDescentOptimizer(0.5)).minimize(loss)
    saver = tf.compat.v1.train.Saver()
    path = os.path.join(out, "tf1_strings")
    os.makedirs(path)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        for _ in range(4):
            batch = rng.choice(words, size=32)
            sess.run(train_op, {ids: batch, labels: (np.arange(32) % 2).astype(np.float32).reshape(-1, 1)})
        saver.save(sess, os.path.join(path, "model"), write_meta_graph=False)
        meta = saver.export_meta_graph()
        sig = tf.compat.v1.saved_model.predict_signature_def({"ids": ids}, {"emb": emb})
        meta.signature_def["serving_default"].CopyFrom(sig)
        with open(os.path.join(path, "model.meta"), "wb") as f:
            f.write(meta.SerializeToString())
        batches = [{"ids": words[:8]}, {"ids": rng.choice(words, size=8)}]
        outputs = [{"emb": sess.run(emb, {ids: b["ids"]})} for b in batches]
    _save_reference(os.path.join(path, "reference.npz"), "serving_default", batches, outputs)


def main(argv):
    out = argv[1] if len(argv) > 1 else "tests/migrate/fixtures/tfra"
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    tf.compat.v1.disable_eager_execution()
    build_tf1(out, "tf1_sparse", tf.compat.v1.train.GradientDescentOptimizer(0.5))
    build_tf1(out, "tf1_adagrad", tf.compat.v1.train.AdagradOptimizer(0.3))
    build_tf1_strings(out)
    print(f"wrote {out}")


def main_keras(argv):
    out = argv[1] if len(argv) > 1 else "tests/migrate/fixtures/tfra"
    os.makedirs(out, exist_ok=True)
    build_keras(out)
    print(f"wrote {out}/keras_embedding")


if __name__ == "__main__":
    # TF1 graphs need eager execution off for the whole process, the Keras model needs it on:
    # one process each (the script re-runs itself for the Keras part).
    if len(sys.argv) > 2 and sys.argv[2] == "--keras":
        main_keras(sys.argv[:2])
    else:
        main(sys.argv)
        import subprocess

        subprocess.run(
            [
                sys.executable,
                __file__,
                sys.argv[1] if len(sys.argv) > 1 else "tests/migrate/fixtures/tfra",
                "--keras",
            ],
            check=True,
        )
