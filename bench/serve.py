"""Serving benchmark, two modes.

    python bench/serve.py BASE [--quick] [--json FILE]
    python bench/serve.py ORIGINAL_BASE REWRITTEN_BASE [--protocol grpc|rest]

Each base is a TF Serving model base path (BASE/<version>/saved_model.pb), served by `graphopt
serve` subprocesses on loopback ports; this process is the client.

With one base (the server's speed, issue 23): a `direct` column calls the same signature in this
process with ready tensors (a keyword call of the loaded concrete function), with the same
client threads; every served figure is reported beside it and as a ratio to it. Cells, each
measured in alternating rounds so that a shared machine's drift falls on all alike: concurrency 1
(batch 1) over gRPC and REST without batching; concurrency 16 with --enable-batching over gRPC;
the cost of the metrics endpoint and of a model config file (QPS at concurrency 16 against a
server with --no-metrics); then bench/online.py's p99 during a 100,000-key delta. Targets: p50
c1 <= 1.5x direct, batched c16 QPS >= 2x direct c1 QPS and p99 <= 4x direct c1 p99, p99 during a
delta <= 1.2x without, metrics and config each <= 5% QPS. The last line is the headline:
`serve/direct p50 c1: grpc G, rest R | batched c16 QPS/direct c1: B | p99 during delta: D`.

With two bases (original vs rewritten): for every (concurrency, batch) cell the two models are
measured in alternating rounds (A B, then B A, ...). Each phase stops at --requests requests or
--seconds seconds, whichever comes first; the whole run is bounded and stops by itself. Prints
QPS and p50 / p99 latency per model and the rewritten / original ratios (target: p99 ratio <= 1.1).
"""

import argparse
import json
import os
import select
import shutil
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
    parser.add_argument("original", help="model base path (of the original model, with two bases)")
    parser.add_argument("rewritten", nargs="?", help="model base path of the rewritten model")
    parser.add_argument(
        "--quick", action="store_true", help="one base: shorter phases (a run of about 6 minutes)"
    )
    parser.add_argument(
        "--no-delta", action="store_true", help="one base: skip the p99-during-delta measurement"
    )
    parser.add_argument("--protocol", choices=["grpc", "rest"], default="grpc")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated client thread counts")
    parser.add_argument("--batch", default="1,64", help="comma-separated examples per request")
    parser.add_argument("--requests", type=int, default=3000, help="most requests per model per cell")
    parser.add_argument(
        "--seconds",
        type=float,
        help="two bases: most seconds per model per cell [9]; one base: seconds per phase [8; quick 3]",
    )
    parser.add_argument("--rounds", type=int, help="alternating rounds per cell [6; one base quick: 3]")
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

    def __init__(self, label, base_path, extra=()):
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
                *([base_path, "--model-name", "model"] if base_path else []),
                "--rest-port",
                "0",
                "--grpc-port",
                "0",
                "--host",
                "127.0.0.1",
                *extra,
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
    if args.rewritten is None:
        return speed(args)
    args.rounds = args.rounds or 6
    args.seconds = args.seconds or 9.0
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


# ---- one base: the server's speed against a direct call (issue 23) --------------------------------

C1_P50_TARGET = 1.5
BATCHED_QPS_TARGET = 2.0
BATCHED_P99_TARGET = 4.0
DELTA_P99_TARGET = 1.2
OVERHEAD_TARGET = 0.05
BATCHING_PARAMETERS = (
    "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 0 }\n"
    "max_enqueued_batches { value: 64 }\nnum_batch_threads { value: 2 }\n"
)


def latest_version(base):
    versions = [int(v) for v in os.listdir(base) if v.isdigit()]
    if not versions:
        sys.exit(f"bench: no <version>/ under {base}")
    return os.path.join(base, str(max(versions)))


def direct_client(version_dir):
    """A callable running the serving signature in this process on prepared keyword tensors."""
    import tensorflow as tf

    import graphopt  # noqa: F401  (registers the EmbeddingVariable ops)

    loaded = tf.saved_model.load(version_dir)
    function = loaded.signatures["serving_default"]

    def send(tensors):
        return function(**tensors)

    send.loaded = loaded  # keeps the variables alive
    send.close = lambda: None
    return send


def raw_grpc_client(served):
    """Predict over gRPC with a pre-serialized PredictRequest; the reply's bytes are not parsed,
    so the client costs the machine's shared cores as little as it can."""
    import grpc

    channel = grpc.insecure_channel(served.grpc_target)
    call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")

    def send(payload):
        try:
            return call(payload, timeout=60)
        except grpc.RpcError as exc:
            raise RuntimeError(f"gRPC {exc.code().name}: {exc.details()}") from None

    send.close = channel.close
    return send


