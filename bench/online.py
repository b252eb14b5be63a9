"""Online updates benchmark: deltas applied live by `graphopt serve`, against a full version reload.

    python bench/online.py [--quick] [--rows N] [--delta-keys N] [--json FILE]

Builds a model whose EmbeddingVariable holds --rows keys of dim 64, serves it with a `graphopt
serve` subprocess (default poll intervals) on loopback, and measures, with this process as the
client:
- freshness: from a delta's rename into MODEL_BASE/1/deltas/ to the first request that answers
  its new row (a probe request every 2 ms; target <= 1 s, the poll interval included);
- serving under updates: a bounded REST load (--concurrency threads, 64 ids per request) in
  alternating rounds: a quiet window, then a --delta-keys delta renamed into place and every
  request started until the server reports it applied; p99 during / p99 without (target <= 1.2)
  and failed requests (target 0);
- delta vs full reload: bytes on disk and seconds (rename to the server reporting it) of one
  --delta-keys delta and of a new version holding the whole table.
Deltas are written beforehand into a stage beside the base path, so writing them costs the
measured load nothing; each is moved in with one rename. The last line is the headline.
"""

import argparse
import http.client
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DIM = 64
FRESHNESS_TARGET = 1.0
P99_TARGET = 1.2
STATUS_POLL_S = 0.02  # how often the update phase asks the server whether a delta is applied


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smaller run (< 3 minutes): 200,000 rows, 3 rounds"
    )
    parser.add_argument(
        "--rows", type=int, help="keys in the served table [default 1,000,000; quick 200,000]"
    )
    parser.add_argument("--delta-keys", type=int, default=100_000, help="keys per load-phase delta")
    parser.add_argument("--rounds", type=int, help="quiet/update rounds [default 5; quick 3]")
    parser.add_argument("--quiet-seconds", type=float, default=3.0, help="length of each quiet window")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads of the load")
    parser.add_argument("--probes", type=int, default=5, help="freshness measurements")
    parser.add_argument(
        "--watcher-nice",
        type=int,
        default=10,
        help="the server's --watcher-nice (nice increment of the thread applying deltas; 0: none)",
    )
    parser.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    args.rows = args.rows or (200_000 if args.quick else 1_000_000)
    args.rounds = args.rounds or (3 if args.quick else 5)
    return args


