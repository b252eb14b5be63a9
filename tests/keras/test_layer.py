"""DynamicEmbedding under model.fit: the same training as keras.layers.Embedding, new ids, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphopt  # noqa: F401  (registers the ops)
from graphopt.keras import DynamicEmbedding, convert

VOCAB, DIM, BATCH = 40, 4, 8


def two_table_model(optimizer, run_eagerly=False):
    keras.utils.set_random_seed(7)
    a = keras.Input(shape=(), dtype="int64", name="a")
    b = keras.Input(shape=(2,), dtype="int64", name="b")
    ea = keras.layers.Embedding(VOCAB, DIM, name="ea")(a)
    eb = keras.layers.Flatten()(keras.layers.Embedding(VOCAB, DIM, name="eb")(b))
    x = keras.layers.Dense(6, activation="relu", name="hidden")(keras.layers.Concatenate()([ea, eb]))
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(1, activation="sigmoid", name="out")(x))
    model.compile(optimizer=optimizer, loss="binary_crossentropy", run_eagerly=run_eagerly, jit_compile=False)
    return model


def batches(steps, fixed=()):
    """Batches whose ids are distinct within each table (Keras applies a repeated id's gradients
    one by one, the sparse ops sum them first: see docs/training.md); ``fixed`` ids in every batch."""
    rng = np.random.default_rng(3)
    out = []
    for _ in range(steps):
        pool = np.setdiff1d(np.arange(VOCAB), fixed)
        a = np.concatenate([fixed, rng.permutation(pool)[: BATCH - len(fixed)]]).astype("int64")
        b = rng.permutation(VOCAB)[: 2 * BATCH].reshape(BATCH, 2).astype("int64")
        out.append(({"a": a, "b": b}, rng.integers(0, 2, (BATCH, 1)).astype("float32")))
    return out


def table_rows(layer, ids):
    keys, values, *_ = layer.table.export()
    index = {k: i for i, k in enumerate(keys.numpy())}
    return values.numpy()[[index[i] for i in ids]]


def train_both(optimizer, steps, run_eagerly=False, fixed=()):
    original = two_table_model(optimizer, run_eagerly)
    converted = convert(original)
    if run_eagerly:
        converted.compile(
            optimizer=keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)),
            loss="binary_crossentropy",
            run_eagerly=True,
        )
    losses = []
    for x, y in batches(steps, fixed):
        losses.append((original.train_on_batch(x, y), converted.train_on_batch(x, y)))
    return original, converted, losses


@pytest.mark.parametrize("steps", [1, 10])
@pytest.mark.parametrize(
    "make_optimizer",
    [lambda: keras.optimizers.SGD(0.5), lambda: keras.optimizers.Adagrad(0.3, epsilon=0.0)],
    ids=["sgd", "adagrad"],
)
def test_fit_steps_are_bit_identical_to_embedding(make_optimizer, steps):
    original, converted, losses = train_both(make_optimizer(), steps)
    assert all(a == b for a, b in losses), losses
    for name in ("ea", "eb"):
        expected = original.get_layer(name).embeddings.numpy()
        np.testing.assert_array_equal(table_rows(converted.get_layer(name), range(VOCAB)), expected)
    if isinstance(original.optimizer, keras.optimizers.Adagrad):
        opt = original.optimizer
        accumulator = opt._accumulators[opt._get_variable_index(original.get_layer("ea").embeddings)]
        keys, _, _, _, slots = converted.get_layer("ea").table.export_with_slots()
        order = np.argsort(keys.numpy())
        np.testing.assert_array_equal(slots["accumulator"].numpy()[order], accumulator.numpy())
    np.testing.assert_array_equal(
        original.get_layer("hidden").kernel.numpy(), converted.get_layer("hidden").kernel.numpy()
    )


def test_eager_fit_is_bit_identical_too():
    original, converted, losses = train_both(keras.optimizers.SGD(0.5), 3, run_eagerly=True)
    assert all(a == b for a, b in losses), losses
    np.testing.assert_array_equal(
        table_rows(converted.get_layer("ea"), range(VOCAB)), original.get_layer("ea").embeddings.numpy()
    )


def test_adam_step_one_is_bit_identical_then_lazy():
    original = two_table_model(keras.optimizers.Adam(0.05))
    converted = convert(original)
    data = batches(10)
    (x, y), later = data[0], data[1:]
    assert original.train_on_batch(x, y) == converted.train_on_batch(x, y)
    for name in ("ea", "eb"):
        # Same formula, but Keras takes 1 - beta_1 from Python floats (0.1f) where the op computes
        # it in float32 (1 - 0.9f = 0.100000024): last-bit differences, measured < 1e-6.
        np.testing.assert_allclose(
            table_rows(converted.get_layer(name), range(VOCAB)),
            original.get_layer(name).embeddings.numpy(),
            rtol=0,
            atol=1e-6,
        )
    # An id of step 1 that no later batch holds: the table's lazy Adam leaves its row alone,
    # Keras's dense Adam keeps moving it with its decaying m, v.
    gone = sorted(set(x["a"].tolist()) - {i for xb, _ in later for i in xb["a"].tolist()})[0]
    row_after_1 = table_rows(converted.get_layer("ea"), [gone])
    for xb, yb in later:
        original.train_on_batch(xb, yb)
        converted.train_on_batch(xb, yb)
    np.testing.assert_array_equal(table_rows(converted.get_layer("ea"), [gone]), row_after_1)
    assert not np.array_equal(original.get_layer("ea").embeddings.numpy()[[gone]], row_after_1)
    diff = np.abs(
        table_rows(converted.get_layer("ea"), range(VOCAB)) - original.get_layer("ea").embeddings.numpy()
    )
    print(f"Adam, 10 steps: largest row difference {diff.max():.3g}")
    assert 0 < diff.max() < 0.5  # docs/training.md states the figure of this test


def small_model(layer):
    ids = keras.Input(shape=(None,), dtype=layer.key_dtype.name, name="ids")
    pooled = keras.layers.GlobalAveragePooling1D()(layer(ids))
    model = keras.Model(ids, keras.layers.Dense(1, name="out")(pooled))
    model.compile(optimizer="sgd", loss="mse", jit_compile=False)
    return model


@pytest.mark.parametrize("key_dtype", ["int32", "int64"])
def test_any_id_value_gets_its_row_at_first_sight_and_serving_inserts_nothing(key_dtype):
    layer = DynamicEmbedding(DIM, optimizer=keras.optimizers.SGD(0.1), key_dtype=key_dtype, name="emb")
    model = small_model(layer)
    big = np.iinfo(key_dtype).max
    ids = np.array([[-5, 0, big, 123456]], key_dtype)
    model.predict(ids, verbose=0)
    assert int(layer.table.size()) == 0  # predict looks up only
    model.fit(ids, np.ones((1, 1), "float32"), verbose=0)
    keys = set(layer.table.export()[0].numpy().tolist())
    assert keys == {-5, 0, int(big), 123456}
    assert int(layer.iterations.numpy()) == 1


def test_admission_gives_a_row_at_min_count():
    layer = DynamicEmbedding(DIM, optimizer="sgd", min_count=2, name="emb")
    model = small_model(layer)
    x, y = np.array([[11, 12]]), np.ones((1, 1), "float32")
    model.fit(x, y, verbose=0)
    assert int(layer.table.size()) == 0 and int(layer.table.stats()["pending"]) == 2
    model.fit(x, y, verbose=0)
    assert int(layer.table.size()) == 2


def test_mask_zero_masks_id_zero():
    layer = DynamicEmbedding(DIM, mask_zero=True, name="emb")
    mask = layer.compute_mask(tf.constant([[0, 5, 0]]))
    np.testing.assert_array_equal(mask.numpy(), [[False, True, False]])
    assert DynamicEmbedding(DIM, name="e2").compute_mask(tf.constant([0])) is None


def test_a_layer_without_optimizer_says_how_to_train_it():
    model = small_model(DynamicEmbedding(DIM, name="emb"))
    with pytest.raises(ValueError, match="has no optimizer"):
        model.fit(np.array([[1]]), np.ones((1, 1), "float32"), verbose=0)


def test_unsupported_optimizer_options_are_refused():
    with pytest.raises(ValueError, match="momentum"):
        DynamicEmbedding(DIM, optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    with pytest.raises(ValueError, match="no sparse counterpart"):
        DynamicEmbedding(DIM, optimizer="rmsprop")


def test_learning_rate_schedule_is_followed():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.5, decay_steps=1, decay_rate=0.5)
    original, converted, losses = train_both(keras.optimizers.SGD(schedule), 4)
    assert all(a == b for a, b in losses)
    np.testing.assert_array_equal(
        table_rows(converted.get_layer("ea"), range(VOCAB)), original.get_layer("ea").embeddings.numpy()
    )


def test_keras_file_round_trip_restores_rows_slots_and_steps(tmp_path):
    _, converted, _ = train_both(keras.optimizers.Adam(0.05), 3)
    x, y = batches(1)[0]
    x = {"a": x["a"] + 1000, "b": x["b"]}  # new ids
    converted.train_on_batch(x, y)
    path = str(tmp_path / "m.keras")
    converted.save(path)
    loaded = keras.saving.load_model(path)
    before = converted.get_layer("ea").table.export_with_slots()
    after = loaded.get_layer("ea").table.export_with_slots()
    a, b = np.argsort(before[0].numpy()), np.argsort(after[0].numpy())
    np.testing.assert_array_equal(before[0].numpy()[a], after[0].numpy()[b])
    np.testing.assert_array_equal(before[1].numpy()[a], after[1].numpy()[b])
    for name in ("m", "v"):
        np.testing.assert_array_equal(before[4][name].numpy()[a], after[4][name].numpy()[b])
    assert loaded.get_layer("ea").iterations.numpy() == converted.get_layer("ea").iterations.numpy() == 4
    assert loaded.get_layer("ea").get_config() == converted.get_layer("ea").get_config()
    # Training resumes identically from the file.
    assert converted.train_on_batch(x, y) == loaded.train_on_batch(x, y)
    # The loaded layer owns its own table.
    assert loaded.get_layer("ea").table.handle is not converted.get_layer("ea").table.handle


@pytest.mark.exact
def test_export_serves_find_only_and_matches_predict(tmp_path):
    _, converted, _ = train_both(keras.optimizers.SGD(0.5), 2)
    converted.export(str(tmp_path / "export"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "export"))
    x, _ = batches(1)[0]
    x["a"][0] = 99999  # unseen: the default row, and no insertion
    out = served.serve({k: tf.constant(v) for k, v in x.items()})
    np.testing.assert_array_equal(out.numpy(), converted.predict(x, verbose=0))
    assert int(converted.get_layer("ea").table.size()) == VOCAB


def test_a_fresh_process_loads_a_converted_keras_file_after_import_graphopt(tmp_path):
    import subprocess
    import sys

    _, converted, _ = train_both(keras.optimizers.SGD(0.5), 1)
    path = str(tmp_path / "m.keras")
    converted.save(path)
    code = (
        f"import keras, graphopt; m = keras.saving.load_model({path!r}); "
        "print(int(m.get_layer('ea').table.size()))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == str(VOCAB)


def test_compressed_tables_export_int8_serving_rows_and_put_the_trained_tables_back(tmp_path):
    from graphopt.checkpoint import compress
    from graphopt.keras import compressed_tables

    _, converted, _ = train_both(keras.optimizers.SGD(0.5), 1)
    trained = converted.get_layer("ea").table
    with compressed_tables(converted, "int8") as layers:
        assert {layer.table.row_dtype for layer in layers} == {"int8"}
        converted.export(str(tmp_path / "export"), format="tf_saved_model", verbose=False)
    assert converted.get_layer("ea").table is trained and trained.row_dtype == "float32"
    reader = tf.train.load_checkpoint(str(tmp_path / "export" / "variables" / "variables"))
    codes = [k for k, d in reader.get_variable_to_dtype_map().items() if d == tf.uint8]
    assert codes and all(k.endswith("-values") for k in codes)
    served = tf.saved_model.load(str(tmp_path / "export"))
    x, _ = batches(1)[0]
    got = served.serve({k: tf.constant(v) for k, v in x.items()}).numpy()
    want = converted.predict(x, verbose=0)
    assert 0 < np.abs(got - want).max() < 1e-2  # compressed rows: close, not identical
    # the stored codes are the trained rows quantized
    keys, values, _, _ = (t.numpy() for t in trained.export())
    want_codes = compress.quantize(values, "int8")[0][np.argsort(keys)]

    def stored(k):
        return reader.get_tensor(k)[np.argsort(reader.get_tensor(k[: -len("values")] + "keys"))]

    assert any(
        np.array_equal(stored(k), want_codes) for k in codes if reader.get_tensor(k).shape == want_codes.shape
    )
