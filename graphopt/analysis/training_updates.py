"""Finding a table's training update in a TF1 training graph: which v1 optimizer, on which tensors.

The v1 optimizers (``tf.compat.v1.train.*Optimizer.minimize``) update a resource variable read by
a gather with one of these subgraphs (top level, under ``<train>/update_<table>/``):

    SGD      ResourceScatterAdd(table, ids, Mul(Neg(g), lr))                    (ids not deduplicated)
    Adagrad  ResourceSparseApplyAdagrad[V2](table, acc, lr, [epsilon,] g, ids)  (g summed per id)
    FTRL     ResourceSparseApplyFtrl(table, acc, linear, g, ids, lr, l1, l2, lr_power)
    Adam     m := m * beta1; ResourceScatterAdd(m, ids, g * (1 - beta1)); v likewise with g * g;
             AssignSubVariableOp(table, lr_t * sqrt(1 - beta2_power) / (1 - beta1_power) * m
                                        / (sqrt(v) + epsilon))

Each becomes the EmbeddingVariable apply op of the same optimizer on the same tensors (ids,
gradients, hyperparameters), its slot variables the table's in-row slots. Anything else that
writes the table (Momentum, RMSProp, a dense optimizer on the table) has no counterpart: the
table keeps its dense variable and the plan says why.
"""

import dataclasses

import numpy as np

from graphopt.ev import contract
from graphopt.graph import nodes
from graphopt.graph.model import Body, TensorRef

# Ops a v1 optimizer writes a variable with (position 0 is the variable).
UPDATE_OPS = ("ResourceScatterAdd", "ResourceScatterSub", "AssignSubVariableOp", "AssignAddVariableOp")
UPDATE_PREFIXES = ("ResourceSparseApply", "ResourceApply")


def is_update(node, position) -> bool:
    """Whether ``node`` writes a variable at input ``position`` the way an optimizer does."""
    return position == 0 and (node.op in UPDATE_OPS or node.op.startswith(UPDATE_PREFIXES))


@dataclasses.dataclass
class SlotVariable:
    """An optimizer slot variable that becomes slot ``name`` of the table's rows."""

    name: str  # the EmbeddingVariable slot name (accumulator, m, v, linear)
    handle: str  # its top-level VarHandleOp
    init_value: float
    checkpoint_key: str | None = None
    save_read: str | None = None  # the ReadVariableOp the Saver's SaveV2 takes it from
    save_node: str | None = None
    save_entry: int | None = None
    restore_node: str | None = None
    restore_entry: int | None = None


@dataclasses.dataclass
class TrainingUpdate:
    """A table's optimizer update, as the EmbeddingVariable apply op will take it."""

    optimizer: str  # sgd | adagrad | adam | ftrl
    node: str  # the update op the apply op replaces (it keeps this name)
    source_op: str
    keys: str  # tensor references, top-level spelling
    grads: str
    hyper: list[str | None]  # in the apply op's input order; None: a constant 0 (v1 Adagrad's epsilon)
    slots: list[SlotVariable]
    # Nodes whose control consumers now wait for the apply op (Adam's reads of m_t and v_t).
    control_from: list[str] = dataclasses.field(default_factory=list)
    # Apply-op attrs selecting the replaced kernel's exact arithmetic (name -> (value, kind)).
    exact_attrs: dict = dataclasses.field(default_factory=dict)

    @property
    def apply_op(self) -> str:
        return contract.APPLY_OPS[self.optimizer]

    def to_dict(self) -> dict:
        return {
            "optimizer": self.optimizer,
            "update": self.node,
            "op": self.source_op,
            "apply_op": self.apply_op,
            "slots": {s.name: s.handle for s in self.slots},
        }


def _node(body: Body, ref, op=None):
    """Producer of ``ref`` (str or TensorRef) through Identity, if its op is ``op`` (any when None)."""
    ref = TensorRef.parse(ref) if isinstance(ref, str) else ref
    node = body.node(ref.node)
    while node is not None and node.op == "Identity":
        node = body.node(body.data_inputs(node)[0].node)
    if node is None or (op is not None and node.op not in ((op,) if isinstance(op, str) else op)):
        return None
    return node


def _ins(body: Body, node) -> list[TensorRef]:
    return body.data_inputs(node)


def _one_minus(body: Body, ref) -> TensorRef | None:
    """x of ``Sub(1, x)``."""
    sub = _node(body, ref, "Sub")
    if sub is None:
        return None
    one = _node(body, _ins(body, sub)[0], "Const")
    if one is None or float(np.asarray(nodes.const_value(one)).reshape(-1)[0]) != 1.0:
        return None
    return _ins(body, sub)[1]


