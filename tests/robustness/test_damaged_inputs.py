"""Damaged models, generated from the course's models: every command refuses each one cleanly.

For ``inspect``, ``rewrite`` and ``validate`` (the damaged model as the original): exit code 2,
exactly one line on stderr that names the damaged file and says what to do, no traceback, no
output directory and nothing else beside where it would have gone, and the input unchanged
(its tree hashed before and after). A damaged *rewritten* model given to ``validate`` is a
validation failure instead (exit 1, the report names the file).
"""

import glob
import hashlib
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from graphopt.cli import main
from tests.rewrite import cases

PB = "saved_model.pb"
INDEX = os.path.join("variables", "variables.index")
DATA = os.path.join("variables", "variables.data-00000-of-*")  # the first data file


def _truncate(fraction):
    def damage(path):
        os.truncate(path, int(os.path.getsize(path) * fraction))

    return damage


def _flip(fraction):
    def damage(path):
        with open(path, "r+b") as f:
            f.seek(int(os.path.getsize(path) * fraction))
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x40]))

    return damage


def _remove(path):
    os.remove(path)


def _directory(path):
    os.remove(path)
    os.mkdir(path)


def _text(path):
    with open(path, "w") as f:
        f.write("this is a text file, not a protocol buffer\n")


# (case id, file, damage, whether inspect can see it: it reads the graph and the checkpoint's
# index and file sizes, never the tensor data, so a flipped bit in the data is rewrite's to find).
DAMAGES = [
    ("pb-truncated-0", PB, _truncate(0.0), True),
    ("pb-truncated-10pc", PB, _truncate(0.1), True),
    ("pb-truncated-50pc", PB, _truncate(0.5), True),
    ("pb-truncated-99pc", PB, _truncate(0.99), True),
    ("pb-flipped-early", PB, _flip(0.002), True),
    ("pb-flipped-middle", PB, _flip(0.5), True),
    ("pb-missing", PB, _remove, True),
    ("pb-is-a-directory", PB, _directory, True),
    ("pb-is-text", PB, _text, True),
    ("index-truncated-half", INDEX, _truncate(0.5), True),
    ("index-truncated-last-byte", INDEX, _truncate(0.999), True),
    ("index-flipped", INDEX, _flip(0.3), True),
    ("index-missing", INDEX, _remove, True),
    ("index-is-a-directory", INDEX, _directory, True),
    ("data-truncated-half", DATA, _truncate(0.5), True),
    ("data-truncated-last-byte", DATA, _truncate(0.9999), True),
    ("data-flipped-start", DATA, _flip(0.0), False),
    ("data-flipped-middle", DATA, _flip(0.5), False),
    ("data-flipped-end", DATA, _flip(0.9999), False),
    ("data-missing", DATA, _remove, True),
]
FORMS = ["keras", "tf1"]


