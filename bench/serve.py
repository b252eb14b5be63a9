"""Serving benchmark: the original and the rewritten model side by side in one run.

    python bench/serve.py ORIGINAL_BASE REWRITTEN_BASE [--protocol grpc|rest]

Each base is a TF Serving model base path (BASE/<version>/saved_model.pb). Both are served by
`graphopt serve` subprocesses on loopback ports; this process is the client. For every
(concurrency, batch) cell the two models are measured in alternating rounds (A B, then B A, ...)
so that drift of a shared machine falls on both alike. Each phase stops at --requests requests
or --seconds seconds, whichever comes first; the whole run is bounded and stops by itself.
Prints QPS and p50 / p99 latency per model and the rewritten / original ratios (target: p99
ratio <= 1.1).
"""

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

P99_TARGET = 1.1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original", help="model base path of the original model")
    parser.add_argument("rewritten", help="model base path of the rewritten model")
    parser.add_argument("--protocol", choices=["grpc", "rest"], default="grpc")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated client thread counts")
    parser.add_argument("--batch", default="1,64", help="comma-separated examples per request")
    parser.add_argument("--requests", type=int, default=3000, help="most requests per model per cell")
    parser.add_argument("--seconds", type=float, default=9.0, help="most seconds per model per cell")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per cell")
    parser.add_argument("--warmup", type=int, default=20, help="unrecorded requests per model per cell")
    parser.add_argument(
        "--samples",
        default="synthetic",
        help="rows to draw requests from when the model takes the course's features: "
        "'synthetic' (graphopt's generator) or a samples CSV such as testSamples.csv",
    )
    parser.add_argument(
        "--max-id", type=int, default=100, help="for other models: integer inputs are drawn from [0, max-id)"
    )
    parser.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    return parser.parse_args(argv)


class ServedModel:
    """A `graphopt serve` subprocess on free loopback ports."""

    def __init__(self, label, base_path):
        from graphopt.serve.server import READY_LINE

        self.label = label
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        self.log = tempfile.TemporaryFile("w+")  # the server's stderr, shown if it fails
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "graphopt",
                "serve",
                base_path,
                "--model-name",
                "model",
                "--rest-port",
                "0",
                "--grpc-port",
                "0",
                "--host",
                "127.0.0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        ready, _, _ = select.select([self.process.stdout], [], [], 180)
        line = self.process.stdout.readline().strip() if ready else ""
        match = READY_LINE.search(line)
        if match is None:
            self.stop()
            sys.exit(
                f"bench: `graphopt serve {base_path}` did not start: {line or 'no output'}\n{self.log_tail()}"
            )
        self.rest_url, self.grpc_target = match["rest_url"], match["grpc_target"]

    def metadata(self):
        with urllib.request.urlopen(f"{self.rest_url}/v1/models/model/metadata", timeout=60) as reply:
            return json.load(reply)["metadata"]["signature_def"]["signature_def"]["serving_default"]

    def log_tail(self, lines=20):
        self.log.seek(0)
        return "".join(self.log.readlines()[-lines:])

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ---- request payloads -------------------------------------------------------------------------

_NUMPY = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_STRING": object,
    "DT_BOOL": np.bool_,
}


def synthetic_batch(inputs, batch, max_id, rng):
    """Columnar arrays for ``batch`` examples following the signature's inputs."""
    arrays = {}
    for name, info in sorted(inputs.items()):
        dims = [int(d["size"]) for d in info["tensor_shape"].get("dim", [])]
        shape = [batch if i == 0 else max(d, 1) for i, d in enumerate(dims)] or [batch]
        dtype = info["dtype"]
        if dtype in ("DT_INT32", "DT_INT64"):
            arrays[name] = rng.integers(0, max_id, shape).astype(_NUMPY[dtype])
        elif dtype in ("DT_FLOAT", "DT_DOUBLE"):
            arrays[name] = rng.random(shape).astype(_NUMPY[dtype])
        elif dtype == "DT_STRING":
            arrays[name] = rng.integers(0, max_id, shape).astype(str).astype(object)
        elif dtype == "DT_BOOL":
            arrays[name] = rng.random(shape) < 0.5
        else:
            sys.exit(f"bench: input {name} has dtype {dtype}, which the synthetic requests do not cover")
    return arrays


