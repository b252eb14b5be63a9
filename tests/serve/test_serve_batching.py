"""Request batching: BatchingParameters files, the scheduler's merge / pad / split / refuse rules,
and a batching server answering concurrent clients as a direct call does."""

import threading
import time
from concurrent import futures

import numpy as np
import pytest

from graphopt.serve import ModelServer
from graphopt.serve.batching import BatchingParameters, BatchScheduler, _Task, merge, read_batching_parameters
from graphopt.serve.config_files import ConfigFileError
from graphopt.serve.errors import BadRequest, ServerBusy
from tests.serve.serve_models import direct_call, make_base, rec_inputs, rest_columns
from tests.serve.serve_rest_client import call, predict


def _write(tmp_path, text, name="batching.config"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_tf_serving_batching_file_parses_with_every_field(tmp_path):
    path = _write(
        tmp_path,
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }\n"
        "max_enqueued_batches { value: 7 }\nnum_batch_threads { value: 3 }\n"
        'thread_pool_name { value: "pool" }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 32\n'
        "pad_variable_length_inputs: true\n",
    )
    params = read_batching_parameters(path)
    assert params == BatchingParameters(32, 1000, 7, 3, "pool", (8, 32), True)
    assert [params.padded_size(n) for n in (1, 8, 9, 32)] == [8, 8, 32, 32]


@pytest.mark.parametrize(
    "text, field",
    [
        ("max_batch_size { value: 0 }", "field max_batch_size"),
        ("num_batch_threads { value: -1 }", "field num_batch_threads"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2", "allowed_batch_sizes"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: 4", "field allowed_batch_sizes"),
        ("max_batch_size: 8", "max_batch_size"),  # a wrapper field written as a scalar
        ("max_batch_sise { value: 8 }", "max_batch_sise"),
    ],
)
def test_a_bad_batching_file_is_refused_naming_file_and_field(tmp_path, text, field):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigFileError) as refused:
        read_batching_parameters(path)
    message = str(refused.value)
    assert path in message and field in message and "\n" not in message


class _Recording:
    """A stand-in signature: each run records its batch; outputs echo the ids and a scalar sum."""

    name = "serving_default"

    def __init__(self, gate=None):
        self.batches = []
        self.gate = gate

    def compute(self, arrays):
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append({k: v.copy() for k, v in arrays.items()})
        ids = arrays["ids"]
        return {"echo": ids * 10, "rows": np.full(len(ids), len(ids))}


def _submit(scheduler, signature, rows_list, key="k"):
    pool = futures.ThreadPoolExecutor(len(rows_list))
    return [
        pool.submit(scheduler.run, key, signature, {"ids": np.arange(start, start + n, dtype=np.int64)})
        for start, n in rows_list
    ]


def _wait_queued(scheduler, tasks):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with scheduler._ready:
            queued = sum(len(b.tasks) for q in scheduler._queues.values() for b in q.batches)
        if queued >= tasks:
            return
        time.sleep(0.005)
    raise AssertionError("the requests did not queue")


def test_concurrent_requests_merge_pad_to_an_allowed_size_and_split_back():
    gate = threading.Event()
    signature = _Recording(gate)
    scheduler = BatchScheduler(
        BatchingParameters(max_batch_size=8, num_batch_threads=1, allowed_batch_sizes=(4, 8))
    )
    try:
        blocker = _submit(scheduler, signature, [(100, 1)])  # occupies the only batch thread
        time.sleep(0.2)
        waiting = _submit(scheduler, signature, [(0, 2), (2, 3)])
        _wait_queued(scheduler, 2)
        gate.set()
        answers = [f.result(10) for f in waiting]
        blocker[0].result(10)
    finally:
        scheduler.stop()
    # the blocker ran alone (padded to 4 with its first example); the two others ran together
    assert [len(b["ids"]) for b in signature.batches] == [4, 8]
    merged = signature.batches[1]["ids"]
    assert sorted(merged[:5].tolist()) == [0, 1, 2, 3, 4]
    assert (merged[5:] == merged[0]).all()  # padding repeats the batch's first example
    for (start, n), answer in zip([(0, 2), (2, 3)], answers, strict=True):
        np.testing.assert_array_equal(answer["echo"], np.arange(start, start + n) * 10)
        assert (answer["rows"] == 8).all()


