"""Graphs for TensorBoard's graph view, before and after a rewrite."""

import os

from graphopt import model_io
from graphopt.graph import io


def write_tensorboard(model, logdir, tags=None, run_name="before"):
    """Writes the graph of ``model`` (a path, or a MetaGraphDef) to LOGDIR/run_name; returns that path."""
    meta_graph = model if io.is_meta_graph(model) else model_io.read_model(os.fspath(model), tags).meta_graph
    return io.write_graph_events(os.fspath(logdir), meta_graph, run_name)
