"""The EmbeddingVariable contract: op names and their signatures, the checkpoint layout of a table,
the slots each optimizer keeps, the rewrite's manifest. Plain data (no TensorFlow import).

Everything that builds, reads, saves or restores an EmbeddingVariable spells these names from
here: the rewrite's ev target, validate, the op wrappers (``graphopt.ops``), the Keras layer,
online deltas and serving. ``tests/ev/test_contract.py`` checks every op against the C++
registrations under ``custom_ops/`` (names, inputs, outputs, attrs); docs/design.md and
docs/ops.md describe what each op does.
"""

import dataclasses

# Every op name starts with this (no ">" namespace, so SavedModels save without an allow-list).
OP_PREFIX = "GraphoptEv"


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One op of the library: its name and the names of its inputs, outputs and attrs, in order."""

    name: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    attrs: tuple[str, ...] = ()


# Attrs every op returning rows carries, so its shape function is complete without the resource.
ROW_ATTRS = ("dim", "dtype")
ROW_DTYPE = "float32"
KEY_DTYPE = "int64"

# The table handle; its attrs by group (docs/design.md, "The op contract").
HANDLE_ATTRS = ("container", "shared_name", "dim", "dtype", "key_dtype", "default_value")
INITIALIZER_ATTRS = (
    "initializer",
    "init_value",
    "init_minval",
    "init_maxval",
    "init_mean",
    "init_stddev",
    "seed",
)
TRAINING_ATTRS = (
    "optimizer",
    "slot_init",
    "min_count",
    "max_rows",
    "evict_policy",
    "admission",
    "bloom_counters",
    "bloom_hashes",
)

# How a table stores its rows (docs/ops.md, "Compressed rows"): float32, or compressed for serving
# (int8 row-wise: uint8 codes + float32 scale and bias per row, FBGEMM's layout; 16-bit floats).
SERVING_ATTRS = ("row_dtype",)
ROW_DTYPES = ("float32", "int8", "float16", "bfloat16")
# The dtype of a compressed table's stored codes (the Tcodes attr of its export / import).
CODE_DTYPES = {"int8": "uint8", "float16": "float16", "bfloat16": "bfloat16"}

HANDLE = OpSpec(
    f"{OP_PREFIX}HandleOp", (), ("handle",), HANDLE_ATTRS + INITIALIZER_ATTRS + TRAINING_ATTRS + SERVING_ATTRS
)
FIND = OpSpec(f"{OP_PREFIX}Find", ("table", "keys"), ("values",), ("Tkeys", *ROW_ATTRS))
FIND_OR_INSERT = OpSpec(
    f"{OP_PREFIX}FindOrInsert", ("table", "keys", "step"), ("values",), ("Tkeys", *ROW_ATTRS)
)
INSERT = OpSpec(f"{OP_PREFIX}Insert", ("table", "keys", "values"), (), ("Tkeys", *ROW_ATTRS))
# A table's content: the names of its checkpoint tensors (TABLE_TENSORS), in this order.
KEYS, VALUES, FREQS, VERSIONS = "keys", "values", "freqs", "versions"
EXPORT = OpSpec(f"{OP_PREFIX}Export", ("table",), (KEYS, VALUES, FREQS, VERSIONS), ROW_ATTRS)
IMPORT = OpSpec(f"{OP_PREFIX}Import", ("table", KEYS, VALUES, FREQS, VERSIONS), (), ROW_ATTRS)
EXPORT_WITH_SLOTS = OpSpec(
    f"{OP_PREFIX}ExportWithSlots",
    ("table",),
    (*EXPORT.outputs, "slots", "pending_keys", "pending_counts"),
    (*ROW_ATTRS, "num_slots"),
)
IMPORT_WITH_SLOTS = OpSpec(
    f"{OP_PREFIX}ImportWithSlots",
    (*IMPORT.inputs, "slots", "pending_keys", "pending_counts"),
    (),
    (*ROW_ATTRS, "num_slots", "optimizer"),
)
# A compressed table's rows as stored: keys, codes [n, dim], scale_bias [n, 2] (int8; [n, 0] else).
CODES, SCALE_BIAS = "codes", "scale_bias"
EXPORT_COMPRESSED = OpSpec(
    f"{OP_PREFIX}ExportCompressed", ("table",), (KEYS, CODES, SCALE_BIAS), ("dim", "Tcodes")
)
IMPORT_COMPRESSED = OpSpec(
    f"{OP_PREFIX}ImportCompressed", ("table", KEYS, CODES, SCALE_BIAS), (), ("dim", "Tcodes")
)
SIZE = OpSpec(f"{OP_PREFIX}Size", ("table",), ("size",))
REMOVE = OpSpec(f"{OP_PREFIX}Remove", ("table", "keys"), (), ("Tkeys",))
MEMORY = OpSpec(f"{OP_PREFIX}Memory", ("table",), ("bytes_used", "capacity"))
EVICT = OpSpec(
    f"{OP_PREFIX}Evict", ("table", "step", "ttl", "min_freq", "max_rows"), ("evicted",), ("policy",)
)
STATS = OpSpec(f"{OP_PREFIX}Stats", ("table",), ("size", "admitted", "evicted", "pending", "bytes_used"))

# The fused sparse optimizers: (table, keys, grads, *hyperparameters as scalars).
_APPLY_INPUTS = ("table", "keys", "grads")
APPLY_SGD = OpSpec(
    f"{OP_PREFIX}ApplySgd", (*_APPLY_INPUTS, "lr"), (), ("Tkeys", *ROW_ATTRS, "sum_duplicates")
)
APPLY_ADAGRAD = OpSpec(
    f"{OP_PREFIX}ApplyAdagrad",
    (*_APPLY_INPUTS, "lr", "epsilon"),
    (),
    ("Tkeys", *ROW_ATTRS, "rsqrt", "epsilon_inside_sqrt", "batch_rsqrt"),
)
APPLY_ADAM = OpSpec(
    f"{OP_PREFIX}ApplyAdam",
    (*_APPLY_INPUTS, "lr", "beta1", "beta2", "epsilon", "beta1_power", "beta2_power"),
    (),
    ("Tkeys", *ROW_ATTRS),
)
APPLY_FTRL = OpSpec(
    f"{OP_PREFIX}ApplyFtrl", (*_APPLY_INPUTS, "lr", "l1", "l2", "lr_power"), (), ("Tkeys", *ROW_ATTRS)
)

# Collisionless migration: a raw id's own key, else the original bucket's row.
COLLISIONLESS_KEY = OpSpec(f"{OP_PREFIX}CollisionlessKey", ("ids",), ("keys",), ("Tids",))
FIND_WITH_FALLBACK = OpSpec(
    f"{OP_PREFIX}FindWithFallback",
    ("table", "ids", "fallback_keys"),
    ("values",),
    ("Tids", "Tfallback", *ROW_ATTRS),
)
FIND_OR_INSERT_WITH_FALLBACK = OpSpec(
    f"{OP_PREFIX}FindOrInsertWithFallback",
    ("table", "ids", "fallback_keys", "step"),
    ("values",),
    ("Tids", "Tfallback", *ROW_ATTRS),
)

# Online deltas (docs/online.md).
EXPORT_CHANGED = OpSpec(
    f"{OP_PREFIX}ExportChanged", ("table", "since"), ("keys", "values", "versions", "present_keys"), ROW_ATTRS
)
APPLY_DELTA = OpSpec(f"{OP_PREFIX}ApplyDelta", ("table", "keys", "values", "removed_keys"), (), ROW_ATTRS)

OPS: tuple[OpSpec, ...] = (
    HANDLE,
    FIND,
    FIND_OR_INSERT,
    INSERT,
    EXPORT,
    EXPORT_WITH_SLOTS,
    IMPORT,
    IMPORT_WITH_SLOTS,
    EXPORT_COMPRESSED,
    IMPORT_COMPRESSED,
    SIZE,
    REMOVE,
    MEMORY,
    APPLY_SGD,
    APPLY_ADAGRAD,
    APPLY_ADAM,
    APPLY_FTRL,
    EVICT,
    STATS,
    COLLISIONLESS_KEY,
    FIND_WITH_FALLBACK,
    FIND_OR_INSERT_WITH_FALLBACK,
    EXPORT_CHANGED,
    APPLY_DELTA,
)
OP_NAMES = tuple(op.name for op in OPS)
# The ops that read rows (a lookup of the table).
FIND_OPS = (FIND.name, FIND_OR_INSERT.name, FIND_WITH_FALLBACK.name, FIND_OR_INSERT_WITH_FALLBACK.name)


def is_ev_op(op_type: str) -> bool:
    """Whether ``op_type`` is one of graphopt's EmbeddingVariable ops."""
    return op_type.startswith(OP_PREFIX)


