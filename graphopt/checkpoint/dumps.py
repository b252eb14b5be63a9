"""Table dumps written by other systems, read as (keys, values) for one table.

- HugeCTR (HPS / sparse model folders): ``key`` (int64, little-endian, one per row) and
  ``emb_vector`` (float32, ``dim`` per row) side by side;
- HKV / TFRA key-value dumps: ``NAME-keys`` (int64) and ``NAME-values`` (float32 rows), the raw
  binaries of TFRA's FileSystemSaver and of HKV's export; or an ``.npz`` with ``keys`` and ``values``.
"""

import os

import numpy as np

from graphopt.errors import DataError


def _pair(files):
    """(format, keys file, values file) of the paths given (files, or one folder)."""
    paths = []
    for f in files:
        if os.path.isdir(f):
            paths += [os.path.join(f, n) for n in sorted(os.listdir(f))]
        else:
            paths.append(f)
    names = {os.path.basename(p): p for p in paths}
    if "key" in names and "emb_vector" in names:
        return "hugectr", names["key"], names["emb_vector"]
    keys = [p for p in paths if p.endswith("-keys")]
    values = [p for p in paths if p.endswith("-values")]
    if len(keys) == 1 and len(values) == 1:
        return "kv", keys[0], values[0]
    npz = [p for p in paths if p.endswith(".npz")]
    if len(npz) == 1 and len(paths) == 1:
        return "npz", npz[0], npz[0]
    raise DataError(
        f"{' '.join(files)}: not a table dump; give HugeCTR's key and emb_vector files (or their "
        "folder), a NAME-keys / NAME-values pair (TFRA, HKV) or one .npz with keys and values"
    )


def read_dump(files, table, dim):
    """(keys int64 [n], values float32 [n, dim]) of a dump for ``table`` of ``dim``; DataError
    naming the table when the dump is not of that dim or its keys and rows disagree."""
    kind, keys_path, values_path = _pair(list(files))
    try:
        if kind == "npz":
            with np.load(keys_path) as f:
                keys, values = (
                    f["keys"].astype(np.int64, copy=False),
                    f["values"].astype(np.float32, copy=False),
                )
        else:
            keys = np.fromfile(keys_path, dtype="<i8")
            values = np.fromfile(values_path, dtype="<f4")
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(
            f"table {table}: cannot read the dump {keys_path} ({exc}); give a complete dump"
        ) from None
    if kind == "npz" and values.ndim == 2 and values.shape[1] != dim:
        raise DataError(
            f"table {table}: the dump's rows have {values.shape[1]} floats, the table's dim is {dim}; "
            "pass the dump of a table of the same dim"
        )
    values = values.reshape(-1)
    if len(keys) == 0 or values.size % dim or values.size // dim != len(keys):
        per_row = values.size / len(keys) if len(keys) else float("nan")
        raise DataError(
            f"table {table}: the dump holds {len(keys)} keys and {values.size} floats "
            f"({per_row:g} per key), the table's dim is {dim}; pass the dump of a table of dim {dim}"
        )
    if len(np.unique(keys)) != len(keys):
        raise DataError(f"table {table}: the dump's keys repeat; pass a dump with each key once")
    return keys, values.reshape(len(keys), dim)
