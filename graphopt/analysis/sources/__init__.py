"""Source systems: models whose tables already are dynamic hash tables (TFRA, DeepRec).

graphopt reads graphs as protos, so a TFRA or DeepRec model is analysed here without its ops being
registered. Each system (``tfra.py``, ``deeprec.py``) is described as data: the op type of its
table handle, the role of every op that may touch a table (find, insert, export, import, ...), and
how its checkpoint stores a table. ``analyze`` finds the system of a model, its tables, every op it
will replace, and the ops it does not know (a table touched by one is left alone, with the reason).
The rewrite onto graphopt's ops, and its passes, are ``graphopt.rewrite.targets.ev.migrate``.
"""

from graphopt.analysis.sources import deeprec, tfra
from graphopt.analysis.sources.tables import ROLE_TARGETS, SourceAnalysis, SourceOp, SourceTable
from graphopt.graph import nodes
from graphopt.graph.model import TOP, ModelGraph

__all__ = ["ROLE_TARGETS", "SYSTEMS", "SourceAnalysis", "SourceOp", "SourceTable", "analyze", "system_of"]

SYSTEMS = {s.NAME: s for s in (tfra, deeprec)}


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


def analyze(model: ModelGraph) -> SourceAnalysis:
    """The source system of ``model``, its tables and every op that touches them (each table's
    checkpoint key as its restore names it)."""
    name = system_of(model)
    if name is None:
        return SourceAnalysis(None)
    system = SYSTEMS[name]
    out = SourceAnalysis(name, system.TITLE)
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
