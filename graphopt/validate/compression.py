"""What a compressed rewrite (``rewrite --row-dtype``) costs: rows against their bound, outputs, AUC.

A compressed rewrite cannot be bit-identical, so validate measures instead of asserting equality:
- every stored row of each compressed table is read back (ev: ``K-values`` / ``K-scale_bias``;
  stock: ``K`` itself, int8 in the fused layout) and compared with the original's row: each element
  must lie within the scheme's bound (graphopt.checkpoint.compress.error_bound: scale/2 for int8,
  half an ulp of the 16-bit type);
- outputs are compared within ``--atol/--rtol`` (defaults per row dtype, DEFAULT_ATOL), with their
  max and mean absolute difference reported as for any rewrite;
- with ``--data`` (the course's samples, which carry labels), the ROC AUC of each binary output of
  the original and of the rewrite, and the change.
"""

import dataclasses
import json
import os

import numpy as np

from graphopt.checkpoint import compress
from graphopt.errors import ModelError
from graphopt.ev import contract
from graphopt.validate.report import CheckResult

# Output tolerances of a compressed rewrite when none is given (docs/validate.md): the course
# model's probabilities move by ~1e-4 (int8) and ~1e-5 (16-bit) on the test split.
DEFAULT_ATOL = {"int8": 1e-2, "float16": 1e-3, "bfloat16": 1e-2}


@dataclasses.dataclass
class TableRows:
    """One compressed table's rows against the original's."""

    name: str
    row_dtype: str
    rows: int
    rows_out_of_bound: int
    max_abs_error: float
    max_error_over_bound: float  # <= 1 within the bound

    def to_dict(self):
        return dataclasses.asdict(self)


def compressed_tables(rewritten) -> list[dict]:
    """The manifest's entries of the tables a rewrite compressed (none for float32 rewrites)."""
    path = os.path.join(rewritten, contract.MANIFEST)
    if not os.path.isfile(path):
        return []
    try:
        with open(path) as f:
            tables = json.load(f).get("tables", [])
    except (OSError, ValueError):
        return []
    return [t for t in tables if t.get("row_dtype", "float32") != "float32"]


def row_dtype_of(tables) -> str | None:
    """The row dtype of a compressed rewrite (its widest-bound one if several), or None."""
    dtypes = {t["row_dtype"] for t in tables}
    for d in ("int8", "bfloat16", "float16"):
        if d in dtypes:
            return d
    return None


def _variables(path):
    import tensorflow as tf

    return tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))


def stored_rows(reader, key, row_dtype):
    """(codes, scale_bias or None) of a compressed table saved under ``key``."""
    _, values, scale_bias_name = contract.compressed_tensor_names(key)
    if reader.has_tensor(scale_bias_name):  # ev target
        codes, scale_bias = reader.get_tensor(values), reader.get_tensor(scale_bias_name)
        return codes, scale_bias if row_dtype == "int8" else None
    stored = reader.get_tensor(key)  # stock target: the variable holds the stored rows
    if row_dtype != "int8":
        return stored, None
    return stored[:, :-8], np.ascontiguousarray(stored[:, -8:]).view(np.float32)


def check_rows(original, rewritten, tables) -> tuple[CheckResult, list[TableRows]]:
    """The compressed-rows check: every element of every compressed table within its bound."""
    try:
        source, target = _variables(original), _variables(rewritten)
        figures = []
        for t in tables:
            key, row_dtype = t["checkpoint_key"], t["row_dtype"]
            rows = source.get_tensor(key).astype(np.float32)
            codes, scale_bias = stored_rows(target, key, row_dtype)
            figures.append(compare_rows(t["name"], rows, codes, scale_bias, row_dtype))
    except (ValueError, KeyError, OSError) as exc:
        raise ModelError(
            f"the compressed rows of {rewritten} cannot be read ({exc}); rewrite it again"
        ) from None
    except Exception as exc:  # tf.errors.OpError: a missing or damaged tensor
        return CheckResult(
            "compressed-rows", "compressed rows within their bound", False, "", [f"cannot read: {exc}"]
        ), []
    findings = [
        f"table {f.name}: {f.rows_out_of_bound} of {f.rows} {f.row_dtype} rows outside the bound "
        f"(max |row - stored row| {f.max_abs_error:.3g}, {f.max_error_over_bound:.3g}x the bound)"
        for f in figures
        if f.rows_out_of_bound
    ]
    worst = max(figures, key=lambda f: f.max_error_over_bound, default=None)
    summary = (
        f"{sum(f.rows for f in figures)} rows of {len(figures)} table(s); max |row - stored row| "
        f"{max(f.max_abs_error for f in figures):.3g}, at most {worst.max_error_over_bound:.3f}x the bound"
        if worst
        else "no compressed table"
    )
    return CheckResult(
        "compressed-rows", "compressed rows within their bound", not findings, summary, findings
    ), figures


def compare_rows(name, rows, codes, scale_bias, row_dtype) -> TableRows:
    if codes.shape[0] != rows.shape[0] or codes.shape[1] != rows.shape[1]:
        return TableRows(name, row_dtype, rows.shape[0], rows.shape[0], float("inf"), float("inf"))
    decoded = compress.dequantize(codes, scale_bias, row_dtype)
    bound = compress.error_bound(rows, scale_bias, row_dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(decoded.astype(np.float64) - rows.astype(np.float64))
        ratio = np.where(error == 0, 0.0, error / bound)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    return TableRows(
        name,
        row_dtype,
        int(rows.shape[0]),
        int((ratio > 1).any(axis=1).sum()),
        float(error.max(initial=0.0)),
        float(ratio.max(initial=0.0)),
    )


def roc_auc(labels, scores) -> float | None:
    """ROC AUC (Mann-Whitney U, tied scores share their average rank), or None without both classes."""
    labels = np.asarray(labels).reshape(-1) == 1
    scores = np.asarray(scores, np.float64).reshape(-1)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct score
    ranks = average_rank[inverse]
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def data_labels(path):
    """The binary ``label`` column (0/1) of a --data file (CSV or .npz), or None without one."""
    import csv

    if path is None or not os.path.isfile(path):
        return None
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as f:
                labels = np.asarray(f["label"]) if "label" in f.files else None
        else:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if "label" not in (reader.fieldnames or []):
                    return None
                labels = np.array([float(row["label"]) for row in reader])
    except (OSError, ValueError, KeyError, csv.Error):
        return None
    if labels is None or not np.isin(labels, (0, 1)).all():
        return None
    return labels.reshape(-1)