def course_rows(source, inputs):
    """The course's feature columns from synthetic or real samples; None if the model takes other inputs."""
    from graphopt.course.data import read_samples
    from graphopt.course.data.synthetic import generate_samples
    from graphopt.course.models.features import INPUT_DTYPES, feature_arrays

    if set(inputs) != set(INPUT_DTYPES):
        return None
    samples = generate_samples(5000, seed=0) if source == "synthetic" else read_samples(source)
    return feature_arrays(samples)


def sample_batch(rows, batch, rng):
    """Columnar arrays of ``batch`` rows drawn at random from ``rows``."""
    chosen = rng.integers(0, len(next(iter(rows.values()))), batch)
    return {name: column[chosen] for name, column in rows.items()}


class Protocol:
    """Builds request payloads once and sends them over one protocol."""

    def __init__(self, name):
        self.name = name

    def payload(self, arrays):
        if self.name == "rest":
            body = {
                "inputs": {
                    k: [v.decode() if isinstance(v, bytes) else v for v in a.tolist()]
                    if a.dtype == object
                    else a.tolist()
                    for k, a in arrays.items()
                }
            }
            return json.dumps(body).encode()
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "model"
        for key, array in arrays.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(array))
        return request

    def client(self, served):
        """A callable sending one payload and returning the outputs as {name: ndarray}."""
        if self.name == "rest":
            import http.client
            from urllib.parse import urlsplit

            url = urlsplit(served.rest_url)
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)

            def send(body):
                try:
                    connection.request(
                        "POST", "/v1/models/model:predict", body, {"Content-Type": "application/json"}
                    )
                    reply = connection.getresponse()
                    document = json.loads(reply.read())
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()  # the next request reconnects
                    raise RuntimeError(f"HTTP connection failed: {exc!r}") from None
                if reply.status != 200:
                    raise RuntimeError(f"HTTP {reply.status}: {document.get('error')}")
                outputs = document["outputs"]
                return (
                    {k: np.asarray(v) for k, v in outputs.items()}
                    if isinstance(outputs, dict)
                    else {"": np.asarray(outputs)}
                )

            send.close = connection.close
            return send
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        channel = grpc.insecure_channel(served.grpc_target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def send(request):
            try:
                response = stub.Predict(request, timeout=60)
            except grpc.RpcError as exc:
                raise RuntimeError(f"gRPC {exc.code().name}: {exc.details()}") from None
            return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

        send.close = channel.close
        return send


# ---- load generation ----------------------------------------------------------------------------


def run_phase(protocol, served, payloads, concurrency, max_requests, max_seconds, warmup):
    """Send payloads from ``concurrency`` threads until max_requests or max_seconds.

    Returns (latencies, seconds, errors).
    """
    clients = [protocol.client(served) for _ in range(concurrency)]
    for i in range(warmup):
        clients[i % concurrency](payloads[i % len(payloads)])
    latencies, errors = [], []
    lock = threading.Lock()
    counter = iter(range(max_requests))
    deadline = time.perf_counter() + max_seconds

    def worker(send, offset):
        local = []
        for n in counter:  # shared iterator: the threads together send at most max_requests
            if time.perf_counter() > deadline:
                break
            start = time.perf_counter()
            try:
                send(payloads[(n + offset) % len(payloads)])
            except RuntimeError as exc:
                with lock:
                    errors.append(str(exc))
                continue
            local.append(time.perf_counter() - start)
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(send, i)) for i, send in enumerate(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    for send in clients:
        send.close()
    return latencies, elapsed, errors


def measure(protocol, models, payloads, concurrency, args):
    """Alternating rounds of both models for one cell: {label: summary dict}."""
    collected = {m.label: ([], 0.0, []) for m in models}
    for round_index in range(args.rounds):
        order = models if round_index % 2 == 0 else models[::-1]
        for served in order:
            lat, seconds, errors = run_phase(
                protocol,
                served,
                payloads,
                concurrency,
                max(1, args.requests // args.rounds),
                args.seconds / args.rounds,
                args.warmup if round_index == 0 else 0,
            )
            old = collected[served.label]
            collected[served.label] = (old[0] + lat, old[1] + seconds, old[2] + errors)
    summary = {}
    for label, (lat, seconds, errors) in collected.items():
        ms = np.asarray(lat) * 1e3
        summary[label] = {
            "requests": len(lat),
            "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "qps": len(lat) / seconds if seconds else 0.0,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        }
    return summary


def check_same_answers(protocol, models, payload):
    """The largest absolute difference between the two models' outputs on one request."""
    clients = [protocol.client(m) for m in models]
    answers = [send(payload) for send in clients]
    for send in clients:
        send.close()
    diffs = [
        float(np.max(np.abs(answers[0][k].astype(np.float64) - answers[1][k].astype(np.float64))))
        for k in answers[0]
        if k in answers[1] and answers[0][k].dtype != object
    ]
    return max(diffs) if diffs else float("nan")


def main(argv=None):
    args = parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    protocol = Protocol(args.protocol)
    models = []
    try:
        models = [ServedModel("original", args.original)]
        models.append(ServedModel("rewritten", args.rewritten))
        inputs = models[0].metadata()["inputs"]
        other = models[1].metadata()["inputs"]
        if {k: v["dtype"] for k, v in inputs.items()} != {k: v["dtype"] for k, v in other.items()}:
            sys.exit("bench: the two models' serving_default inputs differ; they must take the same requests")
        rows = course_rows(args.samples, inputs)
        rng = np.random.default_rng(0)
        results = []
        source = f"course samples ({args.samples})" if rows is not None else f"synthetic ids < {args.max_id}"
        print(
            f"serving benchmark, {args.protocol}, loopback, requests from {source}; "
            f"original={args.original} rewritten={args.rewritten}"
        )
        for batch in batches:
            make = (
                (lambda batch=batch: sample_batch(rows, batch, rng))
                if rows is not None
                else (lambda batch=batch: synthetic_batch(inputs, batch, args.max_id, rng))
            )
            payloads = [protocol.payload(make()) for _ in range(32)]
            diff = check_same_answers(protocol, models, payloads[0])
            for concurrency in concurrencies:
                summary = measure(protocol, models, payloads, concurrency, args)
                results.append({"batch": batch, "concurrency": concurrency, "max_abs_diff": diff, **summary})
                print_cell(results[-1])
        print_ratios(results)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump({"args": vars(args), "results": results}, f, indent=2)
        return 1 if any(r[m]["errors"] for r in results for m in ("original", "rewritten")) else 0
    finally:
        for served in models:
            served.stop()


def print_cell(result):
    for label in ("original", "rewritten"):
        r = result[label]
        line = (
            f"  batch {result['batch']:>3} conc {result['concurrency']:>2} {label:<9} "
            f"{r['qps']:9.1f} qps  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
            f"({r['requests']} requests, {r['errors']} errors)"
        )
        if r["first_error"]:
            line += f"  first error: {r['first_error']}"
        print(line, flush=True)


def print_ratios(results):
    print(
        "\nrewritten / original (QPS: higher is better; latency: lower is better; "
        f"target p99 ratio <= {P99_TARGET})"
    )
    print(f"{'batch':>5} {'conc':>4} {'QPS':>7} {'p50':>7} {'p99':>7}  {'p99 target':<10} {'max|diff|':>9}")
    for r in results:
        o, w = r["original"], r["rewritten"]
        qps = w["qps"] / o["qps"] if o["qps"] else float("nan")
        p50 = w["p50_ms"] / o["p50_ms"]
        p99 = w["p99_ms"] / o["p99_ms"]
        verdict = "met" if p99 <= P99_TARGET else "MISSED"
        print(
            f"{r['batch']:>5} {r['concurrency']:>4} {qps:7.3f} {p50:7.3f} {p99:7.3f}  {verdict:<10} "
            f"{r['max_abs_diff']:9.2e}"
        )


if __name__ == "__main__":
    sys.exit(main())
