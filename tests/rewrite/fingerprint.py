"""A canonical fingerprint of a rewritten model, to show a refactor left the rewrite unchanged.

Per graph and function: the multiset of (op, sorted attr keys, data inputs, control inputs) of
its nodes. Function names carry run-dependent uids (``__inference_call_1234``); digit runs in
them become N, and functions whose normalised names collide are kept as a sorted list. Besides
the graph: the checkpoint's tensor names (numbered path parts as N), dtypes and shapes, and the
manifest's replaced nodes as (in a function, old op, new op, pass) counts.
"""

import collections
import json
import os
import re

_UID = re.compile(r"_\d+(?=(_|$))")
# tf_keras numbers its checkpoint keys (_all_variables/11/...) in an order that varies per build.
_INDEX = re.compile(r"(?<=/)\d+(?=/)")


def _normalise(name):
    return _UID.sub("_N", name)


def _nodes(node_defs):
    counts = collections.Counter()
    for n in node_defs:
        controls = sum(i.startswith("^") for i in n.input)
        counts[(n.op, ",".join(sorted(n.attr)), len(n.input) - controls, controls)] += 1
    return sorted([*key, c] for key, c in counts.items())


def fingerprint(model_dir):
    """The fingerprint (plain JSON-able dict) of the model written at ``model_dir``."""
    import tensorflow as tf

    from graphopt import model_io

    source = model_io.read_model(model_dir)
    mg = source.meta_graph
    functions = collections.defaultdict(list)
    for f in mg.graph_def.library.function:
        functions[_normalise(f.signature.name)].append(_nodes(f.node_def))
    reader = tf.train.load_checkpoint(source.checkpoint_prefix)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    manifest = json.load(open(os.path.join(model_dir, "graphopt_manifest.json")))
    replaced = collections.Counter(
        (bool(r["function"]), r["old"]["op"], r["new"]["op"] if r["new"] else None, r["pass"])
        for r in manifest["replaced"]
    )
    return {
        "graph": _nodes(mg.graph_def.node),
        "functions": {k: sorted(v, key=json.dumps) for k, v in sorted(functions.items())},
        "object_graph_nodes": len(mg.object_graph_def.nodes),
        "checkpoint": sorted([_INDEX.sub("N", k), dtypes[k].name, list(shapes[k])] for k in shapes),
        "replaced": sorted([list(k) + [c] for k, c in replaced.items()], key=json.dumps),
    }
