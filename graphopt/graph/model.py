"""A small mutable graph model over a MetaGraphDef: the top-level graph and every function body.

The model keeps the NodeDef protos themselves (edits are made in place, so nothing is lost on
write) and indexes them: nodes by name, consumers of each node, parsed input references,
call edges between the graph and the functions of the library. Mutators return the body or
the model so that calls chain, in the spirit of ONNX-GraphSurgeon::

    body.replace_uses(old, new).remove_nodes(dead)
"""

import dataclasses
import re
from collections.abc import Iterator

from graphopt.graph import meta_graphs, object_graphs
from graphopt.graph import nodes as nd

TOP = ""  # name of the top-level graph among the bodies

CALL_OPS = {"StatefulPartitionedCall", "PartitionedCall"}
# Function-valued attrs of control-flow ops and where their arguments start among the inputs.
FUNCTION_ATTRS = {
    "If": (("then_branch", "else_branch"), 1),
    "StatelessIf": (("then_branch", "else_branch"), 1),
    "While": (("cond", "body"), 0),
    "StatelessWhile": (("cond", "body"), 0),
    "Case": (("branches",), 1),
    "StatelessCase": (("branches",), 1),
}
_INPUT_RE = re.compile(r"^(\^)?([^:]+)(?::([A-Za-z_][A-Za-z0-9_]*))?(?::(\d+))?$")


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """One input reference: ``node:idx`` in graphs, ``node:out_arg:idx`` in function bodies, ``^node``."""

    node: str
    output: str | None = None  # output arg name (function bodies only)
    index: int = 0
    control: bool = False

    @classmethod
    def parse(cls, text: str) -> "TensorRef":
        m = _INPUT_RE.match(text)
        if m is None:
            raise ValueError(f"bad input reference {text!r}")
        ctrl, node, out_arg, idx = m.groups()
        return cls(node, out_arg, int(idx) if idx is not None else 0, bool(ctrl))

    def __str__(self):
        if self.control:
            return "^" + self.node
        if self.output is not None:
            return f"{self.node}:{self.output}:{self.index}"
        return self.node if self.index == 0 else f"{self.node}:{self.index}"

    def key(self):
        """What identifies the tensor regardless of spelling: (node, output arg, index)."""
        return (self.node, self.output, self.index)


@dataclasses.dataclass(frozen=True)
class Use:
    """One consumer edge: ``node`` reads the producer at input position ``position``."""

    node: str
    position: int
    ref: TensorRef


