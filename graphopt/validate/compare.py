"""Comparing one output of the original and the rewritten model across all input cases.

An element passes when ``|rewritten - original| <= atol + rtol * |original|`` (the original is
the reference, as in ``numpy.isclose``); with the default ``atol = rtol = 0`` that is exact
equality, NaN matching NaN. The figures follow Polygraphy's report: max and mean absolute and
relative difference, the number of mismatching elements, the worst element, and the smallest
tolerance that would have passed.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tolerance:
    atol: float = 0.0
    rtol: float = 0.0

    @property
    def exact(self):
        return self.atol == 0 and self.rtol == 0

    def describe(self):
        if self.exact:
            return "exact (atol=0, rtol=0: every element must be equal; NaN matches NaN)"
        return f"atol={self.atol:g}, rtol={self.rtol:g} (|rewritten - original| <= atol + rtol * |original|)"


@dataclasses.dataclass
class WorstElement:
    case: str
    index: tuple
    original: object
    rewritten: object
    abs_diff: float | None
    mismatch: bool


@dataclasses.dataclass
class OutputComparison:
    """The running comparison of one output, fed case by case."""

    name: str
    tolerance: Tolerance
    original_dtype: str | None = None
    rewritten_dtype: str | None = None
    elements: int = 0
    mismatches: int = 0
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    sum_abs_diff: float = 0.0
    sum_rel_diff: float = 0.0
    worst: WorstElement | None = None
    problems: list = dataclasses.field(default_factory=list)  # shape/dtype/missing, one line each
    cases: int = 0
    keep: bool = False  # keep (original, rewritten) of each case, for metrics over all of them
    kept: list = dataclasses.field(default_factory=list)

    @property
    def passed(self):
        return not self.problems and self.mismatches == 0

    @property
    def mean_abs_diff(self):
        return self.sum_abs_diff / self.elements if self.elements else 0.0

    @property
    def mean_rel_diff(self):
        return self.sum_rel_diff / self.elements if self.elements else 0.0

    def add(self, case, original, rewritten):
        """Compare one case's arrays; shape or dtype differences are recorded as problems."""
        original, rewritten = np.asarray(original), np.asarray(rewritten)
        self.cases += 1
        if self.keep:
            self.kept.append((original, rewritten))
        self.original_dtype = self.original_dtype or _dtype_name(original)
        self.rewritten_dtype = self.rewritten_dtype or _dtype_name(rewritten)
        if _dtype_name(original) != _dtype_name(rewritten):
            self._problem(
                f"dtype differs: original {_dtype_name(original)}, rewritten {_dtype_name(rewritten)}"
            )
        if original.shape != rewritten.shape:
            self._problem(
                f"case {case}: shape differs: original {list(original.shape)}, "
                f"rewritten {list(rewritten.shape)}"
            )
            return
        self.elements += original.size
        if original.size == 0:
            return
        numeric = original.dtype.kind in "biufc" and rewritten.dtype.kind in "biufc"
        if not numeric:
            equal = original == rewritten
            self._count(case, original, rewritten, ~equal, None, None)
            return
        a = original.astype(np.float64) if original.dtype.kind != "c" else original
        b = rewritten.astype(np.float64) if rewritten.dtype.kind != "c" else rewritten
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            # Equality on the arrays as given: int64 ids past 2**53 stay exact.
            same = (original == rewritten) | (np.isnan(a) & np.isnan(b))
            if original.dtype.kind in "iu" and rewritten.dtype.kind in "iu":
                # Subtract as integers: the float64 copies of ids past 2**53 may be equal.
                raw_diff = np.abs(original.astype(np.int64) - rewritten.astype(np.int64)).astype(np.float64)
            else:
                raw_diff = np.abs(a - b)
            abs_diff = np.where(same, 0.0, raw_diff)
            abs_diff = np.where(np.isnan(abs_diff), np.inf, abs_diff)  # NaN against a number
            magnitude = np.abs(a)
            rel_diff = np.where(abs_diff == 0, 0.0, abs_diff / magnitude)
            rel_diff = np.where(np.isnan(rel_diff), np.inf, rel_diff)
            allowed = self.tolerance.atol + self.tolerance.rtol * np.where(
                np.isfinite(magnitude), magnitude, 0
            )
            bad = ~same if self.tolerance.exact else ~same & ~(abs_diff <= allowed)
        self._count(case, original, rewritten, bad, abs_diff, rel_diff)

    def _count(self, case, original, rewritten, bad, abs_diff, rel_diff):
        self.mismatches += int(bad.sum())
        if abs_diff is not None:
            self.sum_abs_diff += float(np.sum(abs_diff, dtype=np.float64))
            self.sum_rel_diff += float(np.sum(rel_diff, dtype=np.float64))
            self.max_abs_diff = max(self.max_abs_diff, float(abs_diff.max()))
            self.max_rel_diff = max(self.max_rel_diff, float(rel_diff.max()))
        # The worst element: the largest difference among the mismatches (the first mismatch
        # for strings), else the largest difference within tolerance; none when all are equal.
        if bad.any():
            ranked = np.where(bad, 0.0 if abs_diff is None else abs_diff, -1.0)
        elif abs_diff is not None and abs_diff.max() > 0:
            ranked = abs_diff
        else:
            return
        flat = int(np.argmax(ranked))
        mismatch = bool(bad.flat[flat])
        diff = None if abs_diff is None else float(abs_diff.flat[flat])
        key = (mismatch, diff or 0.0)
        if self.worst is None or key > (self.worst.mismatch, self.worst.abs_diff or 0.0):
            index = _index(np.unravel_index(flat, bad.shape))
            self.worst = WorstElement(
                case, index, _item(original[index]), _item(rewritten[index]), diff, mismatch
            )

    def _problem(self, text):
        if text not in self.problems:
            self.problems.append(text)

    def missing(self, side):
        self._problem(f"missing from the {side} model's outputs")

    def to_dict(self):
        return {
            "name": self.name,
            "passed": self.passed,
            "original_dtype": self.original_dtype,
            "rewritten_dtype": self.rewritten_dtype,
            "cases": self.cases,
            "elements": self.elements,
            "mismatches": self.mismatches,
            "max_abs_diff": _json_float(self.max_abs_diff),
            "mean_abs_diff": _json_float(self.mean_abs_diff),
            "max_rel_diff": _json_float(self.max_rel_diff),
            "mean_rel_diff": _json_float(self.mean_rel_diff),
            "min_atol_to_pass": _json_float(self.max_abs_diff),
            "min_rtol_to_pass": _json_float(self.max_rel_diff),
            "worst": None
            if self.worst is None
            else {
                "case": self.worst.case,
                "index": list(self.worst.index),
                "original": _json_value(self.worst.original),
                "rewritten": _json_value(self.worst.rewritten),
                "abs_diff": _json_float(self.worst.abs_diff),
                "mismatch": self.worst.mismatch,
            },
            "problems": list(self.problems),
        }


def _dtype_name(array):
    return "string" if array.dtype.kind in "OSU" else array.dtype.name


def _index(index):
    return tuple(int(i) for i in index)


def _item(value):
    value = value.item() if hasattr(value, "item") else value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _json_float(x):
    if x is None:
        return None
    x = float(x)
    if np.isfinite(x):
        return x
    return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")


def _json_value(v):
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, complex):
        return str(v)
    return v
