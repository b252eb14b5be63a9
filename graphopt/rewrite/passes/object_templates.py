"""TF2 objects for converted tables, taken from a template module that ``tf.saved_model.save`` wrote.

The object nodes and functions a TF2 resource needs (``_create_resource``, ``_initialize``,
``_destroy_resource``, its save and restore functions) are exactly what ``tf.saved_model.save``
writes for one, so a target saves a template module holding one object per table once, and grafts
each template subtree into the model's object graph (``graphopt.graph.object_graphs.graft_subtree``).
Targets: ``targets/ev/tf2_objects.py`` (the table's variable object becomes an EmbeddingVariable),
``targets/stock/object_graph.py`` (a built-in hash table object is added beside the dense variable).
"""

import os
import tempfile

from graphopt import model_io
from graphopt.errors import ModelError
from graphopt.graph import io, meta_graphs, nodes
from graphopt.graph import object_graphs as og_lib


def saved_template(module, scratch_dir=None, prefix="graphopt-template-") -> tuple:
    """Saves ``module`` in a temporary folder under ``scratch_dir`` (default: the system's).

    Returns its (SavedObjectGraph, function library, checkpoint TrackableObjectGraph).
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix=prefix, dir=scratch_dir) as tmp:
        tf.saved_model.save(module, tmp)
        source = model_io.read_model(tmp)
        ckpt_graph = og_lib.read_object_graph(os.path.join(tmp, io.VARIABLES_DIR, io.VARIABLES_PREFIX))
    mg = source.meta_graph
    return og_lib.saved_object_graph(mg), meta_graphs.function_library(mg), ckpt_graph


def aligned_checkpoint_graph(meta_graph, ckpt_graph):
    """(the SavedObjectGraph, a copy of ``ckpt_graph`` padded to its size): ids aligned, so objects
    appended to both get the same id. ModelError when the checkpoint's graph is the larger."""
    og = og_lib.saved_object_graph(meta_graph)
    if og_lib.size(ckpt_graph) > og_lib.size(og):
        raise ModelError(
            "the SavedModel's object graph does not match its checkpoint's "
            f"({og_lib.size(og)} vs {og_lib.size(ckpt_graph)} objects); "
            "export the model again"
        )
    ckpt_graph = nodes.clone(ckpt_graph)
    # Objects past the checkpoint's end (saveable functions of resources) have no checkpoint
    # entry; empty slots keep both graphs' ids aligned for the objects appended later.
    og_lib.pad(ckpt_graph, og_lib.size(og))
    return og, ckpt_graph


def add_template_functions(meta_graph, template_og, template_library, suffix) -> dict:
    """Appends the functions the template's objects use to the model's library, each renamed with
    ``suffix`` (and more underscores where needed) so it cannot clash; returns {old: new name}."""
    existing = set(meta_graphs.function_names(meta_graph))
    closure = meta_graphs.function_closure(template_library, og_lib.all_object_functions(template_og))
    renamed = {}
    for name in closure:
        new = name + suffix
        while new in existing:
            new += "_"
        renamed[name] = new
        existing.add(new)
    meta_graphs.append_renamed_functions(meta_graphs.function_library(meta_graph), template_library, renamed)
    return renamed
