"""The EmbeddingVariable target's ops: their names, checkpoint layout and NodeDef builders.

The op contract is in docs/design.md; the builders go through ``graphopt.graph.nodes.make_node``
like every target's.
"""

from graphopt.graph import nodes

HANDLE_OP = "GraphoptEvHandleOp"
FIND_OP = "GraphoptEvFind"
EXPORT_OP = "GraphoptEvExport"
IMPORT_OP = "GraphoptEvImport"
# Compressed tables (rewrite --row-dtype): saved and restored as stored.
EXPORT_COMPRESSED_OP = "GraphoptEvExportCompressed"
IMPORT_COMPRESSED_OP = "GraphoptEvImportCompressed"
# Collisionless migration (migrate_collisionless.py): find by raw id, else the bucket row.
FALLBACK_FIND_OP = "GraphoptEvFindWithFallback"
EV_OPS = (HANDLE_OP, FIND_OP, EXPORT_OP, IMPORT_OP, EXPORT_COMPRESSED_OP, IMPORT_COMPRESSED_OP)
# What a rewritten TF1 training graph uses besides (added to the op list only where used).
FIND_OR_INSERT_OP = "GraphoptEvFindOrInsert"
EXPORT_SLOTS_OP = "GraphoptEvExportWithSlots"
IMPORT_SLOTS_OP = "GraphoptEvImportWithSlots"
# A table saved under key K is saved as K-keys, K-values, K-freqs, K-versions (the outputs of
# GraphoptEvExport, in this order).
CHECKPOINT_SUFFIXES = ("keys", "values", "freqs", "versions")
EXPORT_OUTPUTS = CHECKPOINT_SUFFIXES
INT64 = "int64"
FLOAT = "float32"
# The dtypes of the four checkpoint tensors.
CHECKPOINT_DTYPES = (INT64, FLOAT, INT64, INT64)


# A compressed table saved under K: K-keys (int64 [n]), K-values (its codes [n, dim]: uint8 for
# int8 rows, else the 16-bit values), K-scale_bias (float32 [n, 2] for int8, [n, 0] otherwise).
COMPRESSED_SUFFIXES = ("keys", "values", "scale_bias")
CODE_DTYPES = {"int8": "uint8", "float16": "float16", "bfloat16": "bfloat16"}


def compressed(table) -> bool:
    return table.row_dtype != FLOAT


def checkpoint_names(table):
    """The checkpoint tensors of a converted table: KEY-keys, -values, -freqs, -versions (a
    compressed table: KEY-keys, -values, -scale_bias)."""
    suffixes = COMPRESSED_SUFFIXES if compressed(table) else CHECKPOINT_SUFFIXES
    return [f"{table.checkpoint_key}-{s}" for s in suffixes]


def checkpoint_dtypes(table):
    """The dtypes of checkpoint_names(table), in order."""
    if compressed(table):
        return (INT64, CODE_DTYPES[table.row_dtype], FLOAT)
    return CHECKPOINT_DTYPES


def _row_attrs(dim):
    return {"dim": (int(dim), "i"), "dtype": (nodes.dtype_enum(FLOAT), "type")}


def handle(name, shared_name, container, dim, device="", optimizer="", slot_init=(), row_dtype=FLOAT):
    attrs = {
        "shared_name": (shared_name, "s"),
        "container": (container, "s"),
        "key_dtype": (nodes.dtype_enum(INT64), "type"),
        "default_value": ([], "list(float)"),
        **_row_attrs(dim),
    }
    if optimizer:  # a trained table keeps its optimizer's slots in each row
        attrs.update({"optimizer": (optimizer, "s"), "slot_init": (list(slot_init), "list(float)")})
    if row_dtype != FLOAT:  # a compressed serving table
        attrs["row_dtype"] = (row_dtype, "s")
    return nodes.make_node(HANDLE_OP, name, (), attrs, device)


def find(name, table_ref, ids_ref, ids_dtype, dim, device="", control=()):
    attrs = {"Tkeys": (ids_dtype, "type"), **_row_attrs(dim)}
    return nodes.make_node(FIND_OP, name, [table_ref, ids_ref], attrs, device, control)


def find_with_fallback(name, table_ref, raw_ref, raw_dtype, ids_ref, ids_dtype, dim, device="", control=()):
    attrs = {"Tids": (raw_dtype, "type"), "Tfallback": (ids_dtype, "type"), **_row_attrs(dim)}
    return nodes.make_node(FALLBACK_FIND_OP, name, [table_ref, raw_ref, ids_ref], attrs, device, control)


def export(name, table_ref, dim, device=""):
    return nodes.make_node(EXPORT_OP, name, [table_ref], _row_attrs(dim), device)


def _codes_attrs(dim, row_dtype):
    return {"dim": (int(dim), "i"), "Tcodes": (nodes.dtype_enum(CODE_DTYPES[row_dtype]), "type")}


def export_compressed(name, table_ref, dim, row_dtype, device=""):
    """GraphoptEvExportCompressed(table) -> keys, codes, scale_bias."""
    return nodes.make_node(EXPORT_COMPRESSED_OP, name, [table_ref], _codes_attrs(dim, row_dtype), device)


def import_compressed(name, table_ref, keys, codes, scale_bias, dim, row_dtype, device="", control=()):
    return nodes.make_node(
        IMPORT_COMPRESSED_OP,
        name,
        [table_ref, keys, codes, scale_bias],
        _codes_attrs(dim, row_dtype),
        device,
        control,
    )


def import_(name, table_ref, keys, values, freqs, versions, dim, device="", control=()):
    return nodes.make_node(
        IMPORT_OP, name, [table_ref, keys, values, freqs, versions], _row_attrs(dim), device, control
    )


def find_or_insert(name, table_ref, ids_ref, step_ref, ids_dtype, dim, device="", control=()):
    attrs = {"Tkeys": (ids_dtype, "type"), **_row_attrs(dim)}
    return nodes.make_node(FIND_OR_INSERT_OP, name, [table_ref, ids_ref, step_ref], attrs, device, control)


def apply(op, name, table_ref, keys, grads, hyper, ids_dtype, dim, device="", control=(), exact=None):
    """GraphoptEvApply<Optimizer>(table, keys, grads, *hyperparameters); ``exact``: extra attrs."""
    attrs = {"Tkeys": (ids_dtype, "type"), **_row_attrs(dim), **(exact or {})}
    return nodes.make_node(op, name, [table_ref, keys, grads, *hyper], attrs, device, control)


def export_with_slots(name, table_ref, dim, num_slots, device=""):
    attrs = {**_row_attrs(dim), "num_slots": (int(num_slots), "i")}
    return nodes.make_node(EXPORT_SLOTS_OP, name, [table_ref], attrs, device)


def import_with_slots(
    name, table_ref, keys, values, freqs, versions, slots, pending, dim, optimizer, device="", control=()
):
    attrs = {**_row_attrs(dim), "num_slots": (len(slots), "i"), "optimizer": (optimizer, "s")}
    inputs = [table_ref, keys, values, freqs, versions, *slots, *pending]
    return nodes.make_node(IMPORT_SLOTS_OP, name, inputs, attrs, device, control)
