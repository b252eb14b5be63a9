"""``graphopt inspect`` and ``graphopt rewrite`` as a user meets them."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from graphopt import model_io
from graphopt.cli import main
from tests.rewrite import cases

GRAPHOPT = [sys.executable, "-m", "graphopt"]


def run(*args):
    return subprocess.run(GRAPHOPT + list(args), capture_output=True, text=True, timeout=600)


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def tf1_model(tmp_path_factory):
    return cases.tf1_partitioned_mod(str(tmp_path_factory.mktemp("cli") / "m")).path


def test_inspect_lists_tables_sites_inputs_and_gathers_left_alone(tf1_model, tmp_path):
    result = invoke("inspect", tf1_model, "--tensorboard", str(tmp_path / "tb"))
    assert result.exit_code == 0
    assert "pemb: [23, 4] float32" in result.output and "3 parts (mod)" in result.output
    assert (
        "fed by: serving_default:ids" in result.output
        and "gathered at graph:embedding_lookup" in result.output
    )
    assert os.listdir(tmp_path / "tb" / "before")  # an event file for TensorBoard's graph view
    data = json.loads(invoke("inspect", tf1_model, "--json").output)
    assert {t["name"] for t in data["tables"]} == {"emb", "pemb"}
    assert data["tables"][0]["lookup_sites"][0]["signature_inputs"] == ["serving_default:ids"]


def test_rewrite_prints_plan_summary_and_writes_manifest(tf1_model, tmp_path):
    out = str(tmp_path / "out")
    result = invoke(
        "rewrite", tf1_model, "-o", out, "--exclude", "^emb$", "--tensorboard", str(tmp_path / "tb")
    )
    assert result.exit_code == 0, result.output
    assert (
        "plan: 1 table(s) to rewrite" in result.output and "skip emb: name matches --exclude" in result.output
    )
    assert "graph: " in result.output and "tables converted: 1" in result.output
    assert sorted(os.listdir(tmp_path / "tb")) == ["after", "before"]
    manifest = json.load(open(os.path.join(out, "graphopt_manifest.json")))
    assert [t["name"] for t in manifest["tables"]] == ["pemb"]
    again = invoke("rewrite", tf1_model, "-o", out, "--json", "--overwrite", "--min-rows", "30")
    assert json.loads(again.output)["tables_converted"] == 1  # emb (40 rows) only


def test_dry_run_writes_nothing(tf1_model, tmp_path):
    result = invoke("rewrite", tf1_model, "-o", str(tmp_path / "out"), "--dry-run", "--json")
    data = json.loads(result.output)
    assert result.exit_code == 0 and data["dry_run"] and not data["wrote"]
    assert data["nodes_after"]["graph"] != data["nodes_before"]["graph"]
    assert not os.path.exists(tmp_path / "out")


def test_dry_run_text_says_what_it_would_do_and_claims_no_conversion(tf1_model, tmp_path):
    result = invoke("rewrite", tf1_model, "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "tables converted" not in result.output
    assert result.output.rstrip().endswith("dry run: would rewrite 2 table(s); nothing written")


def test_overlapping_output_is_refused_before_the_plan(tf1_model):
    result = run("rewrite", tf1_model, "-o", os.path.join(tf1_model, "inside"))
    assert result.returncode == 2 and "overlaps the input" in result.stderr
    assert result.stdout == "", "the refusal comes before the plan is printed"


def test_inspect_hides_the_init_op_signature(tmp_path):
    from graphopt.graph import meta_graphs

    path = cases.keras_two_inputs(str(tmp_path / "m")).path
    assert "__saved_model_init_op" in meta_graphs.signature_tensors(model_io.read_model(path).meta_graph)
    result = invoke("inspect", path)
    assert result.exit_code == 0 and "serving_default(" in result.output
    assert "__saved_model" not in result.output
    signatures = json.loads(invoke("inspect", path, "--json").output)["signatures"]
    assert "serving_default" in signatures and not [s for s in signatures if s.startswith("__")]


def test_model_without_table_says_so_and_writes_nothing(tmp_path):
    path = cases.module_without_table(str(tmp_path / "m")).path
    result = run("rewrite", path, "-o", str(tmp_path / "out"))
    assert result.returncode == 0 and "no embedding table to rewrite; nothing written" in result.stdout
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("breakage", ["not_a_model", "truncated", "unknown_tags", "output_exists"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tf1_model, tmp_path, breakage):
    import shutil

    model, extra = str(tmp_path / "m"), []
    shutil.copytree(tf1_model, model)
    out = tmp_path / "out"
    if breakage == "not_a_model":
        model = str(tmp_path)
    elif breakage == "truncated":
        pb = os.path.join(model, "saved_model.pb")
        data = open(pb, "rb").read()
        open(pb, "wb").write(data[: -len(data) // 4])
    elif breakage == "unknown_tags":
        extra = ["--tags", "train"]
    elif breakage == "output_exists":
        out.mkdir()
    result = run("rewrite", model, "-o", str(out), *extra)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("graphopt: error: ") and "Traceback" not in result.stderr
    assert not os.path.exists(out) or breakage == "output_exists"
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []
