"""What every target's saver passes share: the Saver's SaveV2 / RestoreV2 nodes and their entries.

A SaveV2 or RestoreV2 node lists its checkpoint entries in two string Consts (inputs 1 and 2:
tensor_names, shape_and_slices); a target adds or renames entries by pointing those inputs at
new Consts and the old ones are left for the cleanup.
"""

import itertools

import numpy as np

from graphopt.graph import nodes


def saver_uses(ctx, kind, node_field):
    """((body, Saver node), [(table, use)] sorted by part) of the plan's uses of ``kind``.

    ``kind`` is "save" or "restore", ``node_field`` the VariableUse field naming the Saver node.
    """
    out = [(t, u) for t in ctx.plan.tables for u in t.uses if u.kind == kind]
    key = lambda tu: (tu[1].body, getattr(tu[1], node_field))  # noqa: E731
    groups = itertools.groupby(sorted(out, key=key), key)
    return [(k, sorted(g, key=lambda tu: tu[1].part)) for k, g in groups]


def entry_strings(body, ref):
    """The strings of a Saver node's tensor_names or shape_and_slices Const."""
    node = body.node(ref.node)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in nodes.const_value(node).reshape(-1)]


def set_entry_names(ctx, body, node, names, slices):
    """Points inputs 1 and 2 (tensor_names, shape_and_slices) of a Save/Restore at new Consts."""
    data = body.data_inputs(node)
    for pos, values, base in ((1, names, "tensor_names"), (2, slices, "shape_and_slices")):
        ctx.disconnected.add((body.name, data[pos].node))
        # The "_ev" suffix predates the stock target, which shares this; kept so that outputs
        # stay as they were.
        ref = body.add_const(f"{node.name}/{base}_ev", np.array(values, dtype=object), node.device)
        body.set_input(node.name, pos, ref)