# --- Optimizers: the slots each keeps in a row (after the value), and its apply op -------------
SLOT_NAMES: dict[str, tuple[str, ...]] = {
    "sgd": (),
    "adagrad": ("accumulator",),
    "adam": ("m", "v"),
    "ftrl": ("accumulator", "linear"),
}
APPLY_OPS: dict[str, str] = {
    "sgd": APPLY_SGD.name,
    "adagrad": APPLY_ADAGRAD.name,
    "adam": APPLY_ADAM.name,
    "ftrl": APPLY_FTRL.name,
}

# --- Checkpoint layout of one table ------------------------------------------------------------
# A table saved under key K is the tensors K-keys (int64 [n]), K-values (float [n, dim]), K-freqs
# and K-versions (int64 [n]): the outputs of EXPORT, in this order (the layout DeepRec uses).
TABLE_TENSORS = EXPORT.outputs
TABLE_DTYPES = (KEY_DTYPE, ROW_DTYPE, KEY_DTYPE, KEY_DTYPE)
# A compressed table (row_dtype != float32) saved under K is K-keys, K-values (its codes) and
# K-scale_bias: the outputs of EXPORT_COMPRESSED, with the codes saved as "values".
COMPRESSED_TENSORS = (KEYS, VALUES, SCALE_BIAS)


