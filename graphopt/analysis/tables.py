"""Finding embedding tables: variables whose every use is a row gather (or the Saver, or an initializer).

A variable is traced from its top-level VarHandleOp through Identity and call arguments into
every function that touches it. Each use is classified; one use that is not a row gather on
axis 0 (and not save / restore / initialization / a read nobody consumes) disqualifies the
variable, and its gathers are reported as left alone with the reason.
"""

import dataclasses
import re

import numpy as np

from graphopt.analysis import training_updates
from graphopt.graph import meta_graphs, nodes
from graphopt.graph.model import TOP, Body, ModelGraph, TensorRef, live_nodes

VARIABLE_OPS = ("VarHandleOp", "VariableV2")
READ_OPS = ("ReadVariableOp",)  # plus the Identity snapshot of a ref variable (VariableV2)
ASSIGN_OPS = ("AssignVariableOp", "Assign")
GATHER_OPS = ("GatherV2", "Gather", "ResourceGather", "GatherNd", "ResourceGatherNd")
STITCH_OPS = ("ParallelDynamicStitch", "DynamicStitch")
SAVE_OPS = ("SaveV2",)
RESTORE_OPS = ("RestoreV2",)
PASS_THROUGH = ("Identity",)
_PART_SUFFIX = re.compile(r"/part_\d+$")


@dataclasses.dataclass
class LookupSite:
    """One place where rows of a table are gathered."""

    body: str  # "" for the top-level graph, else the function name
    node: str  # the gather (or, for a partitioned table, the DynamicStitch joining the parts)
    op: str
    ids: str  # input reference of the ids, in the body's spelling
    ids_dtype: int  # DataType enum of the ids
    read: str | None = None  # the ReadVariableOp a GatherV2 reads the table through
    part_gathers: list[str] = dataclasses.field(default_factory=list)  # partitioned: gather per part
    signature_inputs: list[str] = dataclasses.field(default_factory=list)
    training: bool = False  # an optimizer update's gradients come from it: find-or-insert

    @property
    def where(self) -> str:
        return f"{self.body or 'graph'}:{self.node}"


@dataclasses.dataclass
class VariableUse:
    """A use of a table that is not a lookup: the Saver, an initializer, or a read nobody consumes."""

    kind: str  # save | restore | init | dead | disable_copy | train (an optimizer update)
    body: str
    node: str  # the consuming node (ReadVariableOp for save/dead, AssignVariableOp for restore/init)
    part: int = 0
    save_node: str | None = None  # SaveV2 the read feeds
    save_entry: int | None = None
    restore_node: str | None = None  # RestoreV2 the assign takes its value from
    restore_entry: int | None = None


@dataclasses.dataclass
class TableCandidate:
    """A variable (or a partitioned variable) whose rows are only ever gathered."""

    name: str
    handles: list[str]  # top-level VarHandleOp names, in partition order
    rows: int
    dim: int
    dtype: str
    sites: list[LookupSite]
    uses: list[VariableUse]
    checkpoint_key: str | None
    partition_strategy: str | None = None  # None, "mod" or "div"
    partition_rows: list[int] = dataclasses.field(default_factory=list)
    # Handles of other tables passed through the same function argument: rewrite them together.
    shares_arguments_with: list[str] = dataclasses.field(default_factory=list)
    # TF1 training graphs: the optimizer update the rewrite turns into an apply op, or why the
    # table keeps its dense variable (graphopt.analysis.training_updates).
    training: training_updates.TrainingUpdate | None = None
    training_left: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.dim)

    @property
    def nbytes(self) -> int:
        return self.rows * self.dim * np.dtype(self.dtype).itemsize

    @property
    def signature_inputs(self) -> list[str]:
        return sorted({s for site in self.sites for s in site.signature_inputs})

    def row_ids(self, stored_rows: int) -> np.ndarray:
        """Global ids of the rows of the checkpoint tensor, in stored (partition-concatenated) order."""
        if self.partition_strategy != "mod":
            return np.arange(stored_rows, dtype=np.int64)
        n = len(self.partition_rows)
        ids = [np.arange(rows, dtype=np.int64) * n + p for p, rows in enumerate(self.partition_rows)]
        return np.concatenate(ids)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "bytes": self.nbytes,
            "handles": self.handles,
            "checkpoint_key": self.checkpoint_key,
            "partitions": len(self.handles),
            "partition_strategy": self.partition_strategy,
            "lookup_sites": [
                {"where": s.where, "op": s.op, "signature_inputs": s.signature_inputs} for s in self.sites
            ],
            "signature_inputs": self.signature_inputs,
            **({"training": self.training.to_dict()} if self.training else {}),
        }


