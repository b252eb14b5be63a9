"""Prometheus metrics at /monitoring/prometheus/metrics: requests by model, signature, API and
status, latencies, loaded versions, deltas applied and their lag, table rows and bytes."""

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from graphopt.online import DeltaWriter
from graphopt.serve import ModelServer
from tests.online.online_models import BASE_KEYS, save_row_model, train_rows, training_table
from tests.serve.serve_models import rec_inputs, rest_columns, wait_for
from tests.serve.serve_rest_client import call, predict

PATH = "/monitoring/prometheus/metrics"


def scrape(server):
    """{(metric sample name, frozenset of labels): value} of the server's metrics endpoint."""
    with urllib.request.urlopen(server.rest_url + PATH, timeout=30) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name, **labels):
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_requests_are_counted_by_model_signature_api_and_status(rec_server):
    before = scrape(rec_server)
    for _ in range(3):
        assert predict(rec_server, rest_columns(rec_inputs(2)))[0] == 200
    assert predict(rec_server, {"inputs": {"movieId": [1]}})[0] == 400  # missing inputs
    assert call(rec_server, "/v1/models/rec/versions/9")[0] == 404
    after = scrape(rec_server)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    ok = dict(model_name="rec", signature_name="serving_default", api="predict", entrypoint="rest")
    assert grew("graphopt_serve_requests_total", status="OK", **ok) == 3
    assert grew("graphopt_serve_requests_total", status="INVALID_ARGUMENT", **ok) == 1
    assert grew("graphopt_serve_requests_total", api="status", status="NOT_FOUND") == 1
    assert grew("graphopt_serve_request_latency_seconds_count", model_name="rec", api="predict") == 4
    assert value(after, "graphopt_serve_loaded_versions", model_name="rec") == 1
    assert value(after, "graphopt_serve_version_state", model_name="rec", version="3", state="AVAILABLE") == 1


def test_a_post_to_the_metrics_path_is_refused(rec_server):
    status, reply = call(rec_server, PATH, body={})
    assert status == 405 and "use GET" in reply["error"]


def test_tables_and_deltas_are_reported(tmp_path):
    version = save_row_model(tmp_path / "base" / "1")
    ev = training_table(step=0)
    writer = DeltaWriter(version, {"table": ev}, since=0)
    with ModelServer(
        str(tmp_path / "base"), "rows", rest_port=0, grpc_port=0, poll_seconds=0.1, delta_poll_seconds=0.05
    ) as server:
        samples = scrape(server)
        assert value(samples, "graphopt_serve_table_rows", model_name="rows") == len(BASE_KEYS)
        assert value(samples, "graphopt_serve_table_bytes", model_name="rows") > 0
        assert value(samples, "graphopt_serve_deltas_applied_total", model_name="rows") == 0
        train_rows(ev, [100_000], step=1, value=3)  # a key serving lacks: one row more
        writer.write()
        assert wait_for(lambda: value(scrape(server), "graphopt_serve_deltas_applied_total") == 1, timeout=30)
        samples = scrape(server)
        assert value(samples, "graphopt_serve_table_rows", model_name="rows") == len(BASE_KEYS) + 1
        assert 0 <= value(samples, "graphopt_serve_delta_lag_seconds", model_name="rows") < 60


def test_metrics_can_be_turned_off(model_store, tmp_path):
    from tests.serve.serve_models import make_base

    base = make_base(model_store, tmp_path, {1: "rec-v1"})
    with ModelServer(str(base), "rec", rest_port=0, grpc_port=0, metrics=False) as server:
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.rest_url + PATH, timeout=30)
        assert missing.value.code == 404
