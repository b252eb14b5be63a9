"""TF2 objects for converted tables, taken from a template module that ``tf.saved_model.save`` wrote.

The object nodes and functions a TF2 resource needs (``_create_resource``, ``_initialize``,
``_destroy_resource``, its save and restore functions) are exactly what ``tf.saved_model.save``
writes for one, so a target saves a template module holding one object per table once, and grafts
each template subtree into the model's object graph (``graphopt.graph.object_graph.graft_subtree``).
Targets: ``ev/object_graph.py`` (the table's variable object becomes an EmbeddingVariable),
``stock/object_graph.py`` (a built-in hash table object is added beside the dense variable).
"""

import os
import tempfile

from graphopt.errors import ModelError
from graphopt.graph import io, nodes
from graphopt.graph import meta_graph as mg_lib
from graphopt.graph import object_graph as og_lib


def saved_template(module, scratch_dir=None, prefix="graphopt-template-") -> tuple:
    """Saves ``module`` in a temporary folder under ``scratch_dir`` (default: the system's).

    Returns its (SavedObjectGraph, function library, checkpoint TrackableObjectGraph).
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix=prefix, dir=scratch_dir) as tmp:
        tf.saved_model.save(module, tmp)
        source = io.read_model(tmp)
        ckpt_graph = og_lib.read_object_graph(os.path.join(tmp, io.VARIABLES_DIR, io.VARIABLES_PREFIX))
    mg = source.meta_graph
    return og_lib.saved_object_graph(mg), mg_lib.function_library(mg), ckpt_graph


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
    existing = set(mg_lib.function_names(meta_graph))
    closure = mg_lib.function_closure(template_library, og_lib.all_object_functions(template_og))
    renamed = {}
    for name in closure:
        new = name + suffix
        while new in existing:
            new += "_"
        renamed[name] = new
        existing.add(new)
    mg_lib.append_renamed_functions(mg_lib.function_library(meta_graph), template_library, renamed)
    return renamed