@dataclasses.dataclass
class GatherLeftAlone:
    """A gather that is not a table lookup, with the reason."""

    body: str
    node: str
    op: str
    reason: str

    @property
    def where(self) -> str:
        return f"{self.body or 'graph'}:{self.node}"

    def to_dict(self):
        return {"where": self.where, "op": self.op, "reason": self.reason}


@dataclasses.dataclass
class _VariableScan:
    handle: str
    sites: list[LookupSite]
    uses: list[VariableUse]
    problems: list[str]
    gathers: list[tuple[str, str]]  # (body, gather node) of every gather reading this variable


def _const(body: Body, ref: TensorRef):
    node = body.node(ref.node)
    if node is None or node.op != "Const":
        return None
    return nodes.const_value(node)


def _producer(body: Body, ref: TensorRef, skip=PASS_THROUGH):
    """The node producing ``ref`` after skipping Identity-like nodes (None for function args)."""
    node = body.node(ref.node)
    while node is not None and node.op in skip:
        ref = body.data_inputs(node)[0]
        node = body.node(ref.node)
    return node, ref


def _value_consumers(body: Body, name: str):
    """Data consumers of output 0 of ``name`` after following Identity chains: (consumer node, position)."""
    out, stack = [], [name]
    while stack:
        n = stack.pop()
        out_arg = ("value", 0) if body.node(n).op == "ReadVariableOp" else ("output", 0)
        for use in body.consumers(n, out_arg if body.is_function else (None, 0)):
            node = body.node(use.node)
            if node.op in PASS_THROUGH:
                stack.append(node.name)
            else:
                out.append((node, use.position))
    return out


def _reads_dead(body: Body, name: str, live: set) -> bool:
    """True when nothing that matters consumes the read: no consumers, or only dead top-level ones."""
    if body.is_function:
        # Every op of a function body runs, so only a read without data consumers is dead.
        return not body.consumers(name) and not body.return_uses(name)
    return not (body.dead_cone([name]) & live)


def _gather_problem(body: Body, node, params_position=0) -> str | None:
    if node.op == "ResourceGather" or node.op == "GatherV2":
        bd = nodes.attr_value(node, "batch_dims") or 0
        if bd != 0:
            return f"batch_dims={bd}"
    if node.op == "GatherV2":
        axis = _const(body, body.data_inputs(node)[2])
        if axis is None:
            return "axis is not a constant"
        if int(np.asarray(axis).reshape(-1)[0]) != 0:
            return f"axis={int(np.asarray(axis).reshape(-1)[0])}"
    if node.op not in ("ResourceGather", "GatherV2", "Gather"):
        return f"{node.op} is not a row gather"
    return None


def _site(body: Body, gather, read=None) -> LookupSite:
    ids = body.data_inputs(gather)[1]
    return LookupSite(
        body.name, gather.name, gather.op, str(ids), nodes.attr_value(gather, "Tindices"), read=read
    )


def _restore_source(body: Body, ref: TensorRef):
    node, ref = _producer(body, ref)
    if node is not None and node.op in RESTORE_OPS:
        return node.name, ref.index
    return None


def _variable_uses(model: ModelGraph, handle: str):
    """(body, Use) of each op using a variable: resources are traced through calls and into the
    functions the object graph binds them to (tf_keras' per-layer functions), refs are not."""
    if model.graph.node(handle).op == "VariableV2":
        return [(model.graph, u) for u in model.graph.consumers(handle)]
    return list(model.trace_variable(handle))