class Body:
    """One graph body: the top-level GraphDef (name ``TOP``) or a FunctionDef's node list."""

    def __init__(self, name: str, nodes, function=None):
        self.name = name
        self._nodes = nodes  # the repeated NodeDef field, edited in place
        self.function = function  # FunctionDef or None
        self._by_name: dict[str, object] | None = None
        self._consumers: dict[str, list[Use]] | None = None

    # ----- reading
    @property
    def is_function(self) -> bool:
        return self.function is not None

    @property
    def args(self) -> list[str]:
        """Input arg names (function bodies); the top-level graph has none."""
        return [a.name for a in self.function.signature.input_arg] if self.function else []

    def arg_type(self, name):
        for a in self.function.signature.input_arg:
            if a.name == name:
                return a.type
        return None

    @property
    def returns(self) -> dict[str, str]:
        """Output arg name -> tensor reference (function bodies)."""
        return dict(self.function.ret) if self.function else {}

    def nodes(self) -> Iterator:
        return iter(self._nodes)

    def __len__(self):
        return len(self._nodes)

    def __contains__(self, name):
        return name in self._index()

    def node(self, name):
        """The NodeDef called ``name``, or None (function args are not nodes)."""
        return self._index().get(name)

    def _index(self):
        if self._by_name is None:
            self._by_name = {n.name: n for n in self._nodes}
        return self._by_name

    def inputs(self, node) -> list[TensorRef]:
        return [TensorRef.parse(s) for s in node.input]

    def data_inputs(self, node) -> list[TensorRef]:
        return [r for r in self.inputs(node) if not r.control]

    def consumers(
        self, name: str, output: tuple[str | None, int] | None = None, control: bool = False
    ) -> list[Use]:
        """Edges reading node (or arg) ``name``; data edges only unless ``control``; one output if given."""
        if self._consumers is None:
            cons: dict[str, list[Use]] = {}
            for n in self._nodes:
                for pos, s in enumerate(n.input):
                    ref = TensorRef.parse(s)
                    cons.setdefault(ref.node, []).append(Use(n.name, pos, ref))
            self._consumers = cons
        out = []
        for use in self._consumers.get(name, []):
            if use.ref.control and not control:
                continue
            if output is not None and not use.ref.control and (use.ref.output, use.ref.index) != output:
                continue
            out.append(use)
        return out

    def return_uses(self, name: str) -> list[str]:
        """Output args of the function returning a tensor of ``name``."""
        return [k for k, v in self.returns.items() if TensorRef.parse(v).node == name]

    def output_ref(self, node_name, flat_index=0, out_arg="output") -> TensorRef:
        """The reference to output ``flat_index`` of a node in this body's spelling."""
        if self.is_function:
            return TensorRef(node_name, out_arg, flat_index)
        return TensorRef(node_name, None, flat_index)

    def op_output(self, node_name, index=0) -> TensorRef:
        """Output ``index`` of a node whose output args are single tensors, in this body's spelling.

        Function bodies name the output arg (``find:values:0``), graphs count (``find:1``).
        """
        if not self.is_function:
            return TensorRef(node_name, None, index)
        return TensorRef(node_name, nd.output_arg_names(self.node(node_name).op)[index], 0)

    @property
    def output_args(self) -> list[str]:
        """Output arg names (function bodies); the top-level graph has none."""
        return [a.name for a in self.function.signature.output_arg] if self.function else []

    @property
    def declared_control_outputs(self) -> list[str]:
        """Control output names the function's signature declares."""
        return list(self.function.signature.control_output) if self.function else []

    @property
    def control_outputs(self) -> dict[str, str]:
        """Control output name -> node (function bodies); the top-level graph has none."""
        return dict(self.function.control_ret) if self.function else {}

    def unique_name(self, base: str) -> str:
        names = self._index()
        if base not in names and base not in self.args:
            return base
        i = 1
        while f"{base}_{i}" in names:
            i += 1
        return f"{base}_{i}"

    # ----- mutating (each returns self)
    def rebind(self, nodes, function=None) -> "Body":
        """Points the body at another copy of its protos (after the library was rebuilt)."""
        self._nodes, self.function = nodes, function
        self._changed()
        return self

    def _changed(self):
        self._by_name = None
        self._consumers = None

    def add_node(self, node) -> "Body":
        self._nodes.add().CopyFrom(node)
        self._changed()
        return self

    def add_op(self, op, base_name, inputs=(), attrs=None, device="", control=()) -> str:
        """Adds a node built by ``nodes.make_node`` under a fresh name based on ``base_name``.

        Returns the node's name; ``op_output`` spells its outputs.
        """
        name = self.unique_name(base_name)
        self.add_node(nd.make_node(op, name, inputs, attrs, device, control))
        return name

    def add_const(self, base_name, value, device="") -> TensorRef:
        """Adds a Const holding ``value`` (numpy) under a fresh name; returns its output."""
        node = nd.const_node(self.unique_name(base_name), value, device)
        self.add_node(node)
        return self.op_output(node.name)

    def add_control_output(self, node_name: str) -> "Body":
        """Makes node ``node_name`` a control output of the function (under its own name)."""
        self.function.control_ret[node_name] = node_name
        self.function.signature.control_output.append(node_name)
        self._changed()
        return self

    def replace_node(self, name: str, node) -> "Body":
        """Puts ``node`` in the place of the node called ``name`` (usually under the same name)."""
        old = self.node(name)
        old.CopyFrom(node)
        self._changed()
        return self

    # --- one node's attrs and inputs: read, or edited in place (the indexes follow) ---
    def _edit(self, node_name: str, edit, *args) -> "Body":
        edit(self.node(node_name), *args)
        self._changed()
        return self

    def attr(self, node_name: str, key: str):
        """The value of attr ``key`` of node ``node_name`` (``nodes.attr_value``; None when unset)."""
        return nd.attr_value(self.node(node_name), key)

    def control_inputs(self, node_name: str) -> list[str]:
        """The control inputs ('^name') of node ``node_name``, in order."""
        return nd.control_inputs(self.node(node_name))

    def set_attr(self, node_name: str, key: str, value, kind=None) -> "Body":
        """Sets attr ``key`` of node ``node_name`` (``kind`` as in ``nodes.set_attr``)."""
        return self._edit(node_name, nd.set_attr, key, value, kind)

    def remove_attr(self, node_name: str, key: str) -> "Body":
        return self._edit(node_name, nd.remove_attr, key)

    def set_inputs(self, node_name: str, inputs) -> "Body":
        """Replaces every input of node ``node_name`` (data inputs first, then control inputs)."""
        return self._edit(node_name, nd.set_inputs, inputs)

    def insert_inputs(self, node_name: str, position: int, refs) -> "Body":
        """Inserts ``refs`` before input ``position`` of node ``node_name``."""
        return self._edit(node_name, nd.insert_inputs, position, refs)

    def add_control_input(self, node_name: str, control: str) -> "Body":
        """Makes node ``node_name`` wait for node ``control`` (once)."""
        return self._edit(node_name, nd.add_control_input, control)

    def set_input(self, node_name: str, position: int, ref) -> "Body":
        self.node(node_name).input[position] = str(ref)
        self._changed()
        return self

    def replace_uses(self, old: TensorRef, new: TensorRef) -> "Body":
        """Makes every data consumer (and function return) of tensor ``old`` read ``new``."""
        for n in self._nodes:
            for pos, s in enumerate(n.input):
                ref = TensorRef.parse(s)
                if not ref.control and ref.node == old.node and self._same_tensor(ref, old):
                    n.input[pos] = str(new)
        if self.function is not None:
            for k, v in list(self.function.ret.items()):
                ref = TensorRef.parse(v)
                if ref.node == old.node and self._same_tensor(ref, old):
                    self.function.ret[k] = str(new)
        self._changed()
        return self

    def redirect_control(self, old: str, new: str) -> "Body":
        """Makes every control edge (and function control output) from node ``old`` come from ``new``."""
        if self.function is not None:
            for k, v in list(self.function.control_ret.items()):
                if v == old:
                    self.function.control_ret[k] = new
        for n in self._nodes:
            if n.name == new:
                continue
            ins = list(n.input)
            if "^" + old in ins:
                ins = [s for s in ins if s != "^" + old]
                if "^" + new not in ins:
                    ins.append("^" + new)
                del n.input[:]
                n.input.extend(ins)
        self._changed()
        return self

    def _same_tensor(self, a: TensorRef, b: TensorRef) -> bool:
        if self.is_function and (a.output is None or b.output is None):
            return a.index == b.index  # a bare function arg
        return (a.output, a.index) == (b.output, b.index)

    def remove_nodes(self, names) -> "Body":
        """Deletes nodes and every control edge to them; data consumers must be gone already."""
        names = set(names)
        if not names:
            return self
        keep = [n for n in self._nodes if n.name not in names]
        for n in keep:
            ins = [s for s in n.input if not (s.startswith("^") and s[1:] in names)]
            if len(ins) != len(n.input):
                del n.input[:]
                n.input.extend(ins)
            # Colocation with a node that is gone fails at import time.
            if "_class" in n.attr:
                locs = [v for v in n.attr["_class"].list.s if v.decode(errors="replace")[5:] not in names]
                if len(locs) != len(n.attr["_class"].list.s):
                    if locs:
                        del n.attr["_class"].list.s[:]
                        n.attr["_class"].list.s.extend(locs)
                    else:
                        del n.attr["_class"]
        if self.function is not None:
            gone = [k for k, v in self.function.control_ret.items() if v in names]
            for k in gone:
                del self.function.control_ret[k]
            outs = [c for c in self.function.signature.control_output if c not in gone]
            del self.function.signature.control_output[:]
            self.function.signature.control_output.extend(outs)
        copies = [nd.clone(n) for n in keep]
        del self._nodes[:]
        self._nodes.extend(copies)
        self._changed()
        return self

    def dead_cone(self, names) -> set:
        """``names`` plus every node that reads data only through them (transitively)."""
        dead = set(names)
        changed = True
        while changed:
            changed = False
            for n in self._nodes:
                if n.name in dead:
                    continue
                data = self.data_inputs(n)
                if data and any(r.node in dead for r in data):
                    dead.add(n.name)
                    changed = True
        return dead

    def toposort(self) -> "Body":
        """Orders the nodes so that every node comes after its inputs (where the graph allows)."""
        index = self._index()
        order, state = [], {}
        for root in [n.name for n in self._nodes]:
            stack = [(root, False)]
            while stack:
                name, done = stack.pop()
                if done:
                    state[name] = 2
                    order.append(index[name])
                    continue
                if state.get(name):
                    continue
                state[name] = 1
                stack.append((name, True))
                for ref in self.inputs(index[name]):
                    if ref.node in index and not state.get(ref.node):
                        stack.append((ref.node, False))
        copies = [nd.clone(n) for n in order]
        del self._nodes[:]
        self._nodes.extend(copies)
        self._changed()
        return self


