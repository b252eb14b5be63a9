"""rewrite --row-dtype on both targets: the stored rows, what validate measures, and bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from graphopt.checkpoint import compress
from graphopt.rewrite import rewrite_model
from graphopt.validate import validate_models
from tests.rewrite.cases import keras_two_inputs
from tests.validate.saved_models import _edit_checkpoint, copy_model


@pytest.fixture(scope="module")
def model(tmp_path_factory, ev_ops):
    return keras_two_inputs(str(tmp_path_factory.mktemp("compressed") / "keras_two_inputs"))


def _reader(path):
    return tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "target, row_dtype", [("ev", "int8"), ("stock", "int8"), ("ev", "bfloat16"), ("stock", "float16")]
)
def test_compressed_rewrite_stores_compressed_rows_and_validates_within_the_bound(
    model, tmp_path, target, row_dtype
):
    out = str(tmp_path / "out")
    report = rewrite_model(model.path, out, target=target, row_dtype=row_dtype)
    assert report.wrote and report.plan.tables[0].row_dtype == row_dtype
    key = report.plan.tables[0].checkpoint_key
    reader = _reader(out)
    stored = reader.get_tensor(f"{key}-values" if target == "ev" else key)
    assert stored.dtype == compress.code_dtype(row_dtype)
    assert stored.shape == (50, 16 if (row_dtype == "int8" and target == "stock") else 8)
    rows = _reader(model.path).get_tensor(key)
    codes, scale_bias = compress.quantize(rows, row_dtype)
    if target == "stock" and row_dtype == "int8":  # the fused layout: codes, then scale and bias bytes
        np.testing.assert_array_equal(stored[:, :8], codes)
        np.testing.assert_array_equal(stored[:, 8:].copy().view(np.float32), scale_bias)
    else:
        np.testing.assert_array_equal(stored.view(np.uint8), codes.view(np.uint8))

    validation = validate_models(model.path, out, loader="session", batches=1)
    assert validation.passed, validation.failures()
    assert validation.tolerance.atol > 0  # the row dtype's default, not exact
    (table,) = validation.compression["tables"]
    assert table["rows_out_of_bound"] == 0 and 0 < table["max_error_over_bound"] <= 1
    outputs = [o for r in validation.runs for o in r.outputs]
    assert outputs and max(o.max_abs_diff for o in outputs) > 0  # compressed: not bit-identical


@pytest.mark.slow
def test_both_targets_read_the_same_int8_rows(model, tmp_path):
    outs = {t: str(tmp_path / t) for t in ("ev", "stock")}
    for target, out in outs.items():
        rewrite_model(model.path, out, target=target, row_dtype="int8")
    from tests.rewrite.runners import run_session

    ev, stock = (run_session(out, model.signature, model.feeds) for out in outs.values())
    for name in ev:
        np.testing.assert_array_equal(ev[name], stock[name])


@pytest.mark.slow
def test_validate_finds_a_stored_row_outside_its_bound(model, tmp_path):
    out = str(tmp_path / "out")
    key = rewrite_model(model.path, out, row_dtype="int8").plan.tables[0].checkpoint_key

    def corrupt(tensors):
        codes = tensors[f"{key}-values"].copy()
        codes[7, 3] = (int(codes[7, 3]) + 60) % 256  # many steps of the row's scale away
        tensors[f"{key}-values"] = codes

    _edit_checkpoint(out, corrupt)
    validation = validate_models(model.path, out, loader="session", batches=1, atol=1.0)
    assert not validation.passed
    check = next(c for c in validation.checks if c.name == "compressed-rows")
    assert not check.passed and "1 of 50 int8 rows outside the bound" in check.findings[0]


def test_bad_row_dtype_and_non_finite_rows_are_refused_and_nothing_is_written(model, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(compress.CompressionError, match="unknown row dtype 'int4'"):
        rewrite_model(model.path, str(out), row_dtype="int4")
    broken = copy_model(model.path, tmp_path / "nan")

    def poison(tensors):
        for k in [k for k, v in tensors.items() if getattr(v, "shape", None) == (50, 8)]:
            tensors[k] = tensors[k].copy()
            tensors[k][7, 2] = np.nan
            tensors[k][31, 0] = np.inf

    _edit_checkpoint(broken, poison)
    with pytest.raises(compress.CompressionError, match=r"NaN or Inf values in 2 row\(s\) \(7, 31\)"):
        rewrite_model(broken, str(out), row_dtype="float16")
    assert not out.exists()
    # the command: one line on stderr, exit 2, nothing written
    cli = subprocess.run(
        [sys.executable, "-m", "graphopt", "rewrite", broken, "-o", str(out), "--row-dtype", "int8"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    errors = [line for line in cli.stderr.splitlines() if "NaN or Inf" in line]
    assert cli.returncode == 2 and len(errors) == 1 and "Traceback" not in cli.stderr
    assert not out.exists()
