"""The contract module names exactly the ops the C++ library registers, with their signatures."""

import ast
import glob
import os
import re

import pytest

from graphopt.ev import contract

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPS_SOURCES = os.path.join(REPO, "custom_ops", "**", "ops", "*.cc")
# REGISTER_OP("Name") or a registration macro taking the name, up to the statement's end.
_REGISTRATION = re.compile(r'\b(REGISTER_OP|[A-Z_]+_OP)\("(\w+)"\)(.*?);', re.S)
_DEFINE = re.compile(r"#define\s+([A-Z_]+_OP)\(NAME\)((?:[^\n]*\\\n)*[^\n]*)")


def _fields(kind, text):
    return tuple(re.findall(rf'\.{kind}\("(\w+)\s*:', text))


def registered_ops(pattern=OPS_SOURCES):
    """{op name: OpSpec} from the REGISTER_OP calls (and macros wrapping it) in custom_ops/."""
    sources = sorted(glob.glob(pattern, recursive=True))
    assert sources, pattern
    text = "\n".join(re.sub(r"//[^\n]*", "", open(p).read()) for p in sources)
    macros = {m.group(1): m.group(2) for m in _DEFINE.finditer(text)}
    text = _DEFINE.sub("", text)
    out = {}
    for m in _REGISTRATION.finditer(text):
        macro, name, body = m.groups()
        if macro != "REGISTER_OP":
            body = macros[macro] + body
        out[name] = contract.OpSpec(
            name, _fields("Input", body), _fields("Output", body), _fields("Attr", body)
        )
    return out


def test_the_contract_lists_every_registered_op_and_no_other():
    assert sorted(registered_ops()) == sorted(contract.OP_NAMES)
    assert len(set(contract.OP_NAMES)) == len(contract.OP_NAMES)


@pytest.mark.parametrize("op", contract.OPS, ids=lambda op: op.name)
def test_each_op_has_the_registered_inputs_outputs_and_attrs(op):
    assert registered_ops()[op.name] == op


def test_the_parser_reads_registrations_and_registration_macros(tmp_path):
    (tmp_path / "new_ops.cc").write_text(
        '#define MY_OP(NAME) \\\n  REGISTER_OP(NAME) \\\n      .Input("table: resource")\n'
        'REGISTER_OP("GraphoptEvNew")  // a comment .Attr("no: int")\n'
        '    .Input("table: resource")\n    .Output("n: int64")\n    .Attr("dim: int");\n'
        'MY_OP("GraphoptEvOther").Input("keys: int64").Attr("Tkeys: type");\n'
    )
    assert registered_ops(os.path.join(tmp_path, "*.cc")) == {
        "GraphoptEvNew": contract.OpSpec("GraphoptEvNew", ("table",), ("n",), ("dim",)),
        "GraphoptEvOther": contract.OpSpec("GraphoptEvOther", ("table", "keys"), (), ("Tkeys",)),
    }


def test_every_op_name_carries_the_prefix_and_the_apply_ops_cover_the_slot_table():
    assert all(contract.is_ev_op(name) for name in contract.OP_NAMES)
    assert set(contract.APPLY_OPS) == set(contract.SLOT_NAMES)
    assert set(contract.APPLY_OPS.values()) <= set(contract.OP_NAMES)


def test_checkpoint_names():
    assert contract.table_tensor_names("emb") == ["emb-keys", "emb-values", "emb-freqs", "emb-versions"]
    assert contract.slot_tensor_name("emb", "m") == "emb-slot-m"
    assert contract.table_key_of("a/b-keys") == "a/b"
    assert contract.table_key_of("a/b-values") is None


def test_the_contract_imports_nothing_but_the_standard_library():
    tree = ast.parse(open(contract.__file__).read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"dataclasses"}, imported
