"""Each pass of the EmbeddingVariable target on tiny hand-built graphs (../graphs.py)."""

import pytest

from graphopt.graph import meta_graphs, nodes
from graphopt.rewrite.pipeline import run_passes
from graphopt.rewrite.targets import default_passes
from graphopt.rewrite.targets.ev.drop_table_variables import DropTableVariables
from graphopt.rewrite.targets.ev.remove_table_reads import RemoveTableReads
from graphopt.rewrite.targets.ev.replace_lookups import ReplaceLookups
from graphopt.rewrite.targets.ev.replace_variable_handles import ReplaceVariableHandles
from graphopt.rewrite.targets.ev.rewire_restore import RewireRestore
from graphopt.rewrite.targets.ev.rewire_save import RewireSave
from graphopt.rewrite.targets.ev.rewrite_initializers import RewriteInitializers
from tests.rewrite.passes.graphs import DIM, context, function_graph, op_counts, tf1_graph

pytestmark = pytest.mark.usefixtures("ev_ops")  # output arg names of the GraphoptEv* ops


def _run(pass_, ctx):
    result = pass_.run(ctx)
    assert result.name == pass_.name
    return result


def _strings(body, node, position):
    ref = body.data_inputs(node)[position]
    return [v.decode() for v in nodes.const_value(body.node(ref.node)).reshape(-1)]


def test_replace_lookups_turns_the_gather_into_a_find():
    ctx = context(tf1_graph())
    graph = ctx.model.graph
    before = op_counts(graph)
    result = _run(ReplaceLookups(), ctx)
    after = op_counts(graph)
    assert (result.changed, result.matches) == (True, 1)
    assert before["GatherV2"] == 1 and "GatherV2" not in after and after["GraphoptEvFind"] == 1
    assert len(graph) == sum(before.values())  # replaced in place, nothing added
    find = graph.node("lookup")  # keeps the gather's name: "out" still reads it
    assert find.op == "GraphoptEvFind" and list(find.input) == ["emb", "ids"]
    assert nodes.attr_value(find, "dim") == DIM
    assert ("graph", "lookup/read") in {("graph" if b == "" else b, n) for b, n in ctx.disconnected}
    assert [r.pass_name for r in ctx.replacements] == ["replace-lookups"]
    assert ReplaceLookups().check(ctx) == []


def test_replace_lookups_in_a_function_renames_the_output_its_consumers_read():
    ctx = context(function_graph())
    body = ctx.model.body("lookup_fn")
    assert op_counts(body) == {"ResourceGather": 1, "Identity": 1}
    _run(ReplaceLookups(), ctx)
    assert op_counts(body) == {"GraphoptEvFind": 1, "Identity": 1}
    assert list(body.node("result").input) == ["gather:values:0"]
    assert ctx.model.check() == []


def test_rewire_save_saves_four_tensors_per_table():
    ctx = context(tf1_graph())
    graph = ctx.model.graph
    result = _run(RewireSave(), ctx)
    assert result.changed and op_counts(graph)["GraphoptEvExport"] == 1
    save = graph.node("save/SaveV2")
    assert _strings(graph, save, 1) == ["emb-keys", "emb-values", "emb-freqs", "emb-versions"]
    assert _strings(graph, save, 2) == [""] * 4
    assert [nodes.dtype_name(t) for t in nodes.attr_value(save, "dtypes")] == [
        "int64",
        "float32",
        "int64",
        "int64",
    ]
    export = next(n.name for n in graph.nodes() if n.op == "GraphoptEvExport")
    assert [str(r) for r in graph.data_inputs(save)[3:]] == [export] + [f"{export}:{i}" for i in (1, 2, 3)]


def test_rewire_restore_imports_what_it_restores():
    ctx = context(tf1_graph())
    graph = ctx.model.graph
    before = op_counts(graph)
    _run(RewireRestore(), ctx)
    after = op_counts(graph)
    assert after["AssignVariableOp"] == before["AssignVariableOp"] - 1 and after["GraphoptEvImport"] == 1
    imp = graph.node("save/Assign")
    assert [str(r) for r in graph.data_inputs(imp)] == [
        "emb",
        "save/RestoreV2",
        "save/RestoreV2:1",
        "save/RestoreV2:2",
        "save/RestoreV2:3",
    ]
    restore = graph.node("save/RestoreV2")
    assert _strings(graph, restore, 1) == ["emb-keys", "emb-values", "emb-freqs", "emb-versions"]
    assert len(nodes.attr_value(restore, "dtypes")) == 4


def test_rewrite_initializers_imports_rows_zero_to_v_minus_one():
    ctx = context(tf1_graph())
    graph = ctx.model.graph
    _run(RewriteInitializers(), ctx)
    counts = op_counts(graph)
    assert graph.node("emb/Assign").op == "GraphoptEvImport"
    assert counts["Range"] == 1 and counts["Fill"] == 1 and counts["AssignVariableOp"] == 1  # the restore's


def test_remove_table_reads_drops_the_dead_read():
    ctx = context(tf1_graph())
    graph = ctx.model.graph
    assert graph.node("emb/Read/ReadVariableOp") is not None
    result = _run(RemoveTableReads(), ctx)
    assert result.matches == 1 and graph.node("emb/Read/ReadVariableOp") is None
    assert op_counts(graph)["ReadVariableOp"] == 2  # the lookup's and the save's stay


def test_replace_variable_handles():
    ctx = context(tf1_graph())
    graph = ctx.model.graph
    _run(ReplaceVariableHandles(), ctx)
    handle = graph.node("emb")
    assert handle.op == "GraphoptEvHandleOp" and "VarHandleOp" not in op_counts(graph)
    assert nodes.attr_value(handle, "dim") == DIM and nodes.attr_value(handle, "shared_name") == b"emb"


def test_drop_table_variables_empties_the_collections():
    ctx = context(tf1_graph())
    assert "emb" in meta_graphs.collection_node_names(ctx.model.meta_graph)
    result = _run(DropTableVariables(), ctx)
    assert result.matches == 1
    assert meta_graphs.variable_defs(ctx.model.meta_graph, "variables") == []
    assert "emb" not in meta_graphs.collection_node_names(ctx.model.meta_graph)


@pytest.mark.parametrize("build", [tf1_graph, function_graph])
def test_the_whole_target_leaves_only_embedding_variable_ops_on_the_table(build):
    ctx = context(build())
    results = run_passes(ctx, default_passes(), debug=True)
    assert [r.name for r in results] == [p.name for p in default_passes()]
    ops = {n.op for b in ctx.model.bodies.values() for n in b.nodes()}
    assert not ops & {"VarHandleOp", "ReadVariableOp", "GatherV2", "ResourceGather"}
    assert {"GraphoptEvHandleOp", "GraphoptEvFind", "GraphoptEvExport", "GraphoptEvImport"} <= ops