def _scan_variable(model: ModelGraph, live: set, handle: str) -> _VariableScan:
    scan = _VariableScan(handle, [], [], [], [])
    is_ref = model.graph.node(handle).op == "VariableV2"
    for body, use in _variable_uses(model, handle):
        node = body.node(use.node)
        if not is_ref and not body.is_function and training_updates.is_update(node, use.position):
            # Before the liveness test: a train op is fetched by name, often from no collection.
            scan.uses.append(VariableUse("train", body.name, node.name))
            continue
        if (
            not body.is_function
            and node.name not in live
            and node.op not in (ASSIGN_OPS + READ_OPS + ("ResourceGather", "Identity"))
        ):
            if _reads_dead(body, node.name, live):
                scan.uses.append(VariableUse("dead", body.name, node.name))
                continue
        if node.op == "ResourceGather" and use.position == 0:
            scan.gathers.append((body.name, node.name))
            problem = _gather_problem(body, node)
            if problem:
                scan.problems.append(f"{body.name or 'graph'}:{node.name} gathers with {problem}")
            else:
                scan.sites.append(_site(body, node))
        elif node.op in READ_OPS or (is_ref and node.op == "Identity"):
            _scan_read(body, node, live, scan)
        elif is_ref and node.op in SAVE_OPS and use.position >= 3:
            scan.uses.append(
                VariableUse("save", body.name, handle, save_node=node.name, save_entry=use.position - 3)
            )
        elif node.op in ASSIGN_OPS and use.position == 0:
            if node.op == "Assign" and body.consumers(node.name):
                scan.problems.append(f"{body.name or 'graph'}:{node.name} uses the value it assigns")
                continue
            src = _restore_source(body, body.data_inputs(node)[1])
            if src is not None:
                scan.uses.append(
                    VariableUse("restore", body.name, node.name, restore_node=src[0], restore_entry=src[1])
                )
            elif body.is_function:
                scan.problems.append(f"{body.name}:{node.name} assigns it")
            else:
                scan.uses.append(VariableUse("init", body.name, node.name))
        elif node.op in ("DisableCopyOnRead", "VarIsInitializedOp", "IsVariableInitialized") and _reads_dead(
            body, node.name, live
        ):
            scan.uses.append(VariableUse("dead", body.name, node.name))
        else:
            scan.problems.append(f"{body.name or 'graph'}:{node.name} ({node.op}) uses it")
    return scan


def _scan_read(body: Body, read, live: set, scan: _VariableScan):
    consumers = _value_consumers(body, read.name)
    used = False
    for node, pos in consumers:
        if node.op in ("GatherV2", "Gather") and pos == 0:
            used = True
            scan.gathers.append((body.name, node.name))
            problem = _gather_problem(body, node)
            if problem:
                scan.problems.append(f"{body.name or 'graph'}:{node.name} gathers with {problem}")
            else:
                scan.sites.append(_site(body, node, read=read.name))
        elif node.op in SAVE_OPS and pos >= 3:
            used = True
            scan.uses.append(
                VariableUse("save", body.name, read.name, save_node=node.name, save_entry=pos - 3)
            )
        elif body.is_function or node.name in live or not _reads_dead(body, node.name, live):
            scan.problems.append(f"{body.name or 'graph'}:{node.name} ({node.op}) reads it whole")
            used = True
    if not used and (not consumers or _reads_dead(body, read.name, live)):
        scan.uses.append(VariableUse("dead", body.name, read.name))


# ---------------------------------------------------------------------------------------------
# Partitioned variables: embedding_lookup over a list of parts


@dataclasses.dataclass
class _PartitionGroup:
    stitch: str
    body: str
    handles: list[str]
    gathers: list[str]
    strategy: str
    flat_ids: TensorRef


