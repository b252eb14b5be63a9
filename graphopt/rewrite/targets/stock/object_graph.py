"""Keeps a TF2 SavedModel's object graph (stock target): each table gets a hash table object beside it.

Pattern (object graph of a TF2 SavedModel, and the same ids in the checkpoint's object graph):

    node 0 (root) children {...}
      ==>
    node 0 (root) children {..., graphopt_stock_table_I -> M}
    node M: resource {}     attributes: table -> K-stock   (tensors K-stock-keys, K-stock-values)
            children _create_resource, _initialize, _destroy_resource (functions)
            saveable_objects {table: (save_fn, restore_fn)}

The dense variable object stays (its rows stay dense); only the key -> row map is new.

Why: ``tf.saved_model.load`` runs a TF2 model through its object graph. Without one it takes the
TF1 path (``load_v1_in_v2``), where Grappler optimizes the same functions differently and outputs
move by an ulp; with the object graph kept, the rewritten model runs the original's path, so the
two are bit-identical through ``tf.saved_model.load`` too.

How: a template module holding one ``tf.lookup.experimental.MutableHashTable`` per table, with the
shared name the stock passes gave that table's hash-table nodes, is saved once, and each template
subtree is grafted onto a new child of the root. At load the object's create function makes the
table, its restore function fills it from K-stock-keys/-values (the tensors the Saver's entries
read on the TF1 path), and every function's ``MutableHashTableV2`` node with that shared name
reaches the same table (tf.saved_model.load suffixes the shared names of one load alike).
"""

from graphopt.errors import ModelError
from graphopt.graph import meta_graphs as mg_lib
from graphopt.graph import nodes
from graphopt.graph import object_graphs as og_lib
from graphopt.graph.model import ModelGraph
from graphopt.rewrite.passes.object_templates import (
    add_template_functions,
    aligned_checkpoint_graph,
    saved_template,
)
from graphopt.rewrite.targets.stock import builders as sn

TEMPLATE_ATTRIBUTE = "table"
CHILD_PREFIX = "graphopt_stock_table_"
_FUNCTION_SUFFIX = "_graphopt_stock"


def _shared_names(meta_graph, tables) -> dict[str, str]:
    """{table name: the shared name of its hash-table nodes}, as the stock passes wrote them."""
    found: dict[str, str] = {}
    for body in ModelGraph(meta_graph).bodies.values():
        for node in body.nodes():
            if node.op != sn.HASH_TABLE_OP:
                continue
            shared = nodes.attr_value(node, "shared_name").decode()
            prefix, _, table = shared.partition("/")
            if prefix.startswith(sn.SHARED_NAME_PREFIX):
                found.setdefault(table, shared)
    missing = [t.name for t in tables if t.name not in found]
    if missing:
        raise ModelError(f"table {missing[0]}: the stock rewrite left no hash table for it")
    return found


def _template(shared_names, scratch_dir=None) -> tuple:
    """Saves a module with one MutableHashTable per shared name (``t0``, ``t1``, ...)."""
    import tensorflow as tf

    module = tf.Module()
    for i, shared in enumerate(shared_names):
        table = tf.lookup.experimental.MutableHashTable(tf.int64, tf.int64, default_value=-1)
        # The saved _create_resource function is traced at save time, with this name.
        table._shared_name = shared
        setattr(module, f"t{i}", table)
    return saved_template(module, scratch_dir, prefix="graphopt-stock-template-")


def rewrite_object_graph(meta_graph, ckpt_graph, tables, scratch_dir=None) -> object | None:
    """Adds a hash table object per table to the object graph, in place.

    ``ckpt_graph`` is the checkpoint's TrackableObjectGraph; returns its rewritten copy, or None
    when the model has no object graph (TF1 formats), leaving everything as it was.
    """
    if not mg_lib.has_object_graph(meta_graph) or ckpt_graph is None:
        return None
    og, ckpt_graph = aligned_checkpoint_graph(meta_graph, ckpt_graph)
    shared = _shared_names(meta_graph, tables)
    t_og, t_library, t_ckpt = _template([shared[t.name] for t in tables], scratch_dir)
    renamed = add_template_functions(meta_graph, t_og, t_library, _FUNCTION_SUFFIX)
    root_children = og_lib.children(t_og, 0)
    for i, table in enumerate(tables):
        target = og_lib.append_child(og, ckpt_graph, 0, f"{CHILD_PREFIX}{i}")
        og_lib.graft_subtree(og, ckpt_graph, t_og, t_ckpt, root_children[f"t{i}"], target, renamed)
        # A MutableHashTable's saveable reads <key>-keys and <key>-values: K-stock-keys/-values.
        og_lib.set_checkpoint_attribute(
            og_lib.checkpoint_object(ckpt_graph, target), TEMPLATE_ATTRIBUTE, sn.checkpoint_key(table)
        )
    return ckpt_graph