def tree_hash(path):
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, path).encode())
            if os.path.isfile(full):
                with open(full, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def rewritten(course_models, tmp_path_factory):
    """A good rewrite of each form: the other side of validate."""
    from graphopt.rewrite import rewrite_model

    done = {}

    def get(form):
        if form not in done:
            out = str(tmp_path_factory.mktemp("good") / form)
            assert rewrite_model(course_models(form)[0], out).wrote
            done[form] = out
        return done[form]

    return get


def damage_file(model, file, damage):
    (target,) = glob.glob(os.path.join(model, file)) if "*" in file else [os.path.join(model, file)]
    damage(target)
    return target


def damaged_copy(course_models, tmp_path, form, file, damage):
    model = str(tmp_path / "input" / form)
    shutil.copytree(course_models(form)[0], model)
    return model, damage_file(model, file, damage)


def invoke(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception,
        result.output,
    )
    return result


def unchecked_flip(model, case):
    """saved_model.pb has no checksum of its own (a TF2 export's fingerprint.pb holds one): a
    flipped bit that still parses and loads is, as far as anyone can tell, the model as given."""
    return case.startswith("pb-flipped") and not os.path.exists(os.path.join(model, "fingerprint.pb"))


def assert_refused(result, names):
    """Exit 2, one line on stderr naming ``names`` and what to do, nothing on stdout but the plan."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("graphopt: error: ") and "Traceback" not in result.output
    assert names in lines[0], lines[0]
    assert "; " in lines[0], lines[0]  # what is wrong; what to do


def _named(model, target, case):
    # A missing saved_model.pb leaves a directory that is no model: the message names the directory.
    return model if case == "pb-missing" else target


@pytest.mark.parametrize("case,file,damage,visible", DAMAGES, ids=[d[0] for d in DAMAGES])
@pytest.mark.parametrize("form", FORMS)
def test_rewrite_refuses_a_damaged_model(course_models, tmp_path, form, case, file, damage, visible):
    model, target = damaged_copy(course_models, tmp_path, form, file, damage)
    before = tree_hash(model)
    out_parent = tmp_path / "outputs"
    out_parent.mkdir()
    result = invoke("rewrite", model, "-o", str(out_parent / "out"))
    if unchecked_flip(model, case) and result.exit_code == 0:  # then a faithful rewrite of it
        from graphopt.validate import validate_models

        assert validate_models(model, str(out_parent / "out"), loader="session", batches=1, oov=False).passed
        assert tree_hash(model) == before
        return
    assert_refused(result, _named(model, target, case))
    assert os.listdir(out_parent) == []  # no output, no staging folder left beside it
    assert tree_hash(model) == before


@pytest.mark.parametrize("case,file,damage,visible", DAMAGES, ids=[d[0] for d in DAMAGES])
@pytest.mark.parametrize("form", FORMS)
def test_inspect_refuses_a_damaged_model(course_models, tmp_path, form, case, file, damage, visible):
    if not visible:
        pytest.skip("inspect reads no tensor data; rewrite and validate check it")
    model, target = damaged_copy(course_models, tmp_path, form, file, damage)
    before = tree_hash(model)
    result = invoke("inspect", model)
    if not (unchecked_flip(model, case) and result.exit_code == 0):
        assert_refused(result, _named(model, target, case))
    assert tree_hash(model) == before


@pytest.mark.parametrize("case,file,damage,visible", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_validate_refuses_a_damaged_original(course_models, rewritten, tmp_path, case, file, damage, visible):
    model, target = damaged_copy(course_models, tmp_path, "tf1", file, damage)
    before, good = tree_hash(model), rewritten("tf1")
    good_before = tree_hash(good)
    result = invoke("validate", model, good, "--loader", "session", "--batches", "1")
    named = _named(model, target, case)
    if case == "pb-missing":
        named = f"{model} holds no saved_model.pb"
    if not (unchecked_flip(model, case) and result.exit_code in (0, 1)):  # 1: it computes something else
        assert_refused(result, named)
    assert tree_hash(model) == before and tree_hash(good) == good_before


@pytest.mark.parametrize("case", ["index-flipped", "data-truncated-half", "data-flipped-middle"])
def test_validate_reports_a_damaged_rewritten_model_as_a_failure(course_models, rewritten, tmp_path, case):
    _, file, damage, _ = next(d for d in DAMAGES if d[0] == case)
    model = str(tmp_path / "rewritten")
    shutil.copytree(rewritten("tf1"), model)
    target = damage_file(model, file, damage)
    result = invoke("validate", course_models("tf1")[0], model, "--loader", "session", "--batches", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        "[FAILED] the rewritten model cannot be read: "
        f"checkpoint {'index' if 'index' in case else 'data file'} "
        f"{target}" in result.stdout
    )


def test_a_meta_graph_without_its_checkpoint(tmp_path):
    case = cases.tf1_checkpoint_meta(str(tmp_path / "ck"))
    lone = tmp_path / "lone"
    lone.mkdir()
    meta = str(lone / "model.ckpt.meta")
    shutil.copy(case.path, meta)
    for command in (["inspect", meta], ["rewrite", meta, "-o", str(tmp_path / "out")]):
        assert_refused(invoke(*command), f"no checkpoint beside {meta}")
    assert not (tmp_path / "out").exists() and os.listdir(lone) == ["model.ckpt.meta"]


@pytest.mark.parametrize("case", ["pb-truncated-50pc", "data-truncated-half", "index-flipped"])
def test_the_installed_command_refuses_it_too(course_models, tmp_path, case):
    # The real process (not click's runner): its stderr holds exactly the one line.
    _, file, damage, _ = next(d for d in DAMAGES if d[0] == case)
    model, target = damaged_copy(course_models, tmp_path, "keras", file, damage)
    proc = subprocess.run(
        [sys.executable, "-m", "graphopt", "rewrite", model, "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and target in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