def _partition_group(model: ModelGraph, body: Body, stitch, gather_handle: dict[tuple[str, str], str]):
    """Matches ``ParallelDynamicStitch(DynamicPartition(Range(Size(ids))), gathers of the parts)``."""
    n = nodes.attr_value(stitch, "N")
    data = body.data_inputs(stitch)
    if n is None or len(data) != 2 * n or n < 2:
        return None
    gathers, handles = [], []
    for p, ref in enumerate(data[n:]):
        g = body.node(ref.node)
        h = gather_handle.get((body.name, ref.node))
        if g is None or h is None or ref.index != 0:
            return None
        ids_node, ids_ref = _producer(body, body.data_inputs(g)[1])
        if ids_node is None or ids_node.op != "DynamicPartition" or ids_ref.index != p:
            return None
        gathers.append(g.name)
        handles.append(h)
    if len(set(handles)) != n:
        return None
    idx_part, _ = _producer(body, data[0])
    if idx_part is None or idx_part.op != "DynamicPartition":
        return None
    rng, _ = _producer(body, body.data_inputs(idx_part)[0])
    if rng is None or rng.op != "Range":
        return None
    size, _ = _producer(body, body.data_inputs(rng)[1])
    if size is None or size.op != "Size":
        return None
    flat_ids = body.data_inputs(size)[0]
    assign, _ = _producer(body, body.data_inputs(idx_part)[1], skip=PASS_THROUGH + ("Cast",))
    strategy = {"FloorMod": "mod", "Maximum": "div"}.get(assign.op if assign is not None else "")
    if strategy is None:
        return None
    return _PartitionGroup(stitch.name, body.name, handles, gathers, strategy, flat_ids)


# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Detection:
    """Everything detection found in one model graph."""

    tables: list[TableCandidate]
    left_alone: list[GatherLeftAlone]


def _placeholder_inputs(meta_graph) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for sig_name, sig in meta_graphs.signature_tensors(meta_graph).items():
        for key, tensor in sig["inputs"].items():
            out.setdefault(TensorRef.parse(tensor).node, []).append(f"{sig_name}:{key}")
    return out


def _checkpoint_key(model: ModelGraph, uses: list[VariableUse]) -> str | None:
    for u in uses:
        if u.kind == "restore":
            body = model.body(u.body)
            names = _const(body, body.data_inputs(body.node(u.restore_node))[1])
            if names is not None:
                value = names.reshape(-1)[u.restore_entry]
                return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _drop_tables_sharing_arguments(tables, args_of, arg_sources, rejected):
    """A table whose function argument also receives a variable that is not a table cannot be
    rewritten (the body is shared); tables sharing arguments only with tables record each other."""
    changed = True
    while changed:
        changed = False
        handles = {h for t in tables for h in t.handles}
        for t in list(tables):
            others = {o for h in t.handles for a in args_of.get(h, ()) for o in arg_sources[a]} - set(
                t.handles
            )
            if others - handles:
                tables.remove(t)
                for h in t.handles:
                    rejected[h] = (
                        f"a function argument it reaches also receives {sorted(others - handles)[0]}"
                    )
                changed = True
            else:
                t.shares_arguments_with = sorted(others)