def compressed_tensor_names(key: str) -> list[str]:
    """K-keys, K-values, K-scale_bias."""
    return [tensor_name(key, part) for part in COMPRESSED_TENSORS]


def compressed_tensor_dtypes(row_dtype: str) -> tuple[str, str, str]:
    return (KEY_DTYPE, CODE_DTYPES[row_dtype], ROW_DTYPE)


# A trained table adds K-slot-<name> (float [n, dim]) per slot of its optimizer, rows as K-values.
SLOT_TENSOR = "slot-"
# With admission (min_count > 1), the keys seen but not yet admitted and their counts; with the
# Bloom filter admission (admission='bloom'), its counter index and counts instead.
PENDING_TENSORS = ("pending-keys", "pending-counts")
BLOOM_TENSORS = ("bloom-index", "bloom-counts")


def suffix(part: str) -> str:
    """What follows a table's key in the name of its tensor ``part``: "-keys", "-slot-m", ..."""
    return f"-{part}"


def tensor_name(key: str, part: str) -> str:
    """The checkpoint tensor ``part`` (one of TABLE_TENSORS, PENDING_TENSORS, ...) of table ``key``."""
    return key + suffix(part)


def table_tensor_names(key: str) -> list[str]:
    """K-keys, K-values, K-freqs, K-versions."""
    return [tensor_name(key, part) for part in TABLE_TENSORS]


def slot_tensor_name(key: str, slot: str) -> str:
    """K-slot-<slot>."""
    return tensor_name(key, SLOT_TENSOR + slot)


def table_key_of(tensor: str) -> str | None:
    """K for a checkpoint tensor named K-keys, else None."""
    end = suffix(KEYS)
    return tensor[: -len(end)] if tensor.endswith(end) else None


# --- The rewrite's output ----------------------------------------------------------------------
# Written beside a rewritten model: its source, the converted tables and every replaced node.
MANIFEST = "graphopt_manifest.json"
# A table's stable identity, the same in a Keras export, its rewrite and a graphopt.online export:
# the Keras path of the embedding variable (``movieId_embedding/embeddings``). The rewrite records
# it per table in MANIFEST; deltas match a training model's tables to the served ones by it.
TABLE_IDENTITY = "identity"
# Beside a graphopt.online export (graphopt.online.export_model): {"tables": [{"checkpoint_key": K,
# TABLE_IDENTITY: ...}]}, since a Keras export names its tables by position (``_misc_assets/3``).
TABLES_FILE = "graphopt_tables.json"
