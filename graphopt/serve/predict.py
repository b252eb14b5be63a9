"""The request path both APIs share: checked arrays to outputs, batched or not, timed and counted.

REST (rest_api.py) and gRPC (grpc_service.py) turn their requests into numpy arrays; a Predictor
checks them against the signature, runs them (through the batch scheduler when batching is on
and the signature is batched, else with one flat call of the signature) and returns the outputs
asked for. ``Timed`` records each request's latency and final status in the server's metrics.
"""

import time

from graphopt.serve.errors import RequestError


class Predictor:
    """Runs checked requests: ``batcher`` (a BatchScheduler) or None; ``metrics`` or None."""

    def __init__(self, batcher=None, metrics=None):
        self.batcher = batcher
        self.metrics = metrics

    def predict(self, model_name, servable, signature, arrays, output_filter=()):
        """The outputs (all, or those named in output_filter) of ``signature`` for ``arrays``."""
        signature.check(arrays)
        signature.check_outputs(output_filter)
        if self.batcher is not None and signature.batched:
            key = (model_name, servable.version, signature.name)
            outputs = self.batcher.run(key, signature, arrays)
        else:
            outputs = signature.compute(arrays)
        if not output_filter:
            return outputs
        return {key: outputs[key] for key in sorted(output_filter)}

    def timed(self, api, entrypoint):
        """A context manager recording one request (set .model and .signature as they are known)."""
        return Timed(self.metrics, api, entrypoint)


class Timed:
    """Records one request's latency and status (OK, or its RequestError's gRPC code) on exit."""

    __slots__ = ("metrics", "api", "entrypoint", "model", "signature", "started")

    def __init__(self, metrics, api, entrypoint):
        self.metrics, self.api, self.entrypoint = metrics, api, entrypoint
        self.model = self.signature = ""

    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind, exc, traceback):
        if self.metrics is None:
            return False
        if kind is None:
            status = "OK"
        elif isinstance(exc, RequestError):
            status = exc.grpc_code.name
        else:
            status = "INTERNAL"
        seconds = time.perf_counter() - self.started
        self.metrics.request(self.model, self.signature, self.api, self.entrypoint, status, seconds)
        return False
