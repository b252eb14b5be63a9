"""Keeps a TF2 SavedModel's object graph: each converted table becomes an EmbeddingVariable object.

Pattern (object graph of a TF2 SavedModel, and the same ids in the checkpoint's object graph):

    node N: variable {name, dtype, shape}       attributes: VARIABLE_VALUE -> K
      ==>
    node N: resource {}                         attributes: table -> K   (tensors K-keys/-values/...)
            children _create_resource, _initialize, _destroy_resource (functions)
            saveable_objects {table: (save_fn, restore_fn)}

Why: ``tf.saved_model.load`` runs a TF2 model through its object graph. Without one it takes the
TF1 path (``load_v1_in_v2``), where Grappler optimizes the same functions differently and outputs
move by an ulp; with the object graph kept, the rewritten model runs exactly the original's path,
so the two are bit-identical through ``tf.saved_model.load`` too. The session loader (TF Serving's
path) reads the graph and the SaverDef and never looks at the object graph.

How: the object nodes and functions an EmbeddingVariable needs are exactly what
``tf.saved_model.save`` writes for one, so a template module holding one EmbeddingVariable per
table is saved once, and each template resource subtree is grafted onto its table's node (the
node id stays, so every parent and every function capture that pointed at the variable now points
at the EmbeddingVariable). Template functions are renamed so they cannot clash with the model's.
"""

import os
import tempfile
import uuid
from typing import Dict, List, Optional

from graphopt.errors import ModelError
from graphopt.graph import io

TEMPLATE_ATTRIBUTE = "table"
_FUNCTION_SUFFIX = "_graphopt_ev"


def _template(tables, scratch_dir=None) -> tuple:
    """Saves a module with one EmbeddingVariable per table; returns (SavedObjectGraph, library, ckpt graph).

    Each table gets a shared name unique to this rewrite: every object that stands for the table
    then resolves to one table (TF restores a checkpoint key once, into one of them). Loads never
    share rows: different rewrites have different names, and tf.saved_model.load suffixes shared
    names with a per-load counter, so even two loads of one model get tables of their own.
    """
    import tensorflow as tf

    import graphopt

    run = uuid.uuid4().hex[:12]
    module = tf.Module()
    for i, table in enumerate(tables):
        ev = graphopt.EmbeddingVariable(table.dim, name=f"graphopt_table_{i}",
                                        shared_name=f"graphopt_{run}_{i}")
        setattr(module, f"t{i}", ev)
    with tempfile.TemporaryDirectory(prefix="graphopt-ev-template-", dir=scratch_dir) as tmp:
        tf.saved_model.save(module, tmp)
        source = io.read_model(tmp)
        ckpt_graph = io.read_object_graph(os.path.join(tmp, io.VARIABLES_DIR, io.VARIABLES_PREFIX))
    mg = source.meta_graph
    return mg.object_graph_def, mg.graph_def.library, ckpt_graph


def _subtree(og, root: int) -> List[int]:
    """Ids reachable from ``root`` through children and saveable functions, root first."""
    order, stack, seen = [], [root], {root}
    while stack:
        i = stack.pop()
        order.append(i)
        node = og.nodes[i]
        nxt = [c.node_id for c in node.children]
        for s in node.saveable_objects.values():
            nxt += [s.save_function, s.restore_function]
        for j in nxt:
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return order


def _function_closure(library, names) -> List[str]:
    """The named functions plus every function they call, by name."""
    by_name = {f.signature.name: f for f in library.function}
    out, stack = [], list(names)
    while stack:
        name = stack.pop()
        if name in out or name not in by_name:
            continue
        out.append(name)
        stack += io.called_functions(by_name[name])
    return out


def table_objects(meta_graph, ckpt_graph, tables) -> Dict[str, List[int]]:
    """{table name: ids of the objects that stand for it}.

    A table can have several objects (Keras 3 exports track each weight twice, as
    ``variables/N`` and ``_all_variables/N``): the one saved under the table's checkpoint key, and
    the ones concrete functions capture. A function's captures are its last inputs, so a top-level
    call of it names, at those positions, the handle node of each captured object.
    """
    og = meta_graph.object_graph_def
    table_of_handle = {h: t.name for t in tables for h in t.handles}
    found = {t.name: set() for t in tables}
    for i, node in enumerate(ckpt_graph.nodes):
        for attr in node.attributes:
            for t in tables:
                if attr.checkpoint_key == t.checkpoint_key:
                    found[t.name].add(i)
    for call, function, inputs in io.top_level_calls(meta_graph):
        if function not in og.concrete_functions:
            continue
        bound = list(og.concrete_functions[function].bound_inputs)
        for object_id, ref in zip(bound, inputs[len(inputs) - len(bound):]):
            name = ref.split(":")[0]
            if name in table_of_handle:
                found[table_of_handle[name]].add(object_id)
    return {name: sorted(ids) for name, ids in found.items()}


