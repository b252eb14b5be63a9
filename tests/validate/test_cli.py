import json
import os

import pytest
import saved_models
from click.testing import CliRunner

from graphopt.cli import main


def run(*args):
    return CliRunner().invoke(main, ["validate", *args])


def test_passed_is_exit_0_with_the_human_report(tf1_model, copy_of):
    result = run(
        tf1_model, copy_of(tf1_model), "--id-range", "ids=50", "--loader", "session", "--batches", "1"
    )
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
        f"graphopt: error: {tmp_path / 'missing'}: no such directory; give a SavedModel directory"
    ]
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


@pytest.mark.exact
@pytest.mark.parametrize("target", ["ev", "stock"])
@pytest.mark.parametrize("form", ["keras", "feature-columns", "tf1"])
def test_rewrite_verify_passes_on_every_course_form_and_target(course_models, tmp_path, form, target):
    # Each output is exact through tf.saved_model.load against the original's own tf2 load (the
    # stock output of a TF2 export keeps its object graph, so it takes the original's path).
    original, _ = course_models(form)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["rewrite", original, "-o", str(out), "--target", target, "--verify", "--verify-loader", "tf2"]
        + ["--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["wrote"] is True and report["validation"]["passed"] is True, report["validation"][
        "failures"
    ]
    assert {r["loader"] for r in report["validation"]["numerics"]} == {"tf2"}
    assert out.is_dir()


def test_a_failed_verify_leaves_no_output_and_keeps_an_existing_one(module_model, tmp_path):
    from graphopt.rewrite import rewrite_model
    from graphopt.validate import validate_models

    def break_then_validate(staged):  # a rewrite that got one table value wrong
        saved_models.change_checkpoint_value(staged, ["items/.ATTRIBUTES/VARIABLE_VALUE-values"], (3, 1))
        return validate_models(module_model, staged, loader="session", oov=False)

    out = tmp_path / "out"
    report = rewrite_model(module_model, str(out), verify=break_then_validate)
    assert not report.verification.passed and not report.wrote
    assert report.message == f"verification failed: {out} was not written (an existing one is kept)"
    assert not out.exists() and os.listdir(tmp_path) == []
    out.mkdir()
    (out / "keep").write_text("the old output")
    report = rewrite_model(module_model, str(out), overwrite=True, verify=break_then_validate)
    assert not report.wrote and os.listdir(out) == ["keep"] and sorted(os.listdir(tmp_path)) == ["out"]


def test_verify_of_a_meta_graph_input_is_refused_up_front(tmp_path):
    from tests.rewrite import cases

    meta = cases.tf1_checkpoint_meta(str(tmp_path / "ck")).path
    result = CliRunner().invoke(main, ["rewrite", meta, "-o", str(tmp_path / "out"), "--verify"])
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    assert result.output.strip().splitlines() == [
        f"graphopt: error: --verify validates SavedModels and {meta} is not one; run without --verify "
        "(or validate a SavedModel export of it)"
    ]