def _const_value(body: Body, ref) -> float | None:
    """The value a slot initializer fills with: Const, Fill(dims, c), Mul(a, b) of those."""
    node = _node(body, ref)
    if node is None:
        return None
    if node.op == "Const":
        value = np.asarray(nodes.const_value(node)).reshape(-1)
        return float(value[0]) if value.size and np.all(value == value[0]) else None
    if node.op == "Fill":
        return _const_value(body, _ins(body, node)[1])
    if node.op == "Mul":
        a, b = (_const_value(body, r) for r in _ins(body, node))
        return None if a is None or b is None else float(np.float32(a) * np.float32(b))
    return None


def _slots(body: Body, specs, scans) -> list[SlotVariable] | str:
    """The slot variables ``specs`` ((handle ref, name, default)) name, or why one cannot be converted."""
    out = []
    for handle_ref, name, default in specs:
        slot = _slot(body, handle_ref, name, default, scans)
        if isinstance(slot, str):
            return slot
        out.append(slot)
    return out


def _slot(body: Body, handle_ref, name, default, scans) -> SlotVariable | str:
    handle = _node(body, handle_ref, "VarHandleOp")
    if handle is None:
        return f"its {name} slot is not a resource variable"
    slot = SlotVariable(name, handle.name, default)
    scan = scans.get(handle.name)
    for use in scan.uses if scan is not None else ():
        if use.kind == "init":
            # The optimizer's own assigns (Adam's m * beta1) are top-level assigns too: the
            # initializer is the one whose value is a constant.
            value = _const_value(body, _ins(body, body.node(use.node))[1])
            if value is not None:
                slot.init_value = value
        elif use.kind == "save":
            slot.save_read, slot.save_node, slot.save_entry = use.node, use.save_node, use.save_entry
        elif use.kind == "restore":
            slot.restore_node, slot.restore_entry = use.restore_node, use.restore_entry
            names = nodes.const_value(body.node(_ins(body, body.node(use.restore_node))[1].node)).reshape(-1)
            key = names[use.restore_entry]
            slot.checkpoint_key = key.decode() if isinstance(key, bytes) else str(key)
    if slot.checkpoint_key is None or slot.save_node is None:
        return f"the Saver does not save and restore its {name} slot {handle.name}"
    return slot


def _adam(body: Body, node, scans) -> TrainingUpdate | str:
    # AssignSubVariableOp(table, RealDiv(Mul(lr, m_t), AddV2(Sqrt(v_t), epsilon)))
    div = _node(body, _ins(body, node)[1], "RealDiv")
    mul = div is not None and _node(body, _ins(body, div)[0], "Mul")
    add = div is not None and _node(body, _ins(body, div)[1], ("AddV2", "Add"))
    if not mul or not add:
        return f"{node.op} {node.name} is not a v1 Adam update"
    lr, m_read = _ins(body, mul)
    sqrt_v = _node(body, _ins(body, add)[0], "Sqrt")
    m_read, v_read = (
        _node(body, m_read, "ReadVariableOp"),
        sqrt_v and _node(body, _ins(body, sqrt_v)[0], "ReadVariableOp"),
    )
    # lr = lr_t * sqrt(1 - beta2_power) / (1 - beta1_power)
    lr_div = _node(body, lr, "RealDiv")
    lr_mul = lr_div is not None and _node(body, _ins(body, lr_div)[0], "Mul")
    sqrt_b2 = lr_mul and _node(body, _ins(body, lr_mul)[1], "Sqrt")
    if not (m_read and v_read and lr_div is not None and lr_mul and sqrt_b2):
        return f"{node.op} {node.name} is not a v1 Adam update"
    beta1_power = _one_minus(body, _ins(body, lr_div)[1])
    beta2_power = _one_minus(body, _ins(body, sqrt_b2)[0])
    m_handle, v_handle = _ins(body, m_read)[0], _ins(body, v_read)[0]
    scatters = {}
    for which, handle in (("m", m_handle), ("v", v_handle)):
        for use in body.consumers(handle.node):
            c = body.node(use.node)
            if c.op == "ResourceScatterAdd" and use.position == 0:
                scatters[which] = c
    if beta1_power is None or beta2_power is None or set(scatters) != {"m", "v"}:
        return f"{node.op} {node.name} is not a v1 Adam update"
    # m: ResourceScatterAdd(m, ids, Mul(g, Sub(1, beta1)));  v: ... Mul(Mul(g, g), Sub(1, beta2))
    keys, m_upd = _ins(body, scatters["m"])[1:3]
    m_mul, v_mul = _node(body, m_upd, "Mul"), _node(body, _ins(body, scatters["v"])[2], "Mul")
    if m_mul is None or v_mul is None:
        return f"{node.op} {node.name} is not a v1 Adam update"
    grads = _ins(body, m_mul)[0]
    beta1, beta2 = _one_minus(body, _ins(body, m_mul)[1]), _one_minus(body, _ins(body, v_mul)[1])
    epsilon = _ins(body, add)[1]
    lr_t = _ins(body, lr_mul)[0]
    if beta1 is None or beta2 is None:
        return f"{node.op} {node.name} is not a v1 Adam update"
    slots = _slots(
        body, zip((m_handle, v_handle), contract.SLOT_NAMES["adam"], (0.0, 0.0), strict=True), scans
    )
    if isinstance(slots, str):
        return slots
    return TrainingUpdate(
        "adam",
        node.name,
        node.op,
        str(keys),
        str(grads),
        [str(r) for r in (lr_t, beta1, beta2, epsilon, beta1_power, beta2_power)],
        slots,
        control_from=[m_read.name, v_read.name],
    )


