"""The CLI as a user meets it: a real subprocess, one-line errors, exit codes."""

import json
import os
import subprocess
import sys

import pytest

GRAPHOPT = [sys.executable, "-m", "graphopt"]


def run(*args):
    return subprocess.run(GRAPHOPT + list(args), capture_output=True, text=True, timeout=600)


def test_version_and_help():
    assert run("--version").stdout.startswith("graphopt, version")
    result = run("--help")
    assert result.returncode == 0 and "build-model" in result.stdout


def test_every_command_has_help():
    from graphopt.cli import main

    for name in main.commands:
        result = run(name, "--help")
        assert result.returncode == 0, name
        assert "Usage:" in result.stdout and len(result.stdout.splitlines()) > 3, name


def test_build_model_json_report_and_overwrite(tmp_path):
    out = tmp_path / "model"
    result = run("build-model", str(out), "--form", "tf1", "--epochs", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["form"] == "tf1" and 0.5 < report["roc_auc"] <= 1.0
    assert report["rows"] == report["train_rows"] + report["test_rows"]
    assert result.stderr == "", "TensorFlow start-up noise must not reach the user"

    again = run("build-model", str(out), "--form", "tf1", "--epochs", "1")
    assert again.returncode == 2
    assert (
        again.stderr.strip()
        == f"graphopt: error: {out} already exists; pass --overwrite to replace it or choose another path"
    )
    assert run("build-model", str(out), "--form", "tf1", "--epochs", "1", "--overwrite").returncode == 0
    leftovers = [p for p in os.listdir(tmp_path) if p != "model"]
    assert leftovers == [], "staging directories must not be left behind"


@pytest.mark.parametrize(
    "content,expected",
    [
        (None, "no such file"),
        ("", "the file is empty"),
        ("movieId,userId\n1,2\n", "line 1: missing column(s)"),
    ],
)
def test_bad_csv_is_one_line_exit_2_and_writes_nothing(tmp_path, content, expected):
    data = tmp_path / "bad.csv"
    if content is not None:
        data.write_text(content)
    out = tmp_path / "model"
    result = run("build-model", str(out), "--data", str(data))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(data) in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_build_model_prints_each_epoch_on_a_pipe(tmp_path):
    result = run("build-model", str(tmp_path / "m"), "--form", "tf1", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["epoch 1/2", "epoch 2/2"]
    assert "ROC AUC" in lines[2] and len(lines) == 3