def rewrite_object_graph(meta_graph, ckpt_graph, tables, scratch_dir=None) -> Optional[object]:
    """Turns each table's variable object into an EmbeddingVariable object, in place.

    ``ckpt_graph`` is the checkpoint's TrackableObjectGraph; returns its rewritten copy, or None
    when the model has no object graph (TF1 formats), leaving everything as it was. The template
    is saved in a temporary folder under ``scratch_dir`` (default: the system's).
    """
    if not meta_graph.HasField("object_graph_def") or ckpt_graph is None:
        return None
    og = meta_graph.object_graph_def
    if len(ckpt_graph.nodes) > len(og.nodes):
        raise ModelError("the SavedModel's object graph does not match its checkpoint's "
                         f"({len(og.nodes)} vs {len(ckpt_graph.nodes)} objects); export the model again")
    objects = table_objects(meta_graph, ckpt_graph, tables)
    missing = [name for name, ids in objects.items() if not ids]
    if missing:
        raise ModelError(f"no object in the SavedModel's object graph stands for table {missing[0]}; "
                         "export the model again with tf.saved_model.save or model.export")
    t_og, t_library, t_ckpt = _template(tables, scratch_dir)
    ckpt_graph = io.clone(ckpt_graph)
    # Objects past the checkpoint's end (saveable functions of resources) have no checkpoint
    # entry; empty slots keep both graphs' ids aligned for the objects appended below.
    while len(ckpt_graph.nodes) < len(og.nodes):
        ckpt_graph.nodes.add()

    # Template functions, renamed so they cannot clash with the model's own.
    existing = {f.signature.name for f in meta_graph.graph_def.library.function}
    wanted = set().union(*(io.object_functions(n) for n in t_og.nodes))
    closure = _function_closure(t_library, wanted)
    renamed = {}
    for name in closure:
        new = name + _FUNCTION_SUFFIX
        while new in existing:
            new += "_"
        renamed[name] = new
        existing.add(new)
    io.append_renamed_functions(meta_graph.graph_def.library, t_library, renamed)

    root_children = {c.local_name: c.node_id for c in t_og.nodes[0].children}
    for i, table in enumerate(tables):
        for target in objects[table.name]:
            _graft(og, ckpt_graph, t_og, t_ckpt, root_children[f"t{i}"], target, table, renamed)
    return ckpt_graph


def _graft(og, ckpt_graph, t_og, t_ckpt, template_root, target, table, renamed):
    """Copies the template's resource subtree onto object ``target`` (functions shared by name)."""
    sub = _subtree(t_og, template_root)
    # The template root lands on the table's node; its descendants are appended.
    new_id = {template_root: target}
    for j in sub[1:]:
        new_id[j] = len(og.nodes)
        og.nodes.add()
        ckpt_graph.nodes.add()
    for j in sub:
        io.graft_object(og.nodes[new_id[j]], t_og.nodes[j], new_id, renamed)
        # Save/restore function objects exist only in the SavedModel's graph, past the end
        # of the checkpoint's; their checkpoint slots stay empty to keep the ids aligned.
        if j < len(t_ckpt.nodes):
            io.graft_checkpoint_object(ckpt_graph.nodes[new_id[j]], t_ckpt.nodes[j], new_id)
    # The EmbeddingVariable's saveable reads K-keys/-values/-freqs/-versions, which is how
    # the checkpoint conversion names a table saved under K.
    io.set_checkpoint_attribute(ckpt_graph.nodes[target], TEMPLATE_ATTRIBUTE, table.checkpoint_key)
    for j in sub:
        for name in io.object_functions(t_og.nodes[j]):
            io.copy_concrete_function(og, t_og, name, renamed[name], new_id)


def is_embedding_variable_function(name) -> bool:
    """Whether a library function is one of the EmbeddingVariable objects' own (create, save, ...)."""
    return name.endswith(_FUNCTION_SUFFIX) or name.endswith(_FUNCTION_SUFFIX + "_")