def match_update(body: Body, node, scans) -> TrainingUpdate | str:
    """The TrainingUpdate of optimizer update ``node`` on a table, or why it has no counterpart."""
    ins = [str(r) for r in _ins(body, node)]
    if node.op == "ResourceScatterAdd":
        mul = _node(body, ins[2], "Mul")
        neg = mul is not None and _node(body, _ins(body, mul)[0], "Neg")
        if not neg:
            return f"{node.op} {node.name} adds something other than -gradient * learning rate"
        # v1 SGD scatters -g * lr once per occurrence of an id, in batch order: so does the op.
        return TrainingUpdate(
            "sgd",
            node.name,
            node.op,
            ins[1],
            str(_ins(body, neg)[0]),
            [str(_ins(body, mul)[1])],
            [],
            exact_attrs={"sum_duplicates": (False, "b")},
        )
    if node.op in ("ResourceSparseApplyAdagrad", "ResourceSparseApplyAdagradV2"):
        if nodes.attr_value(node, "update_slots") is False:
            return f"{node.op} {node.name} does not update its accumulator"
        v2 = node.op.endswith("V2")
        (accumulator,) = contract.SLOT_NAMES["adagrad"]
        slot = _slot(body, ins[1], accumulator, 0.1, scans)
        if isinstance(slot, str):
            return slot
        # V1 has no epsilon: the op gets a constant 0 and its rsqrt form (below).
        epsilon = ins[3] if v2 else None
        g, ids = (ins[4], ins[5]) if v2 else (ins[3], ins[4])
        # V1 multiplies by Eigen's rsqrt(acc): the op's rsqrt=true form is that, bit for bit.
        exact = {} if v2 else {"rsqrt": (True, "b")}
        return TrainingUpdate(
            "adagrad", node.name, node.op, ids, g, [ins[2], epsilon], [slot], exact_attrs=exact
        )
    if node.op == "ResourceSparseApplyFtrl":
        slots = _slots(body, zip(ins[1:3], contract.SLOT_NAMES["ftrl"], (0.1, 0.0), strict=True), scans)
        if isinstance(slots, str):
            return slots
        hyper: list[str | None] = [*ins[5:9]]  # lr, l1, l2 (v1 adds its beta term), lr_power
        return TrainingUpdate("ftrl", node.name, node.op, ins[4], ins[3], hyper, slots)
    if node.op == "AssignSubVariableOp":
        return _adam(body, node, scans)
    return f"its optimizer update {node.op} ({node.name}) has no EmbeddingVariable counterpart"


def training_sites(body: Body, update: TrainingUpdate, sites) -> list:
    """The lookup sites the update's gradients come from (the training path)."""
    seen, stack = set(), [TensorRef.parse(update.grads).node]
    while stack:
        name = stack.pop()
        if name in seen or body.node(name) is None:
            continue
        seen.add(name)
        stack.extend(r.node for r in body.inputs(body.node(name)))
    return [s for s in sites if s.body == body.name and s.node in seen]


def table_update(model, uses, scans) -> tuple[TrainingUpdate | None, str | None]:
    """(update, None), (None, reason it stays dense) or (None, None) for a table nobody trains."""
    train = [u for u in uses if u.kind == "train"]
    if not train:
        return None, None
    if len(train) > 1 or any(u.part for u in train):
        return None, f"{len(train)} optimizer updates write it (one per table is supported)"
    body = model.body(train[0].body)
    found = match_update(body, body.node(train[0].node), scans)
    return (None, found) if isinstance(found, str) else (found, None)