def build_model(path, rows):
    """A SavedModel whose table holds keys 0..rows-1 (row k: k / rows in every column) with two
    signatures: serving_default (a score per id, what the load calls) and rows (the rows)."""
    import tensorflow as tf

    import graphopt

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = graphopt.EmbeddingVariable(DIM, initializer="zeros")
            for start in range(0, rows, 250_000):
                keys = np.arange(start, min(rows, start + 250_000), dtype=np.int64)
                self.table.insert(keys, np.repeat((keys / rows).astype(np.float32)[:, None], DIM, 1))
            self.weights = tf.Variable(np.linspace(-1, 1, DIM, dtype=np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def score(self, ids):
            return {"score": tf.sigmoid(tf.reduce_sum(self.table.lookup(ids) * self.weights, axis=1))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def rows(self, ids):
            return {"rows": self.table.lookup(ids)}

    model = Scorer()
    tf.saved_model.save(model, path, signatures={"serving_default": model.score, "rows": model.rows})


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


class Server:
    """`graphopt serve BASE` as a subprocess with its default poll intervals."""

    def __init__(self, base, watcher_nice=10):
        from graphopt.serve.server import READY_LINE

        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "graphopt",
                "serve",
                base,
                "--model-name",
                "m",
                "--rest-port",
                "0",
                "--grpc-port",
                "0",
                "--watcher-nice",
                str(watcher_nice),
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        ready, _, _ = select.select([self.process.stdout], [], [], 600)
        match = READY_LINE.search(self.process.stdout.readline().strip() if ready else "")
        if match is None:
            self.stop()
            self.log.seek(0)
            sys.exit(f"bench: graphopt serve did not start:\n{self.log.read()[-3000:]}")
        host, port = match["rest_url"].split("//")[1].split(":")
        self.address = (host, int(port))

    def connection(self):
        return http.client.HTTPConnection(*self.address, timeout=60)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def call(connection, method, path, body=None):
    connection.request(method, path, body, {"Content-Type": "application/json"} if body else {})
    reply = connection.getresponse()
    document = json.loads(reply.read())
    if reply.status != 200:
        raise RuntimeError(f"HTTP {reply.status}: {document.get('error')}")
    return document


def status(connection):
    """(served version, last applied delta's sequence or 0)."""
    reply = call(connection, "GET", "/v1/models/m")
    available = [int(s["version"]) for s in reply["model_version_status"] if s["state"] == "AVAILABLE"]
    delta = (reply.get("graphopt") or {}).get("last_applied_delta") or {}
    return (available[0] if available else 0), delta.get("sequence", 0)


def wait_until(condition, timeout=300.0, step=0.005):
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            sys.exit("bench: timed out waiting for the server")
        time.sleep(step)
    return time.perf_counter()


def stage_deltas(stage_version, version_dir, parts):
    """Write each list of TableDeltas as a delta of a stage directory that looks like the served
    version (same saved_model.pb, same version number); returns their paths, in order."""
    from graphopt.online import write_delta

    os.makedirs(stage_version, exist_ok=True)
    shutil.copy(os.path.join(version_dir, "saved_model.pb"), stage_version)
    return [write_delta(stage_version, p) for p in parts]


class Load:
    """--concurrency REST clients sending score requests of 64 random ids, latencies timestamped."""

    def __init__(self, server, concurrency, rows, seed=0):
        rng = np.random.default_rng(seed)
        self.bodies = [
            json.dumps({"inputs": {"ids": rng.integers(0, rows, 64).tolist()}}).encode() for _ in range(256)
        ]
        self.samples, self.failures = [], []  # (start, seconds)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(server, i)) for i in range(concurrency)]

    def _client(self, server, offset):
        connection, n = server.connection(), offset
        while not self._stop.is_set():
            body = self.bodies[n % len(self.bodies)]
            n += 7
            start = time.perf_counter()
            try:
                call(connection, "POST", "/v1/models/m:predict", body)
                self.samples.append((start, time.perf_counter() - start))  # list.append is atomic
            except (OSError, RuntimeError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                connection.close()
                connection = server.connection()
        connection.close()

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()

    def between(self, begin, end):
        return [s for start, s in list(self.samples) if begin <= start < end]


def p99(latencies):
    return float(np.percentile(latencies, 99)) if latencies else float("nan")


def main(argv=None):
    args = parse_args(argv)
    from graphopt.online import TableDelta

    work = tempfile.mkdtemp(prefix="graphopt-bench-online-")
    try:
        version = os.path.join(work, "base", "1")
        started = time.perf_counter()
        build_model(version, args.rows)
        print(
            f"model: {args.rows:,} x {DIM} table, {dir_bytes(version) / 2**20:.1f} MiB on disk "
            f"(built in {time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        rng = np.random.default_rng(1)
        probes = [rng.integers(0, args.rows, 1).astype(np.int64) for _ in range(args.probes)]
        parts = [
            [TableDelta("table", k, np.full((1, DIM), 1000.0 + i, np.float32), k, np.array([], np.int64))]
            for i, k in enumerate(probes)
        ]
        for _ in range(args.rounds):
            keys = rng.choice(args.rows + args.delta_keys, args.delta_keys, replace=False).astype(np.int64)
            values = rng.normal(size=(args.delta_keys, DIM)).astype(np.float32)
            parts.append([TableDelta("table", keys, values, keys, np.array([], np.int64))])
        staged = stage_deltas(os.path.join(work, "stage", "1"), version, parts)
        deltas = os.path.join(version, "deltas")
        os.makedirs(deltas)
        server = Server(os.path.join(work, "base"), args.watcher_nice)
        try:
            results = run(args, server, staged, deltas, probes, work, version)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    print(
        f"freshness s: {results['freshness_s']:.3f} | p99 during/without updates: {results['p99_ratio']:.2f} "
        f"| failed requests: {results['failed_requests']}"
    )


def run(args, server, staged, deltas, probes, work, version):
    control = server.connection()

    def sees(key, value):
        body = json.dumps({"signature_name": "rows", "inputs": {"ids": key.tolist()}}).encode()
        return call(control, "POST", "/v1/models/m:predict", body)["outputs"][0][0] == value

    freshness = []
    for i, key in enumerate(probes):
        os.rename(staged[i], os.path.join(deltas, str(i + 1)))
        written = time.perf_counter()
        freshness.append(wait_until(lambda k=key, v=1000.0 + i: sees(k, v), step=0.002) - written)
    print(
        f"freshness: median {np.median(freshness):.3f} s, max {max(freshness):.3f} s over {len(probes)} "
        f"one-row deltas (target <= {FRESHNESS_TARGET} s)",
        flush=True,
    )

    quiet, during, apply_seconds = [], [], []
    with Load(server, args.concurrency, args.rows) as load:
        time.sleep(1.0)  # connections open, first requests answered
        for r in range(args.rounds):
            sequence = len(probes) + r + 1
            # the quiet window polls the status as the update window does (every STATUS_POLL_S),
            # so the bench's own requests load both windows alike
            begin = time.perf_counter()
            wait_until(
                lambda b=begin: status(control) and time.perf_counter() - b >= args.quiet_seconds,
                step=STATUS_POLL_S,
            )
            quiet.extend(load.between(begin, time.perf_counter()))
            os.rename(staged[sequence - 1], os.path.join(deltas, str(sequence)))
            written = time.perf_counter()
            applied = wait_until(lambda s=sequence: status(control)[1] >= s, step=STATUS_POLL_S)
            apply_seconds.append(applied - written)
            time.sleep(0.2)  # requests started before `applied` finish
            during.extend(load.between(written, applied))
    ratio = p99(during) / p99(quiet)
    print(
        f"under load ({args.concurrency} REST clients, 64 ids per request): p99 {p99(quiet) * 1e3:.2f} ms "
        f"without updates ({len(quiet)} requests), {p99(during) * 1e3:.2f} ms during {args.rounds} "
        f"{args.delta_keys:,}-key deltas ({len(during)} requests); ratio {ratio:.2f} "
        f"(target <= {P99_TARGET}); failed requests {len(load.failures)}",
        flush=True,
    )

    delta_bytes = dir_bytes(os.path.join(deltas, str(len(probes) + 1)))
    second = os.path.join(work, "base", "2")
    shutil.copytree(version, os.path.join(work, "base", ".2.copy"), ignore=shutil.ignore_patterns("deltas"))
    version_bytes = dir_bytes(os.path.join(work, "base", ".2.copy"))
    os.rename(os.path.join(work, "base", ".2.copy"), second)
    renamed = time.perf_counter()
    reload_seconds = wait_until(lambda: status(control)[0] == 2, step=0.01) - renamed
    apply_median = float(np.median(apply_seconds))
    print(
        f"{args.delta_keys:,}-key delta: {delta_bytes / 2**20:.1f} MiB, applied in {apply_median:.3f} s "
        f"(median, rename to reported); full version ({args.rows:,} x {DIM}): "
        f"{version_bytes / 2**20:.1f} MiB, swapped in {reload_seconds:.3f} s; delta/version: "
        f"{delta_bytes / version_bytes:.3f} of the bytes, {apply_median / reload_seconds:.3f} of the time",
        flush=True,
    )
    control.close()
    return {
        "rows": args.rows,
        "delta_keys": args.delta_keys,
        "freshness_s": float(max(freshness)),
        "freshness_median_s": float(np.median(freshness)),
        "p99_without_s": p99(quiet),
        "p99_during_s": p99(during),
        "p99_ratio": ratio,
        "requests_without": len(quiet),
        "requests_during": len(during),
        "failed_requests": len(load.failures),
        "delta_bytes": delta_bytes,
        "delta_apply_s": float(np.median(apply_seconds)),
        "version_bytes": version_bytes,
        "version_reload_s": reload_seconds,
    }


if __name__ == "__main__":
    main()
