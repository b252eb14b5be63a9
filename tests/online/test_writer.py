"""DeltaWriter and DeltaCallback: what changed, what was removed (evicted, capped, removed), once each."""

import numpy as np
import pytest
import tensorflow as tf

import graphopt
from graphopt.errors import GraphoptError
from graphopt.online import DeltaWriter, read_delta
from graphopt.online.delta_format import model_fingerprint
from tests.online.online_models import BASE_KEYS, DIM, save_row_model, train_rows, training_table


@pytest.fixture
def version(tmp_path):
    return save_row_model(tmp_path / "base" / "1")


def read(version, path):
    (table,) = read_delta(path, 1, model_fingerprint(version), {"table": DIM}).tables
    return table


def test_each_delta_holds_the_rows_changed_since_the_last_and_the_keys_gone(version):
    ev = training_table(step=0)
    writer = DeltaWriter(version, {"table": ev}, since=0)
    train_rows(ev, [2, 50], step=1, value=3)
    ev.remove(tf.constant([4], tf.int64))
    first = read(version, writer.write())
    assert sorted(first.keys.tolist()) == [2, 50] and first.removed_keys.tolist() == [4]
    assert first.versions.tolist() == [1, 1] and (np.asarray(first.values) == 3).all()
    assert writer.write() is None  # nothing changed: no delta
    train_rows(ev, [50, 60], step=2, value=4)
    evicted = ev.evict(step=2, ttl=1).numpy()  # every key last seen at step 0
    assert len(evicted) == len(BASE_KEYS) - 2
    second = read(version, writer.write())
    assert sorted(second.keys.tolist()) == [50, 60]
    assert sorted(second.removed_keys.tolist()) == sorted(evicted.tolist())  # 4 went in delta 1


def test_a_new_writer_continues_from_the_deltas_on_disk(version):
    ev = training_table(step=0)
    DeltaWriter(version, {"table": ev}, since=0)
    ev.remove(tf.constant([1, 2], tf.int64))
    DeltaWriter(version, {"table": ev}, since=0).write()
    ev.remove(tf.constant([3], tf.int64))
    path = DeltaWriter(version, {"table": ev}, since=0).write()
    assert path.endswith("deltas/2") and read(version, path).removed_keys.tolist() == [3]


def test_keys_the_row_cap_evicts_reach_serving(version):
    ev = graphopt.EmbeddingVariable(DIM, initializer="zeros", max_rows=64)
    writer = DeltaWriter(version, {"table": ev})
    ev.lookup(tf.range(1000, 1100, dtype=tf.int64), insert_missing=True, step=1)  # over the cap: rows evicted
    delta = read(version, writer.write())
    assert (
        len(delta.keys) == ev.size().numpy() <= 64
        and sorted(delta.removed_keys.tolist()) == BASE_KEYS.tolist()
    )
    kept = set(ev.export()[0].numpy().tolist())
    ev.lookup(tf.range(2000, 2010, dtype=tf.int64), insert_missing=True, step=2)
    delta = read(version, writer.write())
    assert set(delta.removed_keys.tolist()) == kept - set(ev.export()[0].numpy().tolist())


def test_tables_are_checked_against_the_served_model(version):
    with pytest.raises(GraphoptError, match="not a table of the served model.*its tables are table"):
        DeltaWriter(version, {"other": training_table()})
    with pytest.raises(GraphoptError, match="has dim 8, the served table has dim 4"):
        DeltaWriter(version, {"table": graphopt.EmbeddingVariable(8)})
    with pytest.raises(GraphoptError, match="no EmbeddingVariables"):
        DeltaWriter(version, [])


def test_a_module_names_its_tables_by_object_path(version):
    module = tf.Module()
    module.table = training_table(step=0)
    writer = DeltaWriter(version, module, since=0)
    assert list(writer.tables) == ["table"]


def test_keras_callback_writes_every_n_steps_and_at_the_end(version):
    import keras

    ev = training_table(step=0)
    step = tf.Variable(0, dtype=tf.int64)

    class Lookup(keras.layers.Layer):
        def call(self, ids):
            step.assign_add(1)
            rows = ev.lookup(tf.cast(ids, tf.int64), insert_missing=True, step=step)
            return tf.reduce_sum(rows, axis=-1, keepdims=True)

    ids = keras.Input(shape=(), dtype="int64")
    model = keras.Model(ids, keras.layers.Dense(1)(Lookup()(ids)))
    model.compile(optimizer="sgd", loss="mse")
    callback = graphopt.online.DeltaCallback(version, {"table": ev}, every_steps=2, since=0)
    model.fit(
        np.arange(100, 108, dtype=np.int64),
        np.zeros(8, np.float32),
        batch_size=2,
        epochs=1,
        verbose=0,
        callbacks=[callback],
    )
    assert len(callback.written) == 2  # after batches 2 and 4; nothing new at the end
    keys = np.concatenate([read(version, p).keys for p in callback.written])
    assert sorted(keys.tolist()) == list(range(100, 108))
    with pytest.raises(GraphoptError, match="every_steps, every_seconds"):
        graphopt.online.DeltaCallback(version)
