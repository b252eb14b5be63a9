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

import uuid

from graphopt.errors import ModelError
from graphopt.graph import meta_graphs, object_graphs
from graphopt.rewrite.passes.object_templates import (
    add_template_functions,
    aligned_checkpoint_graph,
    saved_template,
)

TEMPLATE_ATTRIBUTE = "table"
_FUNCTION_SUFFIX = "_graphopt_ev"


def _template(tables, scratch_dir=None) -> tuple:
    """Saves a module with one EmbeddingVariable per table, in a temporary folder under
    ``scratch_dir`` (default: the system's).

    Returns its (SavedObjectGraph, function library, checkpoint TrackableObjectGraph).

    Each table gets a shared name unique to this rewrite: every object that stands for the table
    then resolves to one table (TF restores a checkpoint key once, into one of them). Loads never
    share rows: different rewrites have different names, and tf.saved_model.load suffixes shared
    names with a per-load counter, so even two loads of one model get tables of their own.
    """
    import tensorflow as tf

    from graphopt.ops import EmbeddingVariable

    run = uuid.uuid4().hex[:12]
    module = tf.Module()
    for i, table in enumerate(tables):
        ev = EmbeddingVariable(
            table.dim,
            name=f"graphopt_table_{i}",
            shared_name=f"graphopt_{run}_{i}",
            row_dtype=table.row_dtype,
        )
        setattr(module, f"t{i}", ev)
    return saved_template(module, scratch_dir, prefix="graphopt-ev-template-")


def table_objects(meta_graph, ckpt_graph, tables) -> dict[str, list[int]]:
    """{table name: ids of the objects that stand for it}.

    A table can have several objects (Keras 3 exports track each weight twice, as
    ``variables/N`` and ``_all_variables/N``): the one saved under the table's checkpoint key, and
    the ones concrete functions capture (through the table's handle node at the top level).
    """
    table_of_handle = {h: t.name for t in tables for h in t.handles}
    found = {t.name: object_graphs.objects_saved_under(ckpt_graph, t.checkpoint_key) for t in tables}
    calls = meta_graphs.top_level_calls(meta_graph)
    for object_id, ref in object_graphs.captured_object_inputs(meta_graph, calls):
        name = ref.split(":")[0]
        if name in table_of_handle:
            found[table_of_handle[name]].add(object_id)
    return {name: sorted(ids) for name, ids in found.items()}


def rewrite_object_graph(meta_graph, ckpt_graph, tables, scratch_dir=None) -> object | None:
    """Turns each table's variable object into an EmbeddingVariable object, in place.

    ``ckpt_graph`` is the checkpoint's TrackableObjectGraph; returns its rewritten copy, or None
    when the model has no object graph (TF1 formats), leaving everything as it was. The template
    is saved in a temporary folder under ``scratch_dir`` (default: the system's).
    """
    if not meta_graphs.has_object_graph(meta_graph) or ckpt_graph is None:
        return None
    og, ckpt_graph = aligned_checkpoint_graph(meta_graph, ckpt_graph)
    objects = table_objects(meta_graph, ckpt_graph, tables)
    missing = [name for name, ids in objects.items() if not ids]
    if missing:
        raise ModelError(
            f"no object in the SavedModel's object graph stands for table {missing[0]}; "
            "export the model again with tf.saved_model.save or model.export"
        )
    t_og, t_library, t_ckpt = _template(tables, scratch_dir)
    renamed = add_template_functions(meta_graph, t_og, t_library, _FUNCTION_SUFFIX)

    root_children = object_graphs.children(t_og, 0)
    for i, table in enumerate(tables):
        for target in objects[table.name]:
            object_graphs.graft_subtree(og, ckpt_graph, t_og, t_ckpt, root_children[f"t{i}"], target, renamed)
            # The EmbeddingVariable's saveable reads K-keys/-values/-freqs/-versions, which is
            # how the checkpoint conversion names a table saved under K.
            object_graphs.set_checkpoint_attribute(
                object_graphs.checkpoint_object(ckpt_graph, target), TEMPLATE_ATTRIBUTE, table.checkpoint_key
            )
    return ckpt_graph


def is_embedding_variable_function(name) -> bool:
    """Whether a library function is one of the EmbeddingVariable objects' own (create, save, ...)."""
    return name.endswith(_FUNCTION_SUFFIX) or name.endswith(_FUNCTION_SUFFIX + "_")
