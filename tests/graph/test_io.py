"""Reading models: what is accepted, and a one-line ModelError with a fix for what is not."""

import os
import shutil

import pytest

from graphopt import model_io
from graphopt.checkpoint import checkpoint_tensors
from graphopt.errors import ModelError
from tests.rewrite import cases


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return cases.module_lookup_sparse(str(tmp_path_factory.mktemp("sm") / "m")).path


def _copy(src, tmp_path):
    dst = str(tmp_path / "copy")
    shutil.copytree(src, dst)
    return dst


def test_reads_saved_model_and_its_variables(saved_model):
    source = model_io.read_model(saved_model)
    assert source.kind == "saved_model" and source.tags == ["serve"]
    assert os.path.exists(source.checkpoint_prefix + ".index")
    assert "emb/.ATTRIBUTES/VARIABLE_VALUE" in checkpoint_tensors(source.checkpoint_prefix)


@pytest.mark.parametrize(
    "breakage,expected",
    [
        ("missing", "does not exist"),
        ("not_a_model", "holds no saved_model.pb"),
        ("truncated", "truncated or corrupted"),
        ("garbage", "truncated or corrupted"),
        ("no_variables", "variables/variables.index is missing"),
    ],
)
def test_bad_input_is_one_line_model_error(saved_model, tmp_path, breakage, expected):
    path = _copy(saved_model, tmp_path)
    pb = os.path.join(path, "saved_model.pb")
    if breakage == "missing":
        path = str(tmp_path / "nowhere")
    elif breakage == "not_a_model":
        path = str(tmp_path)
        os.makedirs(os.path.join(path, "empty"))
        path = os.path.join(path, "empty")
    elif breakage == "truncated":
        data = open(pb, "rb").read()
        open(pb, "wb").write(data[: len(data) // 3])
    elif breakage == "garbage":
        open(pb, "wb").write(b"\xff" * 100)
    elif breakage == "no_variables":
        shutil.rmtree(os.path.join(path, "variables"))
    with pytest.raises(ModelError) as err:
        model_io.read_model(path)
    assert expected in str(err.value) and "\n" not in str(err.value) and ";" in str(err.value)


def test_unknown_tag_set_lists_the_available_ones(saved_model):
    with pytest.raises(ModelError, match="no meta graph tagged train.*available tag sets: serve"):
        model_io.read_model(saved_model, tags=["train"])


def test_corrupted_variables_index_is_refused_when_the_model_is_read(saved_model, tmp_path):
    path = _copy(saved_model, tmp_path)
    index = os.path.join(path, "variables", "variables.index")
    open(index, "wb").write(b"not an index")
    with pytest.raises(ModelError, match=f"checkpoint index {index} is corrupted"):
        model_io.read_model(path)


def test_meta_graph_needs_its_checkpoint(tmp_path):
    case = cases.tf1_checkpoint_meta(str(tmp_path / "ck"))
    assert model_io.read_model(case.path).kind == "meta_graph"
    lone = str(tmp_path / "lone.meta")
    shutil.copy(case.path, lone)
    with pytest.raises(ModelError, match="no checkpoint beside"):
        model_io.read_model(lone)