def detect(model: ModelGraph) -> Detection:
    """Finds the embedding tables of a model graph and the gathers left alone."""
    live = live_nodes(model)
    graph = model.graph
    scans = {n.name: _scan_variable(model, live, n.name) for n in graph.nodes() if n.op in VARIABLE_OPS}
    gather_handle = {}
    for h, scan in scans.items():
        for site in scan.sites:
            gather_handle[(site.body, site.node)] = h

    # Partitioned variables: parts whose gathers all meet in embedding_lookup's stitch.
    groups = []
    for body in model.bodies.values():
        for node in body.nodes():
            if node.op in STITCH_OPS:
                g = _partition_group(model, body, node, gather_handle)
                if g is not None:
                    groups.append(g)
    part_of: dict[str, list] = {}
    for g in groups:
        for h in g.handles:
            part_of.setdefault(h, []).append(g)

    # Function arguments that receive several variables: one body serves them all.
    args_of = {h: model.resource_args(TOP, h) for h in scans if graph.node(h).op != "VariableV2"}
    arg_sources: dict[tuple, set] = {}
    for h, args in args_of.items():
        for arg in args:
            arg_sources.setdefault(arg, set()).add(h)

    placeholders = _placeholder_inputs(model.meta_graph)
    tables, rejected = [], {}
    done = set()
    for h in scans:
        if h in done:
            continue
        handle_node = graph.node(h)
        shape = nodes.attr_value(handle_node, "shape")
        dtype = nodes.dtype_name(nodes.attr_value(handle_node, "dtype"))
        problem = None
        if h in part_of:
            group_list = part_of[h]
            members = group_list[0].handles
            if any(g.handles != members for g in group_list):
                problem = "its parts are looked up in different groupings"
            elif any(
                {(s.body, s.node) for s in scans[m].sites} - {(g.body, g.gathers[p]) for g in group_list}
                for p, m in enumerate(members)
            ):
                problem = "a part is also gathered outside the partitioned lookup"
            for m in members:
                done.add(m)
            table_handles = members
        else:
            group_list = []
            table_handles = [h]
            done.add(h)
        all_problems = [p for m in table_handles for p in scans[m].problems]
        if problem:
            all_problems.insert(0, problem)
        shapes = [nodes.attr_value(graph.node(m), "shape") for m in table_handles]
        if not all_problems:
            if not any(scans[m].sites for m in table_handles):
                all_problems.append("it is never gathered")
            elif dtype != "float32":
                all_problems.append(f"its dtype is {dtype}, EmbeddingVariables hold float32")
            elif any(s is None or len(s) != 2 or min(s) < 0 for s in shapes):
                all_problems.append(f"its shape {shape} is not a static [rows, dim]")
            elif len({s[1] for s in shapes}) != 1:
                all_problems.append("its parts have different dims")
        uses = [dataclasses.replace(u, part=p) for p, m in enumerate(table_handles) for u in scans[m].uses]
        key = _checkpoint_key(model, uses)
        if not all_problems and key is None:
            all_problems.append("no Saver restores it")
        update, training_left = None, None
        if not all_problems:
            update, training_left = training_updates.table_update(model, uses, scans)
        if update is not None and len(table_handles) > 1:
            update, training_left = None, "it is partitioned and trained (slots of parts are not converted)"
        if all_problems:
            for m in table_handles:
                rejected[m] = all_problems[0]
            continue
        if group_list:
            sites = []
            for g in group_list:
                body = model.body(g.body)
                stitch = body.node(g.stitch)
                sites.append(
                    LookupSite(
                        g.body,
                        g.stitch,
                        stitch.op,
                        str(g.flat_ids),
                        nodes.attr_value(body.node(g.gathers[0]), "Tindices"),
                        part_gathers=g.gathers,
                    )
                )
            strategy = group_list[0].strategy
        else:
            sites, strategy = scans[h].sites, None
        if update is not None:
            for site in training_updates.training_sites(model.body(TOP), update, sites):
                site.training = True
        for site in sites:
            srcs = model.trace_back(site.body, TensorRef.parse(site.ids))
            site.signature_inputs = sorted({k for p in srcs for k in placeholders.get(p.ref.node, [])})
        tables.append(
            TableCandidate(
                name=_PART_SUFFIX.sub("", h),
                handles=table_handles,
                rows=sum(s[0] for s in shapes),
                dim=shapes[0][1],
                dtype=dtype,
                sites=sites,
                uses=uses,
                checkpoint_key=key,
                partition_strategy=strategy,
                partition_rows=[s[0] for s in shapes] if group_list else [],
                training=update,
                training_left=training_left,
            )
        )

    _drop_tables_sharing_arguments(tables, args_of, arg_sources, rejected)
    table_gathers = {(s.body, g) for t in tables for s in t.sites for g in (s.part_gathers or [s.node])}
    var_gathers = {g: h for h, scan in scans.items() for g in scan.gathers}
    left = []
    for body in model.bodies.values():
        for node in body.nodes():
            if node.op not in GATHER_OPS or (body.name, node.name) in table_gathers:
                continue
            h = var_gathers.get((body.name, node.name))
            if h is not None:
                reason = _gather_problem(body, node) or f"variable {h} is not a table: {rejected.get(h, '?')}"
            else:
                src, _ = _producer(body, body.data_inputs(node)[0])
                what = f"{src.op} {src.name}" if src is not None else "a function argument"
                reason = f"params is not a variable (it comes from {what})"
            left.append(GatherLeftAlone(body.name, node.name, node.op, reason))
    return Detection(tables, left)