def raw_rest_client(served):
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(served.rest_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)

    def send(body):
        try:
            connection.request("POST", "/v1/models/model:predict", body, {"Content-Type": "application/json"})
            reply = connection.getresponse()
            data = reply.read()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise RuntimeError(f"HTTP connection failed: {exc!r}") from None
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {data[:200]!r}")
        return data

    send.close = connection.close
    return send


def closed_loop(make_client, payloads, concurrency, seconds, warmup=20):
    """``concurrency`` threads, each with its own client, sending back to back for ``seconds``:
    (latencies in s, elapsed s, errors)."""
    clients = [make_client() for _ in range(concurrency)]
    for i in range(warmup):
        clients[i % concurrency](payloads[i % len(payloads)])
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(send, offset):
        local, n = [], offset
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                send(payloads[n % len(payloads)])
            except RuntimeError as exc:
                with lock:
                    errors.append(str(exc))
                continue
            local.append(time.perf_counter() - start)
            n += 7
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(c, i)) for i, c in enumerate(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    for c in clients:
        c.close()
    return latencies, elapsed, errors


def summarize(runs):
    """Per-round QPS and percentiles, and their medians over the rounds."""
    rounds = []
    for latencies, elapsed, errors in runs:
        ms = np.asarray(latencies) * 1e3
        rounds.append(
            {
                "qps": len(latencies) / elapsed,
                "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
                "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
                "requests": len(latencies),
                "errors": len(errors),
                "first_error": errors[0] if errors else None,
            }
        )
    out = {key: float(np.median([r[key] for r in rounds])) for key in ("qps", "p50_ms", "p99_ms")}
    out["requests"] = sum(r["requests"] for r in rounds)
    out["errors"] = sum(r["errors"] for r in rounds)
    out["first_error"] = next((r["first_error"] for r in rounds if r["first_error"]), None)
    out["rounds"] = rounds
    return out


def alternate(cells, rounds, concurrency, seconds):
    """cells: {label: (make_client, payloads)}; each measured once per round, order rotating."""
    runs = {label: [] for label in cells}
    labels = list(cells)
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            make_client, payloads = cells[label]
            runs[label].append(closed_loop(make_client, payloads, concurrency, seconds))
    return {label: summarize(v) for label, v in runs.items()}


def print_row(label, r, direct=None):
    ratio = ""
    if direct is not None:
        ratio = (
            f"  p50 {r['p50_ms'] / direct['p50_ms']:.2f}x  p99 {r['p99_ms'] / direct['p99_ms']:.2f}x  "
            + (f"QPS {r['qps'] / direct['qps']:.2f}x of direct")
        )
    print(
        f"  {label:<24} {r['qps']:8.1f} qps  p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  "
        f"({r['requests']} requests, {r['errors']} errors){ratio}",
        flush=True,
    )
    if r["first_error"]:
        print(f"    first error: {r['first_error']}", flush=True)


def speed(args):
    """The one-base mode: see the module docstring."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    rounds = args.rounds or (3 if args.quick else 6)
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    version_dir = latest_version(args.original)
    work = tempfile.mkdtemp(prefix="graphopt-bench-serve-")
    batching_file = os.path.join(work, "batching.config")
    with open(batching_file, "w") as f:
        f.write(BATCHING_PARAMETERS)
    config_file = os.path.join(work, "models.config")
    with open(config_file, "w") as f:
        f.write(
            f'model_config_list {{ config {{ name: "model" base_path: "{os.path.abspath(args.original)}" '
            'model_platform: "tensorflow" version_labels { key: "stable" value: '
            f"{os.path.basename(version_dir)} }} }} }}\n"
        )
    servers = {}
    results = {"args": vars(args)}
    try:
        servers["plain"] = ServedModel("plain", args.original)
        servers["batched"] = ServedModel(
            "batched", args.original, ["--enable-batching", "--batching-parameters-file", batching_file]
        )
        servers["no-metrics"] = ServedModel("no-metrics", args.original, ["--no-metrics"])
        inputs = servers["plain"].metadata()["inputs"]
        rows = course_rows(args.samples, inputs)
        rng = np.random.default_rng(0)
        arrays = [
            sample_batch(rows, 1, rng) if rows is not None else synthetic_batch(inputs, 1, args.max_id, rng)
            for _ in range(64)
        ]
        tensors = [{k: tf.constant(v) for k, v in a.items()} for a in arrays]
        grpc_payloads, rest_payloads = [], []
        for a in arrays:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "model"
            for key, array in a.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(array))
            grpc_payloads.append(request.SerializeToString())
        rest_payloads = [Protocol("rest").payload(a) for a in arrays]
        direct = direct_client(version_dir)
        print(
            f"serving speed, loopback, batch 1, {rounds} rounds x {seconds:.0f} s per cell (medians); "
            f"model {version_dir}; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )

        def direct_maker():
            return direct

        print("concurrency 1, no batching:")
        c1 = alternate(
            {
                "direct": (direct_maker, tensors),
                "grpc": (lambda: raw_grpc_client(servers["plain"]), grpc_payloads),
                "rest": (lambda: raw_rest_client(servers["plain"]), rest_payloads),
            },
            rounds,
            1,
            seconds,
        )
        for label, r in c1.items():
            print_row(label, r, None if label == "direct" else c1["direct"])
        print("concurrency 16:")
        c16 = alternate(
            {
                "direct": (direct_maker, tensors),
                "grpc batched": (lambda: raw_grpc_client(servers["batched"]), grpc_payloads),
                "grpc unbatched": (lambda: raw_grpc_client(servers["plain"]), grpc_payloads),
                "rest batched": (lambda: raw_rest_client(servers["batched"]), rest_payloads),
            },
            rounds,
            16,
            seconds,
        )
        for label, r in c16.items():
            print_row(label, r, c1["direct"])
        print("  (ratios to direct at concurrency 1)")
        servers["config"] = ServedModel("config", None, ["--model-config-file", config_file])
        print("cost of metrics and of a model config file (gRPC, concurrency 16, no batching):")
        overhead = alternate(
            {
                label: (lambda label=label: raw_grpc_client(servers[label]), grpc_payloads)
                for label in ("no-metrics", "plain", "config")
            },
            rounds,
            16,
            seconds,
        )
        for label, r in overhead.items():
            print_row(label, r, overhead["no-metrics"])
        metrics_cost = 1 - overhead["plain"]["qps"] / overhead["no-metrics"]["qps"]
        config_cost = 1 - overhead["config"]["qps"] / overhead["plain"]["qps"]
        print(
            f"  metrics cost {metrics_cost:+.1%} QPS (plain vs --no-metrics), model config file "
            f"{config_cost:+.1%} (config vs plain); target <= {OVERHEAD_TARGET:.0%} each",
            flush=True,
        )
    finally:
        for served in servers.values():
            served.stop()
        shutil.rmtree(work, ignore_errors=True)
    results.update({"c1": c1, "c16": c16, "overhead": overhead})
    delta_ratio = float("nan")
    if not args.no_delta:
        print("p99 during a 100,000-key delta (bench/online.py --quick):", flush=True)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import online

        online_json = os.path.join(tempfile.gettempdir(), f"graphopt-bench-online-{os.getpid()}.json")
        online.main(["--quick", "--json", online_json])
        with open(online_json) as f:
            results["online"] = json.load(f)
        os.remove(online_json)
        delta_ratio = results["online"]["p99_ratio"]
    g = c1["grpc"]["p50_ms"] / c1["direct"]["p50_ms"]
    r = c1["rest"]["p50_ms"] / c1["direct"]["p50_ms"]
    b = c16["grpc batched"]["qps"] / c1["direct"]["qps"]
    b99 = c16["grpc batched"]["p99_ms"] / c1["direct"]["p99_ms"]
    print("\ntargets:")
    for what, value, target, met in (
        ("grpc p50 c1 / direct", g, f"<= {C1_P50_TARGET}", g <= C1_P50_TARGET),
        ("rest p50 c1 / direct", r, f"<= {C1_P50_TARGET}", r <= C1_P50_TARGET),
        ("batched c16 QPS / direct c1 QPS", b, f">= {BATCHED_QPS_TARGET}", b >= BATCHED_QPS_TARGET),
        ("batched c16 p99 / direct c1 p99", b99, f"<= {BATCHED_P99_TARGET}", b99 <= BATCHED_P99_TARGET),
        ("metrics QPS cost", metrics_cost, f"<= {OVERHEAD_TARGET}", metrics_cost <= OVERHEAD_TARGET),
        ("model config QPS cost", config_cost, f"<= {OVERHEAD_TARGET}", config_cost <= OVERHEAD_TARGET),
        (
            "p99 during delta / without",
            delta_ratio,
            f"<= {DELTA_P99_TARGET}",
            delta_ratio <= DELTA_P99_TARGET,
        ),
    ):
        print(f"  {what:<34} {value:7.3f}  target {target:<7} {'met' if met else 'MISSED'}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    print(
        f"serve/direct p50 c1: grpc {g:.2f}, rest {r:.2f} | batched c16 QPS/direct c1: {b:.2f} | "
        f"p99 during delta: {delta_ratio:.2f}"
    )
    failed = sum(x["errors"] for cell in (c1, c16, overhead) for x in cell.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
