"""bench/serve.py stays runnable: a tiny bounded run of two models reports both and their ratios."""

import json
import os
import subprocess
import sys

from tests.serve.serve_models import USERS, make_base

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "serve.py")


def test_bench_runs_both_models_and_prints_ratios(model_store, tmp_path):
    original = make_base(model_store, tmp_path / "a", {1: "rec-v1"})
    rewritten = make_base(model_store, tmp_path / "b", {1: "rec-v1"})
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            BENCH,
            str(original),
            str(rewritten),
            "--protocol",
            "rest",
            "--concurrency",
            "1,2",
            "--batch",
            "4",
            "--requests",
            "30",
            "--seconds",
            "2",
            "--rounds",
            "2",
            "--warmup",
            "2",
            "--max-id",
            str(USERS),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rewritten / original" in run.stdout
    results = json.loads(out.read_text())["results"]
    assert [(r["batch"], r["concurrency"]) for r in results] == [(4, 1), (4, 2)]
    for r in results:
        assert r["max_abs_diff"] == 0.0  # the same model behind both servers
        for label in ("original", "rewritten"):
            assert r[label]["errors"] == 0 and r[label]["requests"] == 30 and r[label]["p99_ms"] > 0


def test_the_one_base_mode_reports_direct_ratios_and_ends_with_the_headline(model_store, tmp_path):
    base = make_base(model_store, tmp_path / "one", {1: "rec-v1"})
    out = tmp_path / "speed.json"
    run = subprocess.run(
        [sys.executable, BENCH, str(base), "--quick", "--no-delta", "--rounds", "1", "--seconds", "0.5"]
        + ["--max-id", str(USERS), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("serve/direct p50 c1: grpc ") and "| batched c16 QPS/direct c1: " in last
    assert last.endswith("p99 during delta: nan")  # --no-delta
    results = json.loads(out.read_text())
    for cell in ("c1", "c16", "overhead"):
        assert all(r["requests"] > 0 and r["errors"] == 0 for r in results[cell].values()), results[cell]
    assert set(results["c1"]) == {"direct", "grpc", "rest"}
