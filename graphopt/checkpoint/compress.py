"""Compressed rows: how a float32 table's rows become int8 row-wise or 16-bit rows, and back.

The arithmetic is the op library's (custom_ops/.../row_codec.h), float32 step by step, so a
checkpoint compressed here and a row the table quantizes itself (an insert, a delta) are
bit-identical, and the stock target's ``Cast`` + ``Mul`` + ``AddV2`` reads what the ev table's
find returns:

- int8 (FBGEMM's fused 8-bit row-wise layout): per row ``bias = min``, ``scale = (max - min) /
  255``, ``code = rint((x - bias) / scale)`` as uint8 (0 for a constant row); the value read back
  is ``code * scale + bias``, within ``scale / 2`` of the original (plus float32 rounding);
- float16 / bfloat16: the value rounded to nearest even, within half a unit in the last place.
"""

import numpy as np

from graphopt.errors import GraphoptError

ROW_DTYPES = ("float32", "int8", "float16", "bfloat16")
# mantissa bits and the smallest spacing (subnormal) of the 16-bit types
_FLOAT16_BITS = {"float16": (10, 2.0**-24), "bfloat16": (7, 2.0**-133)}
# float32 rounding in int8's quantize and dequantize: a few units in the last place of the row's
# largest magnitude (the scale/2 bound is for exact arithmetic).
_INT8_ROUNDING_ULPS = 8


class CompressionError(GraphoptError):
    """A table cannot be compressed to the asked row dtype (non-float32 rows, NaN/Inf, range)."""


def bfloat16_dtype():
    """numpy's bfloat16 (ml_dtypes, which TensorFlow ships)."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def code_dtype(row_dtype: str) -> np.dtype:
    return {"int8": np.dtype(np.uint8), "float16": np.dtype(np.float16), "bfloat16": bfloat16_dtype()}[
        row_dtype
    ]


def check_row_dtype(row_dtype: str) -> str:
    if row_dtype not in ROW_DTYPES:
        raise CompressionError(
            f"unknown row dtype {row_dtype!r}; use one of {', '.join(ROW_DTYPES)} (--row-dtype)"
        )
    return row_dtype


def check_rows(rows: np.ndarray, row_dtype: str, table: str) -> None:
    """Raises CompressionError naming the table (and the first bad rows) when ``rows`` cannot be
    stored as ``row_dtype``: rows that are not float32, NaN/Inf values, float16 overflow."""
    if rows.dtype != np.float32:
        raise CompressionError(
            f"table {table} has {rows.dtype} rows; --row-dtype compresses float32 tables only "
            "(rewrite it with --row-dtype float32)"
        )
    flat = rows.reshape(rows.shape[0], -1) if rows.ndim > 1 else rows.reshape(-1, 1)
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad.size:
        shown = ", ".join(str(int(i)) for i in bad[:5]) + (
            f" and {bad.size - 5} more" if bad.size > 5 else ""
        )
        raise CompressionError(
            f"table {table} has NaN or Inf values in {bad.size} row(s) ({shown}); fix those rows "
            "or rewrite with --row-dtype float32"
        )
    if row_dtype == "float16":
        over = np.flatnonzero((np.abs(flat) > 65504).any(axis=1))
        if over.size:
            shown = ", ".join(str(int(i)) for i in over[:5])
            raise CompressionError(
                f"table {table} has values beyond float16's range (|v| > 65504) in {over.size} "
                f"row(s) ({shown}); use --row-dtype int8 or bfloat16"
            )


def quantize(rows: np.ndarray, row_dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(codes [n, dim], scale_bias float32 [n, 2] for int8, else None) of float32 rows."""
    rows = np.asarray(rows, np.float32)
    if row_dtype != "int8":
        return rows.astype(code_dtype(row_dtype)), None
    lo = rows.min(axis=1, keepdims=True)
    hi = rows.max(axis=1, keepdims=True)
    scale = (hi - lo) / np.float32(255.0)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    t = np.where(scale > 0, np.rint((rows - lo) / safe), np.float32(0.0))
    codes = np.clip(t, 0, 255).astype(np.uint8)
    return codes, np.concatenate([scale, lo], axis=1).astype(np.float32)


def dequantize(codes: np.ndarray, scale_bias: np.ndarray | None, row_dtype: str) -> np.ndarray:
    """float32 rows of stored codes: code * scale + bias (two float32 roundings), or widened."""
    if row_dtype != "int8" or scale_bias is None:
        return np.asarray(codes).astype(np.float32)
    scaled = codes.astype(np.float32) * scale_bias[:, :1]
    return (scaled + scale_bias[:, 1:]).astype(np.float32)


def error_bound(original: np.ndarray, scale_bias: np.ndarray | None, row_dtype: str) -> np.ndarray:
    """The per-element bound of |original - dequantized|: scale/2 (+ float32 rounding) for int8,
    half a unit in the last place of the 16-bit type for float16/bfloat16."""
    original = np.asarray(original, np.float32)
    if row_dtype == "float32":
        return np.zeros_like(original)
    if row_dtype == "int8" and scale_bias is not None:
        magnitude = np.abs(original).max(axis=1, keepdims=True)
        rounding = _INT8_ROUNDING_ULPS * np.spacing(magnitude.astype(np.float32))
        return np.broadcast_to(scale_bias[:, :1] / 2 + rounding, original.shape).astype(np.float32)
    bits, smallest = _FLOAT16_BITS[row_dtype]
    _, exponent = np.frexp(np.abs(original))
    ulp = np.maximum(np.ldexp(np.float32(1.0), exponent - 1 - bits), np.float32(smallest))
    return (ulp / 2).astype(np.float32)


def stored_bytes_per_row(row_dtype: str, dim: int) -> int:
    """Bytes of one stored row: dim floats, dim + 8 (int8: codes, scale, bias), or 2 * dim."""
    return {"float32": 4 * dim, "int8": dim + 8, "float16": 2 * dim, "bfloat16": 2 * dim}[row_dtype]