def test_a_request_over_max_batch_size_is_refused_or_split_and_joined():
    signature = _Recording()
    refusing = BatchScheduler(BatchingParameters(max_batch_size=4, num_batch_threads=1))
    try:
        with pytest.raises(BadRequest, match="Task size 6 is larger than maximum input batch size 4"):
            refusing.run("k", signature, {"ids": np.arange(6, dtype=np.int64)})
    finally:
        refusing.stop()
    splitting = BatchScheduler(
        BatchingParameters(
            max_batch_size=8,
            num_batch_threads=1,
            enable_large_batch_splitting=True,
            max_execution_batch_size=4,
        )
    )
    try:
        answer = splitting.run("k", signature, {"ids": np.arange(6, dtype=np.int64)})
    finally:
        splitting.stop()
    np.testing.assert_array_equal(answer["echo"], np.arange(6) * 10)
    assert sorted(len(b["ids"]) for b in signature.batches) == [2, 4]


def test_a_full_queue_answers_unavailable():
    gate = threading.Event()
    signature = _Recording(gate)
    scheduler = BatchScheduler(
        BatchingParameters(max_batch_size=2, num_batch_threads=1, max_enqueued_batches=1)
    )
    try:
        running = _submit(scheduler, signature, [(0, 2)])
        time.sleep(0.2)  # taken by the thread, which waits at the gate
        queued = _submit(scheduler, signature, [(2, 2)])  # fills the one batch the queue may hold
        _wait_queued(scheduler, 1)
        with pytest.raises(ServerBusy, match="queue .* is full") as busy:
            scheduler.run("k", signature, {"ids": np.arange(1, dtype=np.int64)})
        assert busy.value.http_status == 503 and busy.value.grpc_code.name == "UNAVAILABLE"
        gate.set()
        assert running[0].result(10) and queued[0].result(10)
    finally:
        gate.set()
        scheduler.stop()


def test_requests_of_other_shapes_queue_apart_unless_padding_is_on():
    signature = _Recording()
    a = {"ids": np.zeros((1, 2), np.int64)}
    b = {"ids": np.ones((1, 3), np.int64)}
    merged, size = merge([_Task(a, 1), _Task(b, 1)], BatchingParameters(pad_variable_length_inputs=True))
    assert size == 2
    np.testing.assert_array_equal(merged["ids"], [[0, 0, 0], [1, 1, 1]])  # padded with its first element
    scheduler = BatchScheduler(BatchingParameters(num_batch_threads=1))
    try:
        assert scheduler.run("k", signature, a)["echo"].shape == (1, 2)
    finally:
        scheduler.stop()


@pytest.fixture(scope="module")
def batching_server(model_store, tmp_path_factory):
    base = make_base(model_store, tmp_path_factory.mktemp("batched"), {1: "rec-v1"})
    params = BatchingParameters(max_batch_size=16, batch_timeout_micros=2000, num_batch_threads=1)
    with ModelServer(str(base), "rec", rest_port=0, grpc_port=0, batching=params) as server:
        yield server


def test_a_batching_server_answers_concurrent_clients_like_a_direct_call(batching_server):
    version_path = f"{batching_server.repository.base_path}/1"
    requests = [rec_inputs(1 + i % 3, seed=i) for i in range(24)]
    with futures.ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda inputs: predict(batching_server, rest_columns(inputs)), requests))
    for inputs, (status, reply) in zip(requests, replies, strict=True):
        assert status == 200, reply
        expected = direct_call(version_path, inputs)["output_0"]
        # batched and unbatched runs may differ by the kernels' batch-size dependence (docs/serving.md)
        np.testing.assert_allclose(np.asarray(reply["outputs"], np.float32), expected, rtol=1e-6, atol=1e-7)
    _, text = _metrics(batching_server)
    batches = _sample(text, "graphopt_serve_batch_size_count")
    assert 0 < batches < 24  # requests were merged


def test_a_batching_server_refuses_a_request_over_max_batch_size(batching_server):
    status, reply = predict(batching_server, rest_columns(rec_inputs(17)))
    assert status == 400 and "larger than maximum input batch size 16" in reply["error"]


def _metrics(server):
    import urllib.request

    with urllib.request.urlopen(server.rest_url + "/monitoring/prometheus/metrics", timeout=30) as reply:
        return reply.headers["Content-Type"], reply.read().decode()


def _sample(text, name):
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_batching_status_endpoint_still_answers(batching_server):
    status, reply = call(batching_server, "/v1/models/rec")
    assert status == 200 and reply["model_version_status"][0]["state"] == "AVAILABLE"
