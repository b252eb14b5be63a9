"""A delta carries the dense variables that changed with the rows, and serving applies both at once."""

import json
import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from graphopt import ops
from graphopt.errors import GraphoptError
from graphopt.online import DeltaWriter, TableDelta, write_delta
from graphopt.online.delta_format import MANIFEST, DenseDelta
from graphopt.online.writer import delta_from_checkpoint
from graphopt.serve.deltas import DeltaFeed
from graphopt.serve.repository import load_version
from tests.online.online_models import BASE_KEYS, DIM, base_rows

IDS = np.array([0, 2, 5, 50], np.int64)


class ScaledRows(tf.Module):
    """Each id's row times a dense ``scale``: serving computes what training does only when a delta
    brings both."""

    def __init__(self, scale=1.0, scale_dim=DIM):
        super().__init__()
        self.table = ops.EmbeddingVariable(DIM, initializer="zeros")
        self.table.insert(tf.constant(BASE_KEYS), tf.constant(base_rows(BASE_KEYS)))
        self.table.lookup(tf.constant(BASE_KEYS), insert_missing=True, step=0)
        self.scale = tf.Variable(tf.fill([scale_dim], scale), name="scale")
        self.steps = tf.Variable(0, dtype=tf.int64, name="steps")  # an integer: no delta carries it

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
    def serve(self, ids):
        return {"rows": self.table.lookup(ids) * self.scale[:DIM]}


def save(model, path):
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve})
    return str(path)


def trained_copy(path):
    """The served model trained on: rows of 2 and 50 at step 1, another scale, another step count."""
    model = ScaledRows()
    keys = tf.constant([2, 50], tf.int64)
    model.table.lookup(keys, insert_missing=True, step=1)
    model.table.insert(keys, tf.fill([2, DIM], 3.0))
    model.scale.assign([0.5, 2.0, -1.0, 4.0])
    model.steps.assign(7)
    return model, save(model, path)


def serve(version):
    servable = load_version(version, 1)
    servable.deltas = DeltaFeed("m", 1, version, servable.loaded, servable.gate)
    return servable


def answer(servable):
    return servable.signature("serving_default").run({"ids": IDS})["rows"]


def test_served_computes_what_the_trained_model_computes_after_the_delta(tmp_path):
    version = save(ScaledRows(), tmp_path / "m" / "1")
    trained, source = trained_copy(tmp_path / "trained")
    want = trained.serve(tf.constant(IDS))["rows"].numpy()
    servable = serve(version)
    assert not np.array_equal(answer(servable), want)

    path = delta_from_checkpoint(source, version, since=0)
    manifest = json.load(open(os.path.join(path, MANIFEST)))
    assert manifest["format_version"] == 2
    assert [(d["name"], d["dtype"], d["shape"]) for d in manifest["dense"]] == [("scale", "float32", [DIM])]
    assert servable.deltas.poll() == 1
    np.testing.assert_array_equal(answer(servable), want)
    assert servable.deltas.last_delta["dense_variables"] == 1
    # Nothing changed since: no delta; the replay of delta 1 is what serving holds.
    assert delta_from_checkpoint(source, version, since=1) is None


def test_a_delta_without_dense_variables_stays_format_version_1(tmp_path):
    version = save(ScaledRows(), tmp_path / "m" / "1")
    path = write_delta(version, [TableDelta("table", [2], np.ones((1, DIM)), [1], [])])
    assert json.load(open(os.path.join(path, MANIFEST)))["format_version"] == 1


@pytest.mark.parametrize(
    "dense, reason",
    [
        (
            DenseDelta("scale", np.ones(3, np.float32)),
            "dense variable 'scale' is float32 [3], the served variable is float32 [4]",
        ),
        (DenseDelta("scale", np.ones(DIM, np.float64)), "is float64 [4], the served variable is float32 [4]"),
        (
            DenseDelta("bias", np.ones(DIM, np.float32)),
            "dense variable 'bias', which the served model does not have",
        ),
    ],
)
def test_a_delta_whose_dense_variable_serving_cannot_take_is_refused_whole(tmp_path, dense, reason):
    version = save(ScaledRows(), tmp_path / "m" / "1")
    servable = serve(version)
    before = answer(servable)
    write_delta(version, [TableDelta("table", [2], np.full((1, DIM), 9.0), [1], [])], dense=[dense])
    assert servable.deltas.poll() == 0
    assert reason in servable.deltas.refused["reason"]
    np.testing.assert_array_equal(answer(servable), before)  # its rows are not applied either


def test_delta_from_checkpoint_refuses_a_dense_variable_of_another_shape(tmp_path):
    version = save(ScaledRows(), tmp_path / "m" / "1")
    source = save(ScaledRows(scale=2.0, scale_dim=DIM + 1), tmp_path / "other")
    with pytest.raises(GraphoptError, match=r"dense variable scale of .* is float32 \[5\], the served scale"):
        delta_from_checkpoint(source, version, since=0)


def test_a_delta_waits_for_the_requests_running_and_applies_whole(tmp_path):
    version = save(ScaledRows(), tmp_path / "m" / "1")
    _, source = trained_copy(tmp_path / "trained")
    servable = serve(version)
    delta_from_checkpoint(source, version, since=0)
    applier = threading.Thread(target=servable.deltas.poll)
    with servable.gate.request():  # a request in flight
        applier.start()
        time.sleep(0.3)
        assert servable.deltas.applied == 0 and applier.is_alive()
    applier.join(timeout=10)
    assert servable.deltas.applied == 1


def test_delta_writer_carries_the_dense_variables_it_is_given_when_they_change(tmp_path):
    version = save(ScaledRows(), tmp_path / "m" / "1")
    servable = serve(version)
    model = ScaledRows()
    writer = DeltaWriter(version, {"table": model.table}, since=0, dense=model)
    assert sorted(writer.dense) == ["scale"]  # steps is an integer: training state, not served
    assert writer.write() is None  # nothing changed yet
    model.scale.assign([2.0, 2.0, 2.0, 2.0])
    path = writer.write()  # a delta of the dense variable alone
    assert [d["name"] for d in json.load(open(os.path.join(path, MANIFEST)))["dense"]] == ["scale"]
    assert writer.write() is None  # sent once
    model.table.lookup(tf.constant([2], tf.int64), insert_missing=True, step=1)
    model.table.insert(tf.constant([2], tf.int64), tf.fill([1, DIM], -2.0))
    model.scale.assign([1.0, 0.5, 0.25, 3.0])
    writer.write()
    assert servable.deltas.poll() == 2
    np.testing.assert_array_equal(answer(servable), model.serve(tf.constant(IDS))["rows"].numpy())
    with pytest.raises(GraphoptError, match=r"dense variable scale is float32 \[5\], the served one"):
        DeltaWriter(version, {"table": model.table}, since=0, dense={"scale": tf.Variable(tf.zeros([5]))})
