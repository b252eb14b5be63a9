"""Only graphopt.graph and graphopt.checkpoint read or write graph protos; the rest uses their API.

What is checked, by walking the AST of every module under graphopt/ outside those two packages:
- no import of ``tensorflow.core`` or of any ``*_pb2`` module;
- no attribute access to a field of the graph protos (NodeDef, FunctionDef, GraphDef,
  MetaGraphDef, SavedObjectGraph, ...) listed in PROTO_FIELDS; ``input`` (a common word) only
  where it is indexed or its methods are called (``node.input[0]``, ``node.input.append``);
- no call of a protobuf message method (PROTO_METHODS), and no ``.add()`` (repeated message fields).
Reading the plain scalar fields ``name``, ``op`` and ``device`` of a NodeDef is allowed.
"""

import ast
import os

import pytest

PACKAGE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "graphopt"
)
PROTO_PACKAGES = ("graph", "checkpoint")
PROTO_FIELDS = {
    "attr",
    "input",
    "node_def",
    "graph_def",
    "library",
    "gradient",
    "collection_def",
    "signature_def",
    "object_graph_def",
    "saver_def",
    "meta_info_def",
    "stripped_op_list",
    "concrete_functions",
    "control_ret",
    "ret",
    "bound_inputs",
    "saveable_objects",
    "input_arg",
    "output_arg",
    "control_output",
    "bytes_list",
    "node_list",
    "tensor_shape",
    "coo_sparse",
}
PROTO_METHODS = {
    "CopyFrom",
    "MergeFrom",
    "ClearField",
    "HasField",
    "WhichOneof",
    "ParseFromString",
    "SerializeToString",
    "FromString",
    "SetInParent",
}
# Fields a word as common as "input" stands for only when used as a container.
CONTAINER_ONLY = {"input"}
# Modules that handle protos of their own: TF Serving's API messages, not graph protos.
ALLOWED_MODULES = {
    "serve/grpc_service.py": "PredictRequest/Response and model-spec messages of the gRPC API",
    "serve/repository.py": "GetModelMetadata/Status replies (the SignatureDefMap is copied in)",
    "serve/signature.py": "the DataType enum of TensorProto conversions",
    "serve/batching.py": "TF Serving's BatchingParameters message (declared there) read from its text file",
    "serve/model_config.py": "TF Serving's ModelServerConfig read from its text file",
}
ALLOWED_ACCESSES: dict = {}  # (module, access) -> why; none today


def _modules():
    for root, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), PACKAGE).replace(os.sep, "/")
                if rel.split("/")[0] not in PROTO_PACKAGES:
                    yield rel


def proto_accesses(source: str):
    """(line, what) of each direct proto access in a module's source."""
    found = []
    tree = ast.parse(source)
    container_use = {id(n.value) for n in ast.walk(tree) if isinstance(n, (ast.Subscript, ast.Attribute))}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            names = []
        for name in names:
            if name.startswith("tensorflow.core") or name.split(".")[-1].endswith("_pb2"):
                found.append((node.lineno, f"imports {name}"))
                break
        if isinstance(node, ast.Attribute):
            if node.attr in PROTO_FIELDS and (node.attr not in CONTAINER_ONLY or id(node) in container_use):
                found.append((node.lineno, f".{node.attr}"))
            elif node.attr in PROTO_METHODS:
                found.append((node.lineno, f".{node.attr}()"))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add"
            and not node.args
            and not node.keywords
        ):
            found.append((node.lineno, ".add()"))
    return sorted(set(found))


def test_no_module_outside_graph_and_checkpoint_touches_proto_fields():
    offenders = []
    for rel in _modules():
        if rel in ALLOWED_MODULES:
            continue
        with open(os.path.join(PACKAGE, rel)) as f:
            offenders += [
                f"graphopt/{rel}:{line}: {what}"
                for line, what in proto_accesses(f.read())
                if (rel, what) not in ALLOWED_ACCESSES
            ]
    assert not offenders, "direct proto access outside graphopt.graph / graphopt.checkpoint:\n" + "\n".join(
        offenders
    )


@pytest.mark.parametrize(
    "source, what",
    [
        ("from tensorflow.core.framework import node_def_pb2", "imports tensorflow.core.framework"),
        ("import saved_model_pb2", "imports saved_model_pb2"),
        ("x = node.attr['T'].type", ".attr"),
        ("del node.input[:]", ".input"),
        ("node.input.append('^x')", ".input"),
        ("meta.ClearField('object_graph_def')", ".ClearField()"),
        ("lib.function.add()", ".add()"),
    ],
)
def test_the_check_sees_each_kind_of_access(source, what):
    assert any(w == what for _, w in proto_accesses(source)), proto_accesses(source)


def test_the_check_allows_the_graph_api():
    source = (
        "body.add_op('Const', 'c', [], {})\nname = node.name\nop = node.op\n"
        "ref = body.op_output(name)\nprint(problem.input)\n"
    )
    assert proto_accesses(source) == []
