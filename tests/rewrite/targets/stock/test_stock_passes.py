"""Each pass of the stock-ops target on tiny hand-built graphs (tests/rewrite/passes/graphs.py)."""

from graphopt.graph import nodes
from graphopt.rewrite.pipeline import run_passes
from graphopt.rewrite.targets import stock
from graphopt.rewrite.targets.stock import builders
from graphopt.rewrite.targets.stock.stock_lookups import StockLookups
from graphopt.rewrite.targets.stock.stock_restore import StockRestore
from graphopt.rewrite.targets.stock.stock_save import StockSave
from tests.rewrite.passes.graphs import context, function_graph, op_counts, tf1_graph


def _strings(body, node, position):
    ref = body.data_inputs(node)[position]
    return [v.decode() for v in nodes.const_value(body.node(ref.node)).reshape(-1)]


def test_stock_lookups_put_the_hash_table_before_the_dense_gather():
    ctx = context(tf1_graph())
    graph = ctx.model.graph
    result = StockLookups(builders.StockTables("test")).run(ctx)
    counts = op_counts(graph)
    assert result.changed and result.matches == 1
    assert (
        counts["GatherV2"] == 1
        and counts[builders.TABLE_FIND_OP] == 1
        and counts[builders.HASH_TABLE_OP] == 1
    )
    assert counts["SelectV2"] == 1 and counts["Maximum"] == 1 and counts["GreaterEqual"] == 1
    assert graph.node("lookup").op == "SelectV2"  # keeps the name "out" reads
    gather = next(n for n in graph.nodes() if n.op == "GatherV2")
    assert str(graph.data_inputs(gather)[1]) == "lookup/stock/safe_row"
    table = next(n for n in graph.nodes() if n.op == builders.HASH_TABLE_OP)
    assert nodes.attr_value(table, "shared_name") == b"graphopt_stock_test/emb"
    assert ctx.model.check() == []


def test_stock_lookups_in_a_function_get_their_own_hash_table_handle():
    ctx = context(function_graph())
    StockLookups(builders.StockTables("test")).run(ctx)
    body = ctx.model.body("lookup_fn")
    counts = op_counts(body)
    assert counts[builders.HASH_TABLE_OP] == 1 and counts["ResourceGather"] == 1 and counts["SelectV2"] == 1
    assert ctx.model.check() == []


def test_stock_save_appends_the_key_row_map():
    ctx = context(tf1_graph())
    graph = ctx.model.graph
    StockSave(builders.StockTables("test")).run(ctx)
    save = graph.node("save/SaveV2")
    assert _strings(graph, save, 1) == ["emb", "emb-stock-keys", "emb-stock-values"]
    assert len(graph.data_inputs(save)) == 3 + 3 and op_counts(graph)[builders.TABLE_EXPORT_OP] == 1
    assert graph.node("save/control_dependency").input[-1] == "^save/SaveV2"


def test_stock_restore_imports_the_map_where_the_restore_is_waited_for():
    ctx = context(tf1_graph())
    graph = ctx.model.graph
    StockRestore(builders.StockTables("test")).run(ctx)
    restore = graph.node("save/RestoreV2")
    assert _strings(graph, restore, 1) == ["emb", "emb-stock-keys", "emb-stock-values"]
    imp = next(n for n in graph.nodes() if n.op == builders.TABLE_IMPORT_OP)
    assert "^" + imp.name in graph.node("save/restore_all").input
    assert graph.node("save/Assign").op == "AssignVariableOp"  # the dense rows restore as before


def test_the_whole_target_keeps_the_variable_and_adds_one_hash_table():
    ctx = context(tf1_graph())
    run_passes(ctx, stock.passes(builders.StockTables("test")), debug=True)
    counts = op_counts(ctx.model.graph)
    assert counts["VarHandleOp"] == 1 and counts[builders.HASH_TABLE_OP] == 1
    assert not any(op.startswith("GraphoptEv") for op in counts)
