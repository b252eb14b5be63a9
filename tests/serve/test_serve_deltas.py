"""graphopt serve applies deltas live: in order, each once, each whole, before AVAILABLE
on a (re)start; refuses bad ones with a log line and keeps serving the last good state."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from graphopt.online import DeltaWriter, TableDelta, write_delta
from graphopt.online.delta_format import MANIFEST
from graphopt.serve import ModelServer
from graphopt.serve.server import READY_LINE
from tests.online.online_models import DIM, base_rows, save_row_model, train_rows, training_table
from tests.serve.serve_models import wait_for
from tests.serve.serve_rest_client import call, predict

IDS = [0, 3, 5, 9, 100, 101]


def rows(server, ids=IDS):
    status, reply = predict(server, {"instances": list(ids)})
    assert status == 200, reply
    return np.asarray(reply["predictions"], np.float32)


def expected(table):
    """What the served RowModel must answer for IDS: {key: row} of the training table, zero rows else."""
    keys, values = (t.numpy() for t in table.export()[:2])
    found = dict(zip(keys.tolist(), values, strict=True))
    return np.stack([found.get(i, np.zeros(DIM, np.float32)) for i in IDS])


@pytest.fixture
def base(tmp_path):
    save_row_model(tmp_path / "base" / "1")
    return tmp_path / "base"


def serving(base, **kwargs):
    return ModelServer(
        str(base), "rows", rest_port=0, grpc_port=0, poll_seconds=0.1, delta_poll_seconds=0.05, **kwargs
    )


def last_applied(server):
    status, reply = call(server, "/v1/models/rows")
    assert status == 200, reply
    delta = reply.get("graphopt", {}).get("last_applied_delta")
    return delta["sequence"] if delta else 0


def test_deltas_apply_live_in_order_and_status_reports_the_last(base):
    version = str(base / "1")
    ev = training_table(step=0)
    writer = DeltaWriter(version, {"table": ev}, since=0)
    with serving(base) as server:
        np.testing.assert_array_equal(rows(server), expected(ev))
        train_rows(ev, [3, 100], step=1, value=7)  # an update and a key serving lacks (inserted)
        ev.remove(tf.constant([5], tf.int64))  # a removal reaches serving too
        assert writer.write().endswith("deltas/1")
        assert wait_for(lambda: last_applied(server) == 1, timeout=10)
        np.testing.assert_array_equal(rows(server), expected(ev))
        assert rows(server)[IDS.index(5)].tolist() == [0.0] * DIM
        train_rows(ev, [9, 101], step=2, value=-1)
        ev.evict(step=2, max_rows=len(ev.export()[0]) - 1)  # evicts the least recently used key
        writer.write()
        assert wait_for(lambda: last_applied(server) == 2, timeout=10)
        np.testing.assert_array_equal(rows(server), expected(ev))

        status, reply = call(server, "/v1/models/rows")
        entry = reply["model_version_status"][0]
        assert entry["state"] == "AVAILABLE" and entry["status"]["error_code"] == "OK"
        assert entry["status"]["error_message"].startswith("delta 2 applied")
        assert reply["graphopt"]["last_applied_delta"]["upserts"] == 2
        with grpc.insecure_channel(server.grpc_target) as channel:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "rows"
            response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
        assert response.model_version_status[0].status.error_message.startswith("delta 2 applied")


def test_a_restarted_server_applies_the_deltas_on_disk_before_it_answers(base):
    version = str(base / "1")
    ev = training_table(step=0)
    writer = DeltaWriter(version, {"table": ev}, since=0)
    for step in (1, 2, 3):
        train_rows(ev, [step, 100 + step], step=step, value=step * 10)
        writer.write()
    with serving(base) as server:
        status, reply = call(server, "/v1/models/rows")
        assert reply["model_version_status"][0]["state"] == "AVAILABLE"
        assert reply["graphopt"]["last_applied_delta"]["sequence"] == 3
        np.testing.assert_array_equal(
            rows(server, [1, 2, 3, 101, 103]),
            np.repeat(np.array([[10], [20], [30], [10], [30]], np.float32), DIM, 1),
        )


def _corrupt(path):
    data = path / "table-0.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))


def _truncate(path):
    data = path / "table-0.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-7])


def _other_model(path):
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["model_fingerprint"] = "sha256:" + "0" * 64
    (path / MANIFEST).write_text(json.dumps(manifest))


def _other_version(path):
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["base_version"] = 7
    (path / MANIFEST).write_text(json.dumps(manifest))


def _int32_keys(path):
    """Rewrite the bundle with int32 keys and a manifest whose checksums match: only the dtype is wrong."""
    from graphopt.online.delta_format import file_crc32c

    prefix = str(path / "table-0")
    reader = tf.train.load_checkpoint(prefix)
    tensors = {n: reader.get_tensor(n) for n in ("keys", "values", "versions", "removed_keys")}
    tensors["keys"] = tensors["keys"].astype(np.int32)
    for name in os.listdir(path):
        if name.startswith("table-0"):
            os.remove(path / name)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=list(tensors),
        shape_and_slices=[""] * 4,
        tensors=[tf.constant(v) for v in tensors.values()],
    )
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"] = {
        n: {"bytes": os.path.getsize(path / n), "crc32c": file_crc32c(path / n)}
        for n in os.listdir(path)
        if n != MANIFEST
    }
    (path / MANIFEST).write_text(json.dumps(manifest))


def _partial(path):
    os.remove(path / MANIFEST)  # a delta still being copied into place: files, no manifest yet


FAULTS = {
    "corrupted": (_corrupt, "CRC32C"),
    "truncated": (_truncate, "truncated"),
    "another model": (_other_model, "another model"),
    "another version": (_other_version, "made for version 7"),
    "int32 keys": (_int32_keys, "keys of dtype int32"),
    "partial": (_partial, "incomplete"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_bad_delta_is_refused_and_the_last_good_state_kept(base, fault, caplog):
    version = str(base / "1")
    ev = training_table(step=0)
    writer = DeltaWriter(version, {"table": ev}, since=0)
    train_rows(ev, [3], step=1, value=5)
    writer.write()
    good = expected(ev)
    train_rows(ev, [0, 100], step=2, value=9)
    ev.remove(tf.constant([9], tf.int64))
    bad = base / "1" / "deltas" / "2"
    staged = base / "staged-2"
    writer.write()
    shutil.move(str(bad), str(staged))  # made bad outside, then moved in whole
    damage, message = FAULTS[fault]
    damage(staged)
    with caplog.at_level(logging.INFO, logger="graphopt"), serving(base) as server:
        assert last_applied(server) == 1
        shutil.move(str(staged), str(bad))
        refused = "delta 2 of version 1 of rows refused, still serving delta 1"
        assert wait_for(lambda: any(refused in r.getMessage() for r in caplog.records), timeout=10)
        line = next(r.getMessage() for r in caplog.records if refused in r.getMessage())
        assert message in line
        np.testing.assert_array_equal(rows(server), good)  # nothing of delta 2 applied
        status, reply = call(server, "/v1/models/rows")
        assert reply["graphopt"]["refused_delta"]["sequence"] == 2
        assert reply["model_version_status"][0]["state"] == "AVAILABLE"


def test_a_partial_delta_applies_once_complete_and_a_gap_waits(base, caplog):
    version = str(base / "1")
    ev = training_table(step=0)
    writer = DeltaWriter(version, {"table": ev}, since=0)
    train_rows(ev, [1], step=1, value=1)
    first = writer.write()
    train_rows(ev, [2], step=2, value=2)
    second = writer.write()
    hidden = str(base / "held-2")
    shutil.move(second, hidden)
    manifest = os.path.join(first, MANIFEST)
    shutil.move(manifest, str(base / "held-manifest"))
    with caplog.at_level(logging.INFO, logger="graphopt"), serving(base) as server:
        assert last_applied(server) == 0  # delta 1 has no manifest yet
        shutil.move(str(base / "held-manifest"), manifest)
        assert wait_for(lambda: last_applied(server) == 1, timeout=10)
        # delta 3 before delta 2: a gap, nothing applied until 2 arrives
        train_rows(ev, [4], step=3, value=3)
        shutil.move(hidden, os.path.join(version, "deltas", "3"))  # misnamed: says it is delta 2
        os.makedirs(os.path.join(version, "deltas", "5"))
        assert wait_for(
            lambda: any("delta 2" in r.getMessage() and "missing" in r.getMessage() for r in caplog.records),
            timeout=10,
        )
        assert last_applied(server) == 1
        shutil.move(os.path.join(version, "deltas", "3"), os.path.join(version, "deltas", "2"))
        assert wait_for(lambda: last_applied(server) == 2, timeout=10)
        assert rows(server, [2]).tolist() == [[2.0] * DIM]


def test_wrong_dim_and_unknown_table_are_refused(base, caplog):
    version = str(base / "1")
    write_delta(
        version,
        [
            TableDelta(
                "table",
                np.array([1], np.int64),
                np.ones((1, DIM + 1), np.float32),
                np.array([1], np.int64),
                np.array([], np.int64),
            )
        ],
    )
    with caplog.at_level(logging.INFO, logger="graphopt"), serving(base) as server:
        assert last_applied(server) == 0
        assert any("has dim 5, the served table has dim 4" in r.getMessage() for r in caplog.records)
        np.testing.assert_array_equal(rows(server, [1]), base_rows([1]))
    shutil.rmtree(os.path.join(version, "deltas"))
    write_delta(
        version,
        [
            TableDelta(
                "other",
                np.array([1], np.int64),
                np.ones((1, DIM), np.float32),
                np.array([1], np.int64),
                np.array([], np.int64),
            )
        ],
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="graphopt"), serving(base) as server:
        assert last_applied(server) == 0
        assert any(
            "table 'other', which the served model does not have" in r.getMessage() for r in caplog.records
        )


def test_a_table_is_seen_before_or_after_a_delta_never_half(base):
    """Readers racing 20,000-key deltas (every row -> 0, -> 1, ...) see one whole state per lookup."""
    keys = np.arange(20_000, dtype=np.int64)
    version = str(base / "1")
    shutil.rmtree(version)
    save_row_model(version, keys=keys)
    zeros = TableDelta("table", keys, np.zeros((len(keys), DIM), np.float32), keys, np.array([], np.int64))
    ones = TableDelta("table", keys, np.ones((len(keys), DIM), np.float32), keys, np.array([], np.int64))
    with serving(base) as server:
        import tensorflow as tf  # noqa: F811 - the served table, read like a request does

        handle = server.repository.get().deltas.handles["table"]
        from graphopt.ops import load_library

        lib = load_library()
        seen, stop = set(), threading.Event()

        def reader():
            sample = keys[::97]  # 207 keys: a small find, which locks one shard per key
            states = {
                "base": base_rows(sample),
                "zeros": np.zeros((len(sample), DIM), np.float32),
                "ones": np.ones((len(sample), DIM), np.float32),
            }
            while not stop.is_set():
                found = lib.graphopt_ev_find(handle, tf.constant(sample), dim=DIM).numpy()
                seen.add(next((k for k, v in states.items() if np.array_equal(found, v)), "mixed"))

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for sequence, part in enumerate([zeros, ones] * 3, start=1):
            write_delta(version, [part])
            assert wait_for(lambda s=sequence: last_applied(server) == s, timeout=20)
        stop.set()
        for t in threads:
            t.join()
        assert "mixed" not in seen and {"zeros", "ones"} <= seen, seen


class GatherModel(tf.Module):
    def __init__(self):
        super().__init__()
        self.embedding = tf.Variable(np.ones((50, DIM), np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
    def serve(self, ids):
        return {"rows": tf.gather(self.embedding, ids)}


def test_a_stock_model_says_it_cannot_take_deltas(tmp_path, caplog):
    from graphopt.rewrite import rewrite_model

    model = GatherModel()
    tf.saved_model.save(model, str(tmp_path / "gather"), signatures={"serving_default": model.serve})
    stock = tmp_path / "stock"
    rewrite_model(str(tmp_path / "gather"), str(stock / "1"), target="stock")
    deltas = stock / "1" / "deltas" / "1"
    deltas.mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger="graphopt"), serving(stock):
        assert any(
            "--target stock" in r.getMessage() and "cannot take deltas" in r.getMessage()
            for r in caplog.records
        )


def test_sigkill_while_applying_then_restart_ends_at_the_last_complete_delta(base, tmp_path):
    """A server killed while it applies a big delta restarts into that delta's full state."""
    keys = np.arange(200_000, dtype=np.int64)
    version = str(base / "1")
    ev = training_table(step=0)
    writer = DeltaWriter(version, {"table": ev}, since=0)
    train_rows(ev, [1], step=1, value=1)
    writer.write()
    train_rows(ev, keys, step=2, value=2)  # delta 2: 200,000 rows
    writer.write()
    command = [
        sys.executable,
        "-m",
        "graphopt",
        "serve",
        str(base),
        "--model-name",
        "rows",
        "--rest-port",
        "0",
        "--grpc-port",
        "0",
        "--delta-poll-seconds",
        "0.05",
        "--poll-seconds",
        "0.1",
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:
            if "applying delta 2" in line:
                first.send_signal(signal.SIGKILL)
                break
    finally:
        first.kill()
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = READY_LINE.search(second.stdout.readline().strip())
        assert ready, "server did not start"

        class Address:
            rest_url, name = ready.group("rest_url"), "rows"

        assert last_applied(Address) == 2
        np.testing.assert_array_equal(rows(Address), expected(ev))
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
