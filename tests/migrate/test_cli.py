"""The migration as a user meets it: inspect names the system and every op, rewrite migrates,
validate --reference-outputs compares with the recorded outputs."""

import json
import os

from click.testing import CliRunner

from graphopt.cli import main
from tests.migrate.conftest import fixture_path, reference_path


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_inspect_names_system_and_ops():
    result = invoke("inspect", fixture_path("keras_embedding"))
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("source system: TensorFlow Recommenders-Addons (TFRA) dynamic embedding (tfra)")
    assert "table emb-parameter_mht_1of1: [?, 4] float32" in out
    assert "TFRA>CuckooHashTableFind at " in out and "-> GraphoptEvFind" in out
    assert "-> removed (rows -> in-row slot accumulator of emb-parameter_mht_1of1)" in out
    data = json.loads(invoke("inspect", fixture_path("keras_embedding"), "--json").output)
    assert data["system"] == "tfra" and {t["slot_of"] for t in data["tables"]} == {
        None,
        "emb-parameter_mht_1of1",
    }


def test_rewrite_then_validate_against_recorded_outputs(tmp_path):
    out = str(tmp_path / "out")
    result = invoke("rewrite", fixture_path("keras_embedding"), "-o", out)
    assert result.exit_code == 0, result.output
    assert "migrated 1 TensorFlow Recommenders-Addons (TFRA) dynamic embedding table(s)" in result.output
    assert "note: table emb-parameter_mht_1of1: adagrad slots" in result.output
    manifest = json.load(open(os.path.join(out, "graphopt_manifest.json")))
    assert manifest["system"] == "tfra" and manifest["replaced"]
    args = [
        "validate",
        fixture_path("keras_embedding"),
        out,
        "--reference-outputs",
        reference_path("keras_embedding"),
    ]
    exact = invoke(*args)
    assert exact.exit_code == 1 and "lookup batch 0: bit-identical" in exact.output  # heads round differently
    within = invoke(*args, "--atol", "1e-6")
    assert within.exit_code == 0 and within.output.rstrip().endswith("validation passed"), within.output


def test_static_table_options_are_refused(tmp_path):
    result = invoke("rewrite", fixture_path("tf1_sparse"), "-o", str(tmp_path / "o"), "--target", "stock")
    assert result.exit_code == 2 and "--target stock" in result.stderr and not os.path.exists(tmp_path / "o")
