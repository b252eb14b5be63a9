"""What the analysis of a source model finds: its tables, the ops on them, what each becomes."""

import dataclasses

from graphopt.ev import contract
from graphopt.graph import nodes

# What each role becomes (docs/migration.md has the full table).
ROLE_TARGETS = {
    "handle": contract.HANDLE.name,
    "find": contract.FIND.name,
    "insert": contract.INSERT.name,
    "export": contract.EXPORT.name,
    "import": contract.IMPORT.name,
    "restore": f"RestoreV2 + {contract.IMPORT.name}",
    "size": contract.SIZE.name,
    "remove": contract.REMOVE.name,
    "initialize": "NoOp (the handle creates the table)",
    "is_initialized": "Const true",
    "primary": "(a slot EV naming this EV as its primary: folded into its in-row slots)",
    "train": "dropped (training op: the output serves; see docs/migration.md)",
}


@dataclasses.dataclass
class SourceOp:
    """One op of a source system touching a table."""

    body: str  # "" for the top-level graph
    node: str
    op: str
    role: str | None  # None: not known to graphopt
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.body or 'graph'}/{self.node}"

    def to_dict(self) -> dict:
        return {
            "where": self.where,
            "op": self.op,
            "role": self.role,
            "becomes": ROLE_TARGETS.get(self.role or "", None),
            "reason": self.reason,
        }


@dataclasses.dataclass
class SourceTable:
    """A table of a source system: its handle node and what the rewrite needs to know."""

    system: str
    name: str  # the handle node (top-level graph)
    dim: int
    key_dtype: str
    value_dtype: str
    checkpoint_key: str  # the table's tensors are KEY-keys, KEY-values (and DeepRec's -freqs/-versions)
    ops: list[SourceOp] = dataclasses.field(default_factory=list)
    unknown: list[SourceOp] = dataclasses.field(default_factory=list)
    slot_of: str | None = None  # name of the table whose optimizer slot this table holds
    slot_name: str = ""  # graphopt's slot name (accumulator, m, v)
    slots: list["SourceTable"] = dataclasses.field(default_factory=list)  # of a main table
    optimizer: str = ""  # of a main table with slots: adagrad, adam
    default_value: list[float] | None = None  # the find's constant default row; None: not constant
    default_note: str = ""
    min_count: int = 0  # DeepRec filter_freq
    ttl: int = 0  # DeepRec steps_to_live
    problem: str = ""  # why the table cannot be rewritten (bad input), empty when it can
    primary: str = ""  # DeepRec: the handle named as resource_primary (a slot's main table)
    hashed: bool = False  # string keys keyed by their collisionless key (Fingerprint64) in graphopt

    @property
    def handles(self) -> list[str]:
        return [self.name]

    @property
    def left_alone(self) -> bool:
        return bool(self.unknown)

    @property
    def reason(self) -> str:
        if not self.unknown:
            return ""
        u = self.unknown[0]
        return f"{u.op} at {u.where}: {u.reason}"

    def to_dict(self) -> dict:
        return {
            "system": self.system,
            "name": self.name,
            "dim": self.dim,
            "key_dtype": self.key_dtype,
            "checkpoint_key": self.checkpoint_key,
            "slot_of": self.slot_of,
            "slot_name": self.slot_name,
            "optimizer": self.optimizer,
            "slots": [s.name for s in self.slots],
            "default_value": self.default_value,
            "min_count": self.min_count,
            "hashed": self.hashed,
            "ttl": self.ttl,
            "ops": [o.to_dict() for o in self.ops],
            "unknown_ops": [o.to_dict() for o in self.unknown],
            "left_alone": self.left_alone,
            "reason": self.reason,
        }


@dataclasses.dataclass
class SourceAnalysis:
    """What ``analyze`` found: the source system (None: none), its tables, ops it does not know."""

    system: str | None
    title: str | None = None  # the system's full name
    tables: list[SourceTable] = dataclasses.field(default_factory=list)
    unknown_ops: list[SourceOp] = dataclasses.field(default_factory=list)  # the system's, on no table

    @property
    def served(self) -> list[SourceTable]:
        """The tables that are looked up (not optimizer slots)."""
        return [t for t in self.tables if t.slot_of is None]

    def table(self, name) -> SourceTable | None:
        return next((t for t in self.tables if t.name == name), None)

    def to_dict(self) -> dict:
        return {
            "system": self.system,
            "system_name": self.title,
            "tables": [t.to_dict() for t in self.tables],
            "unknown_ops": [o.to_dict() for o in self.unknown_ops],
        }


STRING_KEYS = (
    "it is keyed by strings; graphopt keys are int64: rewrite with --collisionless, which keys each "
    "string by its Fingerprint64 as graphopt's collisionless migration does (and hashes the ids the "
    "model looks up the same way)"
)


def table_from_handle(system: str, handle, shape_attr: str, key_attr: str, value_attr: str) -> SourceTable:
    """The SourceTable of a handle node whose ``shape_attr`` is the row shape ``[dim]``; its
    ``problem`` says why it cannot convert (not rows, keys not integers, values not float32)."""
    shape = nodes.attr_value(handle, shape_attr) or []
    dim = int(shape[0]) if len(shape) == 1 and shape[0] and shape[0] > 0 else 0
    key_dtype = nodes.dtype_name(nodes.attr_value(handle, key_attr))
    value_dtype = nodes.dtype_name(nodes.attr_value(handle, value_attr))
    table = SourceTable(system, handle.name, dim, key_dtype, value_dtype, handle.name)
    if dim == 0:
        table.problem = (
            f"{shape_attr} {shape} is not [dim]; only tables of rows (a {shape_attr} [dim]) convert"
        )
    elif key_dtype == "string":
        table.problem = STRING_KEYS
    elif key_dtype not in ("int64", "int32"):
        table.problem = f"it is keyed by {key_dtype}s; graphopt keys are int64 (or int32)"
    elif value_dtype != "float32":
        table.problem = f"its values are {value_dtype}; graphopt rows are float32"
    return table


def third_input(body, node):
    """The default-row input of a find (input 2 of TFRA's and DeepRec's), or None."""
    data = body.data_inputs(node)
    return data[2] if len(data) > 2 else None