@dataclasses.dataclass(frozen=True)
class CallEdge:
    """``caller`` (a node of body ``body``) passes its input ``first_input + k`` to arg k of ``function``."""

    body: str
    caller: str
    function: str
    first_input: int


@dataclasses.dataclass(frozen=True)
class Place:
    """A tensor somewhere in the model: body name and reference."""

    body: str
    ref: TensorRef


class ModelGraph:
    """The graph model of one meta graph: its bodies, call edges and resource tracing."""

    def __init__(self, meta_graph):
        self.meta_graph = meta_graph
        self.bodies: dict[str, Body] = {TOP: Body(TOP, meta_graph.graph_def.node)}
        for f in meta_graph.graph_def.library.function:
            self.bodies[f.signature.name] = Body(f.signature.name, f.node_def, f)
        self._calls = None
        self._bound_args: dict | None = None  # {top-level tensor: [(function, arg position)]}

    @property
    def graph(self) -> Body:
        return self.bodies[TOP]

    def functions(self) -> list[Body]:
        return [b for n, b in self.bodies.items() if n != TOP]

    def body(self, name) -> Body:
        return self.bodies[name]

    # ----- call edges
    def calls_of(self, body: Body, node) -> list[CallEdge]:
        """Call edges out of one node: call ops, control flow, and direct calls of library functions."""
        if node.op in CALL_OPS:
            return [CallEdge(body.name, node.name, nd.attr_value(node, "f"), 0)]
        if node.op in FUNCTION_ATTRS:
            attrs, first = FUNCTION_ATTRS[node.op]
            edges = []
            for a in attrs:
                v = nd.attr_value(node, a)
                for fname in v if isinstance(v, list) else [v]:
                    if fname:
                        edges.append(CallEdge(body.name, node.name, fname, first))
            return edges
        if node.op in self.bodies and node.op != TOP:
            return [CallEdge(body.name, node.name, node.op, 0)]
        return []

    def call_edges(self) -> list[CallEdge]:
        if self._calls is None:
            self._calls = [e for b in self.bodies.values() for n in b.nodes() for e in self.calls_of(b, n)]
        return self._calls

    def callers_of(self, function: str) -> list[CallEdge]:
        return [e for e in self.call_edges() if e.function == function]

    def other_function_refs(self, body: Body, node) -> list[str]:
        """Function-valued attrs of a node that are not understood call edges (datasets, etc.)."""
        known = {e.function for e in self.calls_of(body, node)}
        out = []
        for a in node.attr:
            v = nd.attr_value(node, a)
            if node.attr[a].WhichOneof("value") == "func" or (
                node.attr[a].WhichOneof("value") == "list" and len(node.attr[a].list.func)
            ):
                for f in v if isinstance(v, list) else [v]:
                    if f and f not in known:
                        out.append(f)
        return out

    def keep_functions(self, keep) -> "ModelGraph":
        """Removes every library function not named in ``keep`` (and its gradient entry)."""
        dead = meta_graphs.keep_functions(self.meta_graph, keep)
        if not dead:
            return self
        for name in dead:
            del self.bodies[name]
        for f in meta_graphs.function_library(self.meta_graph).function:  # copies: rebind the bodies
            self.bodies[f.signature.name].rebind(f.node_def, f)
        return self.invalidate()

    def invalidate(self) -> "ModelGraph":
        self._calls = None
        for b in self.bodies.values():
            b._changed()
        return self

    # ----- tracing
    def resource_args(self, body_name: str, node_name: str) -> set:
        """(function, arg) pairs a resource reaches through calls."""
        visited: set = set()
        for _ in self.trace_resource(body_name, node_name, visited=visited):
            pass
        return {(b, n) for b, n, _ in visited if b != TOP and n in self.bodies[b].args}

    def trace_resource(self, body_name: str, node_name: str, output=(None, 0), visited=None):
        """Follows a resource from its producer through Identity and call arguments to each use.

        Yields ``(body, Use)`` for every op that consumes the resource other than Identity and
        calls; a call into a function continues at the matching arg inside the callee. Returns
        through function outputs are reported as uses of the call (``Use`` whose node is the call).
        """
        seen = visited if visited is not None else set()
        stack = [(body_name, node_name, output)]
        while stack:
            bname, name, out = stack.pop()
            if (bname, name, out) in seen:
                continue
            seen.add((bname, name, out))
            body = self.bodies[bname]
            for use in body.consumers(name, out):
                node = body.node(use.node)
                if node.op == "Identity":
                    stack.append((bname, node.name, ("output", 0) if body.is_function else (None, 0)))
                    continue
                edges = self.calls_of(body, node)
                if edges and use.position >= edges[0].first_input:
                    for e in edges:
                        callee = self.bodies.get(e.function)
                        if callee is None:
                            yield body, use
                            continue
                        k = use.position - e.first_input
                        args = callee.args
                        if k < len(args):
                            stack.append((e.function, args[k], None))
                    continue
                yield body, use

    def trace_variable(self, handle: str):
        """``trace_resource`` of a top-level variable, also into the functions the object graph binds
        it to (tf_keras' per-layer functions, which no top-level node calls); each use once."""
        from graphopt.graph import meta_graphs, object_graphs

        if self._bound_args is None:
            calls = meta_graphs.top_level_calls(self.meta_graph)
            self._bound_args = object_graphs.bound_object_args(self.meta_graph, calls)
        bound = self._bound_args
        seen: set = set()
        yield from self.trace_resource(TOP, handle, visited=seen)
        for function, position in bound.get(handle, []):
            body = self.bodies.get(function)
            if body is not None and position < len(body.args):
                yield from self.trace_resource(function, body.args[position], None, visited=seen)

    def trace_back(self, body_name: str, ref: TensorRef, stop_ops=("Placeholder",)) -> list[Place]:
        """Walks a tensor back to its sources: top-level placeholders reached through data edges and calls."""
        out, seen = [], set()
        stack = [(body_name, ref.node)]
        while stack:
            bname, name = stack.pop()
            if (bname, name) in seen:
                continue
            seen.add((bname, name))
            body = self.bodies[bname]
            if body.is_function and name in body.args:
                k = body.args.index(name)
                for e in self.callers_of(bname):
                    caller = self.bodies[e.body].node(e.caller)
                    data = self.bodies[e.body].data_inputs(caller)
                    if e.first_input + k < len(data):
                        stack.append((e.body, data[e.first_input + k].node))
                continue
            node = body.node(name)
            if node is None:
                continue
            if node.op in stop_ops:
                out.append(Place(bname, TensorRef(name)))
                continue
            edges = self.calls_of(body, node)
            for e in edges:
                callee = self.bodies.get(e.function)
                if callee is not None:
                    for v in callee.returns.values():
                        stack.append((e.function, TensorRef.parse(v).node))
            for r in body.data_inputs(node):
                stack.append((bname, r.node))
        return out

    # ----- integrity
    def check(self) -> list[str]:
        """Problems that make the model unloadable, one line each; empty when there are none.

        Every node input, function return and control return resolves (in function bodies also
        the output arg a reference names); node names are unique; every function a node attr
        names, and every concrete function of the object graph, is in the library; signature
        tensors name nodes of the graph.
        """
        problems = []
        for body in self.bodies.values():
            where = "graph" if body.name == TOP else f"function {body.name!r}"
            names = set()
            for n in body.nodes():
                if n.name in names:
                    problems.append(f"{where}: duplicate node {n.name!r}")
                names.add(n.name)
            for n in body.nodes():
                node_where = f"{'graph node' if body.name == TOP else where + ', node'} {n.name!r}"
                for text in n.input:
                    why = self._unresolved(body, text)
                    if why:
                        problems.append(f"{node_where} ({n.op}): input {text!r} {why}")
                for attr, fn in nd.function_attrs(n):
                    if fn not in self.bodies or fn == TOP:
                        problems.append(
                            f"{node_where}: attr {attr!r} calls function {fn!r}, not in the library"
                        )
            if body.is_function:
                problems += self._function_problems(body, where)
        for sig_name, entry in meta_graphs.signature_tensors(self.meta_graph).items():
            for part in ("inputs", "outputs"):
                for key, tensor in entry[part].items():
                    if tensor and tensor.split(":")[0] not in self.graph:
                        problems.append(
                            f"signature {sig_name!r} {part[:-1]} {key!r}: tensor {tensor!r} names no node"
                        )
        for fn in object_graphs.concrete_function_names(self.meta_graph):
            if fn not in self.bodies or fn == TOP:
                problems.append(
                    f"saved object graph: concrete function {fn!r} is not in the function library"
                )
        return problems

    def _unresolved(self, body: Body, text: str) -> str | None:
        """Why input reference ``text`` of a node of ``body`` does not resolve; None when it does."""
        if text.startswith("^"):
            return (
                None
                if text[1:] in body
                else f"names no node of the {'body' if body.is_function else 'graph'}"
            )
        if not body.is_function:
            return None if text.split(":")[0] in body else "names no node"
        parts = text.split(":")
        if len(parts) == 1:
            return None if text in body.args else "names no argument of the function"
        node = body.node(parts[0])
        if node is None:
            return "names no node of the body"
        outputs = self.output_arg_names(node.op)
        if outputs is not None and parts[1] not in outputs:
            return f"{node.op} has no output {parts[1]!r}"
        return None

    def _function_problems(self, body: Body, where: str) -> list[str]:
        problems = []
        returns = body.returns
        for out in body.output_args:
            if out not in returns:
                problems.append(f"{where}: output {out!r} has no return value")
        for key, text in returns.items():
            why = self._unresolved(body, text)
            if why:
                problems.append(f"{where}: return {key!r} = {text!r} {why}")
        controls = body.control_outputs
        for key, name in controls.items():
            if name not in body:
                problems.append(f"{where}: control output {key!r} = {name!r} names a missing node")
        for key in body.declared_control_outputs:
            if key not in controls:
                problems.append(f"{where}: control output {key!r} has no control return")
        return problems

    def output_arg_names(self, op_type) -> list[str] | None:
        """Output arg names of a library function or registered op; None when neither knows it."""
        if op_type in self.bodies and op_type != TOP:
            return self.bodies[op_type].output_args
        od = nd.op_def(op_type)
        return None if od is None else [a.name for a in od.output_arg]

    def op_uses(self) -> dict[str, str]:
        """{op type: where it is first used} for every op type of the graph and the function
        bodies, graph first; calls of library functions by op type are left out."""
        first_use: dict[str, str] = {}
        for body in self.bodies.values():
            for n in body.nodes():
                where = (
                    f"graph node {n.name!r}"
                    if body.name == TOP
                    else f"function {body.name!r}, node {n.name!r}"
                )
                first_use.setdefault(n.op, where)
        return {op: w for op, w in first_use.items() if op not in self.bodies or op == TOP}

    def unregistered_ops(self) -> list[str]:
        """Op types used anywhere that neither TensorFlow nor a loaded library nor the library defines."""
        return sorted(op for op in self.op_uses() if nd.op_def(op) is None)


def root_names(meta_graph) -> set:
    """Top-level nodes a loader or user reaches by name: signatures, saver, collections (init ops)."""
    roots = set(meta_graphs.saver_node_names(meta_graph)) | meta_graphs.collection_node_names(meta_graph)
    for sig in meta_graphs.signature_tensors(meta_graph).values():
        for part in ("inputs", "outputs"):
            roots.update(TensorRef.parse(t).node for t in sig[part].values())
    return roots


def live_nodes(model: "ModelGraph") -> set:
    """Top-level nodes the roots depend on (data and control edges)."""
    body = model.graph
    live, stack = set(), [r for r in root_names(model.meta_graph) if r in body]
    while stack:
        name = stack.pop()
        if name in live:
            continue
        live.add(name)
        stack.extend(r.node for r in body.inputs(body.node(name)) if r.node in body)
    return live
