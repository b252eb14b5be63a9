"""Source systems: models whose tables already are dynamic hash tables (TFRA, DeepRec).

graphopt reads graphs as protos, so a TFRA or DeepRec model is analysed here without its ops being
registered. Each system (``tfra.py``, ``deeprec.py``) is described as data: the op type of its
table handle, the role of every op that may touch a table (find, insert, export, import, ...), and
how its checkpoint stores a table. ``analyze`` finds the system of a model, its tables, every op it
will replace, and the ops it does not know (a table touched by one is left alone, with the reason).
The rewrite onto graphopt's ops is ``graphopt.rewrite.migrate``; its passes are in
``rewrite/passes/migrate/``.
"""

import dataclasses

from graphopt.graph import nodes
from graphopt.graph.model import TOP, ModelGraph
from graphopt.rewrite.sources import deeprec, tfra

SYSTEMS = {s.NAME: s for s in (tfra, deeprec)}

# What each role becomes (docs/migration.md has the full table).
ROLE_TARGETS = {
    "handle": "GraphoptEvHandleOp",
    "find": "GraphoptEvFind",
    "insert": "GraphoptEvInsert",
    "export": "GraphoptEvExport",
    "import": "GraphoptEvImport",
    "restore": "RestoreV2 + GraphoptEvImport",
    "size": "GraphoptEvSize",
    "remove": "GraphoptEvRemove",
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
            "system_name": SYSTEMS[self.system].TITLE if self.system else None,
            "tables": [t.to_dict() for t in self.tables],
            "unknown_ops": [o.to_dict() for o in self.unknown_ops],
        }


def system_of(model: ModelGraph) -> str | None:
    """The source system whose ops the model holds, or None."""
    ops = model.op_uses()
    for name, system in SYSTEMS.items():
        if any(system.owns(op) for op in ops):
            return name
    return None


def _const_default(model, body_name, ref, dim):
    """The constant default row a find falls back to, or None when it is computed (an initializer)."""
    body = model.body(body_name)
    node = body.node(ref.node)
    while node is not None and node.op == "Identity":
        node = body.node(body.data_inputs(node)[0].node)
    if node is None or node.op != "Const":
        return None
    value = nodes.const_value(node).reshape(-1)
    if value.size == 1:
        return [float(value[0])] * dim
    if value.size == dim:
        return [float(v) for v in value]
    return None


def analyze(model: ModelGraph, checkpoint_names=None) -> SourceAnalysis:
    """The source system of ``model``, its tables and every op that touches them.

    ``checkpoint_names`` (a set of the checkpoint's tensor names) lets the analysis find each
    table's checkpoint key where the graph does not name it.
    """
    name = system_of(model)
    if name is None:
        return SourceAnalysis(None)
    system = SYSTEMS[name]
    out = SourceAnalysis(name)
    seen = set()
    top = model.body(TOP)
    for handle in [n for n in top.nodes() if n.op in system.HANDLE_OPS]:
        table = system.table_of(handle)
        table.ops.append(SourceOp(TOP, handle.name, handle.op, "handle"))
        seen.add((TOP, handle.name))
        for body, use in model.trace_variable(handle.name):
            node = body.node(use.node)
            seen.add((body.name, node.name))
            role = system.role_of(node, use.position)
            op = SourceOp(body.name, node.name, node.op, role)
            if role is None:
                op.reason = system.unknown_reason(node)
                table.unknown.append(op)
                continue
            table.ops.append(op)
            if role == "find" and table.default_value is None:
                default = system.default_input(body, node)
                if default is not None:
                    table.default_value = _const_default(model, body.name, default, table.dim)
                    if table.default_value is None:
                        table.default_note = (
                            "unseen keys: the original returns its initializer's random row, the "
                            "rewrite the zero row (serving never inserts them)"
                        )
            key = system.checkpoint_key_of(model, body, node, role)
            if key:
                table.checkpoint_key = key
            system.read_training_attrs(table, body, node, role)
        if checkpoint_names is not None and f"{table.checkpoint_key}-keys" not in checkpoint_names:
            table.checkpoint_key = (
                system.guess_checkpoint_key(table, checkpoint_names) or table.checkpoint_key
            )
        out.tables.append(table)
    system.pair_slots(out.tables)
    for body in model.bodies.values():
        for node in body.nodes():
            if system.owns(node.op) and (body.name, node.name) not in seen:
                role = system.role_of(node, None)
                if role in ("handle",) and body.name != TOP:
                    continue  # an object-graph creator function's copy, gone with the object graph
                if role is None:
                    out.unknown_ops.append(
                        SourceOp(body.name, node.name, node.op, None, system.unknown_reason(node))
                    )
    return out
