"""RemoveDeadNodes (shared by every target) on tiny hand-built graphs."""

import numpy as np

from graphopt.graph import meta_graphs, nodes
from graphopt.rewrite.passes.remove_dead_nodes import RemoveDeadNodes
from tests.rewrite.passes.graphs import context, function_graph, op_counts, tf1_graph


def test_removes_what_was_disconnected_and_everything_only_it_fed():
    ctx = context(tf1_graph())
    graph = ctx.model.graph
    # A chain nothing reads: Const -> Identity; only the Identity is reported disconnected.
    graph.add_node(nodes.const_node("orphan/value", np.float32(1)))
    float32 = (nodes.dtype_enum("float32"), "type")
    graph.add_node(nodes.make_node("Identity", "orphan", ["orphan/value"], {"T": float32}))
    ctx.disconnected.add(("", "orphan"))
    before = len(graph)
    result = RemoveDeadNodes().run(ctx)
    assert result.changed and len(graph) == before - 2
    assert graph.node("orphan") is None and graph.node("orphan/value") is None
    assert {r.old_name for r in ctx.replacements} == {"orphan", "orphan/value"}


def test_keeps_roots_and_nodes_with_consumers():
    ctx = context(tf1_graph())
    ctx.disconnected |= {("", "out"), ("", "save/filename"), ("", "lookup")}
    before = op_counts(ctx.model.graph)
    result = RemoveDeadNodes().run(ctx)
    assert not result.changed and op_counts(ctx.model.graph) == before


def test_drops_library_functions_nothing_calls():
    mg = function_graph()
    unused = nodes.clone(mg.graph_def.library.function[0])
    unused.signature.name = "unused_fn"
    mg.graph_def.library.function.append(unused)
    ctx = context(mg)
    ctx.disconnected.add(("", "out"))  # a root: stays, but the pass runs
    RemoveDeadNodes().run(ctx)
    assert meta_graphs.function_names(ctx.model.meta_graph) == ["lookup_fn"]
    assert set(ctx.model.bodies) == {"", "lookup_fn"} and ctx.model.check() == []
