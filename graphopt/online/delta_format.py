"""The delta format: what changed in a model since the version it serves.

A delta is a directory ``MODEL_BASE/<version>/deltas/<sequence>/`` holding one TF checkpoint bundle
per table (``table-<i>.index`` / ``.data-00000-of-00001`` with tensors ``keys`` int64 [n],
``values`` float32 [n, dim], ``versions`` int64 [n] and ``removed_keys`` int64 [m]), one bundle
``dense`` with the dense variables that changed, whole (tensor ``dense-<j>``; format version 2, only
when there are some), and ``manifest.json``: format and its version, the version it applies to and
that version's fingerprint, the sequence number, the steps it covers, each table's name, dim,
dtypes and counts, each dense variable's name, dtype and shape, and every file's size and CRC32C.
It is written into a hidden stage beside it and renamed into place complete; docs/online.md
documents it.
"""

import dataclasses
import datetime
import hashlib
import json
import os

import numpy as np

from graphopt.checkpoint.bundle import crc32c_extend
from graphopt.errors import GraphoptError
from graphopt.output import staged_output

FORMAT = "graphopt-delta"
FORMAT_VERSION = 2  # 2: dense variables; a delta without them is written as version 1
READABLE_VERSIONS = (1, 2)
DENSE_BUNDLE = "dense"
DENSE_DTYPES = ("float16", "bfloat16", "float32", "float64")
MANIFEST = "manifest.json"
DELTAS_DIR = "deltas"
TENSORS = ("keys", "values", "versions", "removed_keys")


class DeltaError(GraphoptError):
    """A delta cannot be written, or is refused (incomplete, corrupted, for another model)."""


class DeltaIncomplete(DeltaError):
    """A numbered delta directory without its manifest: still being copied, or abandoned."""


@dataclasses.dataclass
class TableDelta:
    """One table's part of a delta: rows to upsert (keys, values, their last steps), keys to remove."""

    name: str
    keys: np.ndarray
    values: np.ndarray  # read_delta gives a float32 tf.Tensor: no copy on its way to the op
    versions: np.ndarray
    removed_keys: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


@dataclasses.dataclass
class DenseDelta:
    """One dense variable's new value, whole: dense variables are small, and a delta must carry
    them for the served model to compute what the trained one computes."""

    name: str
    value: np.ndarray  # read_delta gives a tf.Tensor of the variable's dtype


@dataclasses.dataclass
class Delta:
    """A delta read and checked: its manifest fields and each table's arrays."""

    path: str
    sequence: int
    base_version: int
    fingerprint: str
    since_step: int | None
    up_to_step: int | None
    created: str
    tables: list[TableDelta]
    dense: list[DenseDelta] = dataclasses.field(default_factory=list)

    @property
    def upserts(self) -> int:
        return sum(len(t.keys) for t in self.tables)

    @property
    def removals(self) -> int:
        return sum(len(t.removed_keys) for t in self.tables)


def model_fingerprint(version_dir) -> str:
    """SHA-256 of the version's saved_model.pb: a delta names the exact model it was made for."""
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        path = os.path.join(version_dir, name)
        if os.path.isfile(path):
            return "sha256:" + _sha256(path)
    raise DeltaError(
        f"{version_dir} holds no saved_model.pb; deltas go beside a served model version "
        "(MODEL_BASE/<version>)"
    )


def version_of(version_dir) -> int:
    """The whole-number version a version directory stands for (its name)."""
    name = os.path.basename(os.path.normpath(version_dir))
    if not name.isdigit():
        raise DeltaError(
            f"{version_dir} is not a model version directory: its name must be a whole number "
            "(MODEL_BASE/<version>)"
        )
    return int(name)


def deltas_dir(version_dir) -> str:
    return os.path.join(version_dir, DELTAS_DIR)


