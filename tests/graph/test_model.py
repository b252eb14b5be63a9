"""The graph model: input references, consumers, call edges, resource tracing, mutators, integrity."""

import pytest

from graphopt import model_io
from graphopt.graph import nodes
from graphopt.graph.model import TOP, ModelGraph, TensorRef, live_nodes
from tests.rewrite import cases


@pytest.mark.parametrize(
    "text,ref",
    [
        ("a", TensorRef("a")),
        ("a:2", TensorRef("a", None, 2)),
        ("^a/b", TensorRef("a/b", control=True)),
        ("f/g:output:0", TensorRef("f/g", "output", 0)),
        ("RestoreV2:tensors:3", TensorRef("RestoreV2", "tensors", 3)),
    ],
)
def test_tensor_ref_round_trip(text, ref):
    assert TensorRef.parse(text) == ref and str(ref) == text


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    case = cases.keras_two_inputs(str(tmp_path_factory.mktemp("k") / "m"))
    return case, ModelGraph(model_io.read_model(case.path).meta_graph)


def test_call_edges_reach_the_function_holding_the_gather(keras_model):
    _, model = keras_model
    sig_calls = [e for e in model.call_edges() if e.body == TOP and "signature_wrapper" in e.function]
    assert sig_calls, "signatures call their wrapper function from the top-level graph"
    inner = model.callers_of(next(e.function for e in model.call_edges() if e.body == sig_calls[0].function))
    assert all(e.body.startswith("__inference_signature_wrapper") for e in inner)


def test_resource_is_traced_through_two_call_levels_to_its_reads(keras_model):
    _, model = keras_model
    handle = next(
        n.name
        for n in model.graph.nodes()
        if n.op == "VarHandleOp" and n.name.startswith("shared/embeddings_")
    )
    uses = [(b.name, b.node(u.node).op) for b, u in model.trace_resource(TOP, handle)]
    call_reads = [op for body, op in uses if body.startswith("__inference___call__")]
    assert "ReadVariableOp" in call_reads  # read inside the function two calls down
    assert any(op == "AssignVariableOp" for body, op in uses if "traced_restore" in body)
    args = model.resource_args(TOP, handle)
    assert {f for f, _ in args if f.startswith("__inference___call__")} and all(
        a in model.body(f).args for f, a in args
    )


def test_trace_back_finds_the_signature_placeholders(keras_model):
    _, model = keras_model
    body = next(b for b in model.functions() if b.name.startswith("__inference___call__"))
    gathers = [n for n in body.nodes() if n.op == "GatherV2" and "shared" in n.name]
    assert len(gathers) == 2  # one table, gathered by two inputs
    found = {p.ref.node for g in gathers for p in model.trace_back(body.name, body.data_inputs(g)[1])}
    assert found == {"serve_user", "serve_items", "serving_default_user", "serving_default_items"}


def test_mutators_chain_and_keep_consumers_consistent(keras_model):
    case, _ = keras_model
    model = ModelGraph(model_io.read_model(case.path).meta_graph)
    body = next(b for b in model.functions() if b.name.startswith("__inference___call__"))
    gather = next(n for n in body.nodes() if n.op == "GatherV2" and "shared" in n.name)
    identity = nodes.new_node(
        "Identity", body.unique_name(gather.name + "/copy"), [f"{gather.name}:output:0"]
    )
    nodes.set_attr(identity, "T", nodes.dtype_enum("float32"), "type")
    old, new = TensorRef(gather.name, "output", 0), TensorRef(identity.name, "output", 0)
    consumers = [u.node for u in body.consumers(gather.name)]
    assert body.add_node(identity).replace_uses(old, new) is body
    body.set_input(identity.name, 0, old)
    assert sorted(u.node for u in body.consumers(identity.name)) == sorted(consumers)
    assert [u.node for u in body.consumers(gather.name)] == [identity.name]
    assert model.check() == []


