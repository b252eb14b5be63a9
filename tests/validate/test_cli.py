import json

from click.testing import CliRunner

import saved_models
from graphopt.cli import main


def run(*args):
    return CliRunner().invoke(main, ["validate", *args])


def test_passed_is_exit_0_with_the_human_report(tf1_model, copy_of):
    result = run(tf1_model, copy_of(tf1_model), "--id-range", "ids=50", "--loader", "session", "--batches", "1")
    assert result.exit_code == 0, result.output
    assert "tolerance: exact" in result.output and "[PASSED] out" in result.output
    assert result.output.rstrip().splitlines()[-1].startswith("PASSED:")


def test_failed_is_exit_1_and_json_carries_the_cause(tf1_model, copy_of):
    broken = copy_of(tf1_model)
    saved_models.change_checkpoint_value(broken, ["item_table"], (5, 1))
    result = run(tf1_model, broken, "--id-range", "ids=0:50", "--json", "--loader", "tf2", "--batches", "1")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["passed"] is False
    assert any("'item_table': 1 of 200 elements differ" in f for f in report["failures"])
    out = report["numerics"][0]["outputs"][0]
    assert out["passed"] is False and out["mismatches"] > 0 and out["min_atol_to_pass"] > 0


def test_bad_input_is_exit_2_with_one_line(tf1_model, tmp_path):
    result = run(tf1_model, str(tmp_path / "missing"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"graphopt: error: {tmp_path / 'missing'}: no such directory; give a SavedModel directory"]
    result = run(tf1_model, tf1_model, "--id-range", "ids")
    assert result.exit_code == 2 and "write INPUT=ROWS" in result.output
    result = run(tf1_model, tf1_model, "--signature", "nope")
    assert result.exit_code == 2 and "signature(s) nope not in the original model" in result.output


def test_rewrite_verify_validates_the_fresh_output(tf1_model, tmp_path):
    out = tmp_path / "rewritten"
    result = CliRunner().invoke(main, ["rewrite", tf1_model, "-o", str(out), "--verify", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["wrote"] is True and report["validation"]["passed"] is True
    assert {c["name"] for c in report["validation"]["structure"]} >= {"checkpoint", "lookup-wiring"}
