"""Prometheus metrics of one server, served as text at TF Serving's /monitoring/prometheus/metrics.

Request counters and histograms are updated on the request path (a few microseconds: one
labelled child per (model, signature, api, status), looked up in a dict); what describes the
served state (versions, deltas, tables) is read when the endpoint is scraped, by a collector, so
it costs requests nothing. Each server has its own registry (several servers may share a process,
as in the tests). docs/serving.md lists every metric and its TF Serving counterpart.
"""

import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

METRICS_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# seconds; from 100 us (a direct call of a small model) to 10 s
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServerMetrics:
    """The metrics of one ModelServer; ``models`` is its ModelSet (read at scrape time)."""

    def __init__(self, models):
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "graphopt_serve_requests",
            "Predict and metadata/status requests answered, by model, signature, API and status "
            "(TF Serving: :tensorflow:serving:request_count).",
            ("model_name", "signature_name", "api", "entrypoint", "status"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "graphopt_serve_request_latency_seconds",
            "Time from a request's arrival in the handler to its reply being encoded "
            "(TF Serving: :tensorflow:serving:request_latency).",
            ("model_name", "api", "entrypoint"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch_rows = Histogram(
            "graphopt_serve_batch_size",
            "Examples per batch run, before padding (TF Serving: "
            ":tensorflow:serving:batching_session:input_batch_size).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._batch_padding = Histogram(
            "graphopt_serve_batch_padding_size",
            "Padding examples added to reach an allowed batch size (TF Serving: "
            ":tensorflow:serving:batching_session:padding_size).",
            buckets=(0,) + BATCH_BUCKETS,
            registry=self.registry,
        )
        self._queue_delay = Histogram(
            "graphopt_serve_batch_queue_delay_seconds",
            "Time a request waited in the batch queue before its batch ran (TF Serving: "
            ":tensorflow:serving:batching_session:queuing_latency).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(models))
        self._children = {}

    def request(self, model, signature, api, entrypoint, status, seconds):
        """Count one request and its latency. ``api``: predict, metadata or status; ``entrypoint``:
        grpc or rest; ``status``: OK or the gRPC code's name (for REST too: one vocabulary)."""
        key = (model, signature, api, entrypoint, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (
                self._requests.labels(model, signature, api, entrypoint, status),
                self._latency.labels(model, api, entrypoint),
            )
        child[0].inc()
        child[1].observe(seconds)

    def batch(self, rows, padded_rows, queue_delays):
        """Record one batch run: its examples, its padding and each request's wait in the queue."""
        self._batch_rows.observe(rows)
        self._batch_padding.observe(padded_rows - rows)
        for delay in queue_delays:
            self._queue_delay.observe(delay)

    def exposition(self):
        """The Prometheus text of every metric (bytes)."""
        return generate_latest(self.registry)


class _StateCollector:
    """Served versions, deltas and tables, read from the models when the endpoint is scraped."""

    def __init__(self, models):
        self.models = models

    def collect(self):
        versions = GaugeMetricFamily(
            "graphopt_serve_loaded_versions",
            "Versions of each model loaded and answering requests.",
            labels=("model_name",),
        )
        state = GaugeMetricFamily(
            "graphopt_serve_version_state",
            "1 for each version's state as GetModelStatus reports it (AVAILABLE, LOADING, END, ...).",
            labels=("model_name", "version", "state"),
        )
        applied = CounterMetricFamily(
            "graphopt_serve_deltas_applied",
            "Deltas applied to each served version since it was loaded (its last sequence).",
            labels=("model_name", "version"),
        )
        lag = GaugeMetricFamily(
            "graphopt_serve_delta_lag_seconds",
            "Seconds from the last applied delta's creation to now: how stale the served rows are.",
            labels=("model_name", "version"),
        )
        apply_seconds = GaugeMetricFamily(
            "graphopt_serve_delta_apply_seconds",
            "Seconds the last applied delta took from reading it to publishing it.",
            labels=("model_name", "version"),
        )
        rows = GaugeMetricFamily(
            "graphopt_serve_table_rows",
            "Rows held by each EmbeddingVariable of a served version.",
            labels=("model_name", "version", "table"),
        )
        table_bytes = GaugeMetricFamily(
            "graphopt_serve_table_bytes",
            "Bytes used by each EmbeddingVariable of a served version.",
            labels=("model_name", "version", "table"),
        )
        now = datetime.datetime.now(datetime.timezone.utc)
        for repository in self.models.repositories():
            name = repository.name
            served = repository.served()
            versions.add_metric([name], len(served))
            for status in repository.statuses():
                state.add_metric([name, str(status.version), status.state_name], 1)
            for servable in served.values():
                feed, version = servable.deltas, str(servable.version)
                if feed is None:
                    continue
                applied.add_metric([name, version], feed.applied)
                if feed.last_delta is not None:
                    lag.add_metric([name, version], _age(feed.last_delta.get("created"), now))
                    apply_seconds.add_metric([name, version], feed.last_delta["seconds"])
                for table, (size, used) in feed.table_stats().items():
                    rows.add_metric([name, version, table], size)
                    table_bytes.add_metric([name, version, table], used)
        yield from (versions, state, applied, lag, apply_seconds, rows, table_bytes)


def _age(created, now):
    try:
        stamp = datetime.datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return float("nan")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (now - stamp).total_seconds())