def test_node_edits_through_the_body_keep_its_indexes(keras_model):
    case, _ = keras_model
    model = ModelGraph(model_io.read_model(case.path).meta_graph)
    body = next(b for b in model.functions() if b.name.startswith("__inference___call__"))
    gather = next(n for n in body.nodes() if n.op == "GatherV2" and "shared" in n.name)
    identity = body.add_op("Identity", gather.name + "/copy", [f"{gather.name}:output:0"])
    assert [u.node for u in body.consumers(gather.name)].count(identity) == 1  # indexed at once
    other = next(n.name for n in body.nodes() if n.op == "Const")
    body.set_attr(identity, "T", nodes.dtype_enum("float32"), "type").add_control_input(identity, other)
    assert body.attr(identity, "T") == nodes.dtype_enum("float32")
    assert body.control_inputs(identity) == ["^" + other]
    assert identity in {u.node for u in body.consumers(other, control=True)}
    body.set_inputs(identity, [f"{other}:output:0"])  # no control input any more
    assert identity not in {u.node for u in body.consumers(gather.name)}
    assert [u.ref.control for u in body.consumers(other) if u.node == identity] == [False]
    body.insert_inputs(identity, 0, [f"{gather.name}:output:0"]).remove_attr(identity, "T")
    assert [str(r) for r in body.data_inputs(body.node(identity))] == [
        f"{gather.name}:output:0",
        f"{other}:output:0",
    ]
    assert body.attr(identity, "T") is None


def test_check_reports_dangling_inputs_and_lost_control_outputs(keras_model):
    case, _ = keras_model
    model = ModelGraph(model_io.read_model(case.path).meta_graph)
    body = next(b for b in model.functions() if b.name.startswith("__inference___call__"))
    name = next(n.name for n in body.nodes() if n.op == "ReadVariableOp" and "GatherV2" in n.name)
    body.node(name).name = "renamed"  # consumers now read a node that is not there
    body._changed()
    problems = model.check()
    assert any(f"input '{name}:" in p and "names no node of the body" in p for p in problems)
    assert any("control output" in p and "missing" in p for p in problems)


def test_remove_nodes_drops_control_edges_and_control_outputs(keras_model):
    case, _ = keras_model
    model = ModelGraph(model_io.read_model(case.path).meta_graph)
    body = next(b for b in model.functions() if b.name.startswith("__inference___call__"))
    reads = [n.name for n in body.nodes() if n.op == "ReadVariableOp" and "dense" in n.name]
    ctrl = [u.node for u in body.consumers(reads[0], control=True) if u.ref.control]
    assert ctrl
    for r in reads:
        for u in body.consumers(r):
            body.remove_nodes(body.dead_cone([u.node]) - set(reads))
    body.remove_nodes(reads)
    assert all("^" + r not in body.node(c).input for c in ctrl for r in reads if body.node(c) is not None)
    assert not set(reads) & set(body.function.control_ret.values())


def test_live_nodes_follow_signatures_saver_and_collections(tmp_path):
    case = cases.tf1_builder(str(tmp_path / "m"))
    model = ModelGraph(model_io.read_model(case.path).meta_graph)
    live = live_nodes(model)
    assert {"out", "ids", "embedding_lookup", "save/restore_all", "emb/Assign"} <= live
    assert "emb/IsInitialized/VarIsInitializedOp" not in live


def test_toposort_puts_inputs_first(tmp_path):
    case = cases.tf1_builder(str(tmp_path / "m"))
    model = ModelGraph(model_io.read_model(case.path).meta_graph)
    body = model.graph
    reversed_nodes = [nodes.clone(n) for n in reversed(list(body.nodes()))]
    del model.meta_graph.graph_def.node[:]
    model.meta_graph.graph_def.node.extend(reversed_nodes)
    body._changed()
    order = {n.name: i for i, n in enumerate(body.toposort().nodes())}
    assert all(order[r.node] < order[n.name] for n in body.nodes() for r in body.inputs(n))