def sequences(version_dir) -> list[int]:
    """The sequence numbers of the numbered entries under version_dir/deltas, ascending (stages and
    other names are not deltas)."""
    try:
        entries = os.listdir(deltas_dir(version_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(e) for e in entries if e.isdigit())


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_crc32c(path) -> str:
    """CRC32C of a file as 8 hex digits: TensorFlow's native CRC32C (GB/s), so checking a delta
    costs the serving process little CPU (a 26 MB file: 16 ms, SHA-256 53 ms)."""
    crc, buffer = 0, bytearray(1 << 18)  # 256 KiB a call: the GIL is held for ~0.1 ms at a time
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buffer)
            if not n:
                return f"{crc:08x}"
            crc = crc32c_extend(crc, memoryview(buffer)[:n])


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_delta(
    version_dir,
    tables: list[TableDelta],
    since_step=None,
    up_to_step=None,
    dense: list[DenseDelta] | tuple[DenseDelta, ...] = (),
) -> str:
    """Write ``tables`` and ``dense`` as the next delta of ``version_dir``; returns its directory.

    Files are written and synced in a hidden stage under version_dir/deltas and the stage is
    renamed to the next sequence number only when complete, so a reader never sees part of it.
    """
    import tensorflow as tf

    fingerprint = model_fingerprint(version_dir)
    base_version = version_of(version_dir)
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise DeltaError(f"a delta names each table once; got {names}")
    dense_names = [d.name for d in dense]
    if len(set(dense_names)) != len(dense_names):
        raise DeltaError(f"a delta names each dense variable once; got {dense_names}")
    dense_values = [_checked_dense(d) for d in dense]
    existing = sequences(version_dir)
    sequence = (existing[-1] if existing else 0) + 1
    out = os.path.join(deltas_dir(version_dir), str(sequence))
    entries = []
    with staged_output(out) as stage:
        os.makedirs(stage)
        for i, table in enumerate(tables):
            arrays = _checked_arrays(table)
            prefix = os.path.join(stage, f"table-{i}")
            tf.raw_ops.SaveV2(
                prefix=prefix,
                tensor_names=list(TENSORS),
                shape_and_slices=[""] * 4,
                tensors=[tf.constant(arrays[k]) for k in TENSORS],
            )
            entries.append(
                {
                    "name": table.name,
                    "bundle": f"table-{i}",
                    "dim": table.dim,
                    "key_dtype": "int64",
                    "dtype": "float32",
                    "upserts": len(table.keys),
                    "removals": len(table.removed_keys),
                }
            )
        dense_entries = []
        if dense:
            tf.raw_ops.SaveV2(
                prefix=os.path.join(stage, DENSE_BUNDLE),
                tensor_names=[f"dense-{j}" for j in range(len(dense))],
                shape_and_slices=[""] * len(dense),
                tensors=[tf.constant(v) for v in dense_values],
            )
            dense_entries = [
                {
                    "name": d.name,
                    "tensor": f"dense-{j}",
                    "dtype": _dtype_name(v),
                    "shape": list(v.shape),
                }
                for j, (d, v) in enumerate(zip(dense, dense_values, strict=True))
            ]
        files = {}
        for name in sorted(os.listdir(stage)):
            path = os.path.join(stage, name)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            files[name] = {"bytes": os.path.getsize(path), "crc32c": file_crc32c(path)}
        manifest = {
            "format": FORMAT,
            # An older graphopt reading only tables refuses a delta carrying dense variables.
            "format_version": FORMAT_VERSION if dense else 1,
            "sequence": sequence,
            "base_version": base_version,
            "model_fingerprint": fingerprint,
            "since_step": since_step,
            "up_to_step": up_to_step,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "tables": entries,
            **({"dense": dense_entries} if dense else {}),
            "files": files,
        }
        with open(os.path.join(stage, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(stage)
    _fsync_dir(deltas_dir(version_dir))
    return out


def _checked_arrays(table: TableDelta) -> dict[str, np.ndarray]:
    keys = np.asarray(table.keys)
    values = np.asarray(table.values)
    versions = np.asarray(table.versions)
    removed = np.asarray(table.removed_keys)
    for label, array in (("keys", keys), ("versions", versions), ("removed_keys", removed)):
        if array.ndim != 1 or not (array.dtype.kind in "iu" or array.size == 0):
            raise DeltaError(
                f"table {table.name}: {label} must be a 1-D integer array, got {array.dtype} {array.shape}"
            )
    if values.ndim != 2 or values.shape[0] != len(keys) or len(versions) != len(keys):
        raise DeltaError(
            f"table {table.name}: values must be [{len(keys)}, dim] and versions "
            f"[{len(keys)}] to match the keys, got {values.shape} and {versions.shape}"
        )
    return {
        "keys": keys.astype(np.int64),
        "values": values.astype(np.float32),
        "versions": versions.astype(np.int64),
        "removed_keys": removed.astype(np.int64),
    }


def _dtype_name(value) -> str:
    import tensorflow as tf

    return tf.as_dtype(value.dtype).name


def _checked_dense(dense: DenseDelta):
    value = dense.value if hasattr(dense.value, "numpy") else np.asarray(dense.value)
    if _dtype_name(value) not in DENSE_DTYPES:
        raise DeltaError(
            f"dense variable {dense.name}: dtype {_dtype_name(value)}, a delta carries "
            f"floating-point variables ({', '.join(DENSE_DTYPES)})"
        )
    return value


def read_manifest(path) -> dict:
    """The manifest of the delta at ``path``; DeltaIncomplete when it is not there yet."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise DeltaIncomplete(
            f"delta {path} is incomplete (no {MANIFEST}): still being written, or "
            "abandoned; write deltas into a stage and rename them into place"
        )
    try:
        with open(manifest_path, "rb") as f:
            manifest = json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise DeltaError(
            f"delta {path}: {MANIFEST} is not valid JSON ({exc}); write the delta again"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DeltaError(f"delta {path}: {MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise DeltaError(
            f"delta {path} has format version {manifest.get('format_version')!r}; this "
            f"graphopt reads versions {', '.join(map(str, READABLE_VERSIONS))}: upgrade graphopt "
            "or write it again"
        )
    return manifest


def read_delta(
    path,
    base_version: int,
    fingerprint: str,
    table_dims: dict[str, int] | None = None,
    dense_specs: dict[str, tuple[str, tuple[int, ...]]] | None = None,
) -> Delta:
    """Read the delta at ``path`` and check all of it before anything is applied.

    Refused (DeltaError, saying why): no manifest yet, another format, a sequence number that is
    not the directory's, another base version or model fingerprint, a missing, truncated or
    corrupted file (size or CRC32C), a table the model lacks (``table_dims``: name -> dim; None
    takes the manifest's tables and dims as they are), another dim, keys or values of the wrong
    dtype or shape, a dense variable the model lacks or of another dtype or shape (``dense_specs``:
    name -> (dtype name, shape); None takes the manifest's as they are).
    """
    import tensorflow as tf

    manifest = read_manifest(path)
    try:
        sequence = int(manifest["sequence"])
        entries = list(manifest["tables"])
        files = dict(manifest["files"])
        if str(sequence) != os.path.basename(os.path.normpath(path)):
            raise DeltaError(f"delta {path} says it is delta {sequence}: a renamed delta is refused")
        if manifest["base_version"] != base_version:
            raise DeltaError(
                f"delta {path} was made for version {manifest['base_version']}, not version "
                f"{base_version}; deltas apply only to the version they were made for"
            )
        if manifest["model_fingerprint"] != fingerprint:
            raise DeltaError(
                f"delta {path} was made for another model (fingerprint "
                f"{manifest['model_fingerprint']}, this version's is {fingerprint}); "
                "write deltas against the served version directory"
            )
        for name, expected in files.items():
            file_path = os.path.join(path, name)
            if os.path.basename(name) != name or not os.path.isfile(file_path):
                raise DeltaError(f"delta {path}: {name} is missing; the delta is incomplete, write it again")
            size = os.path.getsize(file_path)
            if size != expected["bytes"]:
                raise DeltaError(
                    f"delta {path}: {name} has {size} bytes, its manifest says "
                    f"{expected['bytes']} (truncated?); write the delta again"
                )
            if file_crc32c(file_path) != expected["crc32c"]:
                raise DeltaError(
                    f"delta {path}: {name} does not match its CRC32C checksum (corrupted); "
                    "write the delta again"
                )
        tables = []
        for entry in entries:
            tables.append(_read_table(tf, path, entry, files, table_dims))
        dense = _read_dense(tf, path, list(manifest.get("dense", [])), files, dense_specs)
    except (KeyError, TypeError, ValueError) as exc:
        raise DeltaError(
            f"delta {path}: {MANIFEST} lacks or mangles a field ({exc!r}); write the delta again"
        ) from None
    except OSError as exc:  # a file vanishing, an I/O error, no permission: refused, not a crash
        where = exc.filename or path
        raise DeltaError(
            f"delta {path}: cannot read {where}: {(exc.strerror or str(exc)).lower()}; "
            "check the disk and the files' permissions, or write the delta again"
        ) from None
    return Delta(
        path,
        sequence,
        base_version,
        fingerprint,
        manifest.get("since_step"),
        manifest.get("up_to_step"),
        str(manifest.get("created", "")),
        tables,
        dense,
    )


def _read_dense(tf, path, entries, files, dense_specs) -> list[DenseDelta]:
    if not entries:
        return []
    if f"{DENSE_BUNDLE}.index" not in files:
        raise DeltaError(f"delta {path}: its dense variables' bundle is not among its checksummed files")
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise DeltaError(f"delta {path} names a dense variable twice: {names}")
    try:
        reader = tf.train.load_checkpoint(os.path.join(path, DENSE_BUNDLE))
        dtypes, shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as exc:
        raise DeltaError(
            f"delta {path}: bundle {DENSE_BUNDLE} cannot be read "
            f"({str(exc).strip().splitlines()[0]}); write the delta again"
        ) from None
    for entry in entries:
        name, tensor = entry["name"], entry["tensor"]
        shape, dtype = tuple(int(d) for d in entry["shape"]), str(entry["dtype"])
        if dense_specs is not None:
            if name not in dense_specs:
                raise DeltaError(
                    f"delta {path} sets dense variable {name!r}, which the served model does not "
                    "have: write deltas from the model trained on from this version's own model"
                )
            want_dtype, want_shape = dense_specs[name]
            if (dtype, shape) != (want_dtype, tuple(want_shape)):
                raise DeltaError(
                    f"delta {path}: dense variable {name!r} is {dtype} {list(shape)}, the served "
                    f"variable is {want_dtype} {list(want_shape)}"
                )
        if tensor not in dtypes or dtypes[tensor].name != dtype or tuple(shapes[tensor]) != shape:
            raise DeltaError(
                f"delta {path}: dense variable {name!r} is not the {dtype} {list(shape)} tensor "
                f"{tensor} its manifest names; write the delta again"
            )
    # RestoreV2 runs without the GIL (see _read_table).
    values = tf.raw_ops.RestoreV2(
        prefix=os.path.join(path, DENSE_BUNDLE),
        tensor_names=[e["tensor"] for e in entries],
        shape_and_slices=[""] * len(entries),
        dtypes=[tf.as_dtype(e["dtype"]) for e in entries],
    )
    return [DenseDelta(e["name"], v) for e, v in zip(entries, values, strict=True)]


def _read_table(tf, path, entry, files, table_dims) -> TableDelta:
    name = entry["name"]
    if table_dims is None:
        table_dims = {name: entry["dim"]}
    if name not in table_dims:
        raise DeltaError(
            f"delta {path} updates table {name!r}, which the served model does not have; "
            f"its tables are: {', '.join(sorted(table_dims)) or 'none'}"
        )
    dim = table_dims[name]
    if entry["dim"] != dim:
        raise DeltaError(
            f"delta {path}: table {name!r} has dim {entry['dim']}, the served table has dim {dim}"
        )
    bundle = entry["bundle"]
    if f"{bundle}.index" not in files:
        raise DeltaError(
            f"delta {path}: bundle {bundle} of table {name!r} is not among its checksummed files"
        )
    try:
        reader = tf.train.load_checkpoint(os.path.join(path, bundle))
        dtypes = reader.get_variable_to_dtype_map()
        shapes = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as exc:
        raise DeltaError(
            f"delta {path}: bundle {bundle} cannot be read "
            f"({str(exc).strip().splitlines()[0]}); write the delta again"
        ) from None
    wanted = {"keys": tf.int64, "values": tf.float32, "versions": tf.int64, "removed_keys": tf.int64}
    for tensor, dtype in wanted.items():
        if tensor not in dtypes:
            raise DeltaError(f"delta {path}: table {name!r} lacks its {tensor} tensor")
        if dtypes[tensor] != dtype:
            raise DeltaError(
                f"delta {path}: table {name!r} has {tensor} of dtype {dtypes[tensor].name}, "
                f"expected {dtype.name}"
            )
    n = shapes["keys"][0] if len(shapes["keys"]) == 1 else None
    if (
        n is None
        or shapes["values"] != [n, dim]
        or shapes["versions"] != [n]
        or len(shapes["removed_keys"]) != 1
    ):
        raise DeltaError(
            f"delta {path}: table {name!r} has keys {shapes['keys']}, values {shapes['values']}: "
            f"expected keys [n] and values [n, {dim}]"
        )
    if n != entry["upserts"] or shapes["removed_keys"][0] != entry["removals"]:
        raise DeltaError(
            f"delta {path}: table {name!r} holds {n} upserts and {shapes['removed_keys'][0]} "
            f"removals, its manifest says {entry['upserts']} and {entry['removals']}"
        )
    # The rows come back as a tensor from TensorFlow's restore kernel, which runs without the GIL:
    # reader.get_tensor holds it while it copies (~20 ms for 26 MB), stalling a server's requests.
    prefix = os.path.join(path, bundle)
    values = tf.raw_ops.RestoreV2(
        prefix=prefix, tensor_names=["values"], shape_and_slices=[""], dtypes=[tf.float32]
    )[0]
    get = reader.get_tensor
    return TableDelta(name, get("keys"), values, get("versions"), get("removed_keys"))
