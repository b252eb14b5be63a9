"""Bad command-line values and paths: each exits 2 with exactly one stderr line naming the
problem and what to do, no traceback, nothing written, the input unchanged."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.rewrite import cases
from tests.robustness.test_interrupt import tree_digest

GRAPHOPT = [sys.executable, "-m", "graphopt"]


def _without_root_override():
    """Root ignores file permissions; drop the two capabilities that let it, where possible."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return cases.tf1_builder(str(tmp_path_factory.mktemp("arguments") / "m")).path


@pytest.fixture
def place(tmp_path, model):
    """A scratch folder holding a copy of the model, a plain file, a read-only folder and an
    unreadable copy of the model; the permissions are restored afterwards for cleanup."""
    shutil.copytree(model, tmp_path / "m")
    (tmp_path / "file").write_text("not a directory\n")
    (tmp_path / "readonly").mkdir()
    (tmp_path / "data.csv").write_text("movieId,userId\n1,2\n")
    shutil.copytree(model, tmp_path / "locked")
    shutil.copy(tmp_path / "data.csv", tmp_path / "locked.csv")
    shutil.copytree(model, tmp_path / "locked_pb")
    for path, mode in (
        ("readonly", 0o555),
        ("locked", 0o000),
        ("locked.csv", 0o000),
        ("locked_pb/saved_model.pb", 0o000),
    ):
        os.chmod(tmp_path / path, mode)
    yield tmp_path
    for path in ("readonly", "locked", "locked.csv", "locked_pb/saved_model.pb"):
        os.chmod(tmp_path / path, 0o755)


CASES = [
    # (command line with {m}: the model, expected words in the one line)
    ("rewrite {m} -o out --include (", ["--include", "'('", "not a valid regular expression"]),
    ("rewrite {m} -o out --exclude [a-", ["--exclude", "not a valid regular expression"]),
    ("rewrite {m} -o out --min-rows -5", ["--min-rows", "-5", "x>=0"]),
    ("rewrite {m} -o out --min-rows many", ["--min-rows", "not a valid integer"]),
    ("rewrite {m} -o out --target gpu", ["--target", "gpu"]),
    ("rewrite {m}", ["--output"]),
    ("rewrite {m} -o readonly/out", ["readonly", "not writable"]),
    ("rewrite {m} -o file/out", ["file", "not a directory"]),
    ("rewrite {m} -o file/deeper/out", ["file", "not a directory"]),
    ("rewrite missing -o out", ["missing", "does not exist"]),
    ("rewrite file -o out", ["file", "is not a model"]),
    ("rewrite locked -o out", ["locked", "not readable"]),
    ("rewrite locked_pb -o out", ["saved_model.pb", "permission denied"]),
    ("rewrite {m} -o out --tensorboard readonly/tb", ["readonly", "not writable"]),
    ("rewrite {m} -o out --tensorboard file", ["--tensorboard", "file"]),
    ("inspect locked", ["locked", "not readable"]),
    ("inspect {m} --tensorboard readonly/tb", ["readonly", "not writable"]),
    ("build-model out --epochs 0", ["--epochs", "x>=1"]),
    ("build-model out --epochs -3", ["--epochs", "x>=1"]),
    ("build-model out --seed -1", ["--seed", "-1"]),
    ("build-model out --form torch", ["--form", "torch"]),
    ("build-model readonly/out --epochs 1", ["readonly", "not writable"]),
    ("build-model file/out --epochs 1", ["file", "not a directory"]),
    ("build-model out --data missing.csv", ["missing.csv"]),
    ("build-model out --data readonly", ["readonly", "directory"]),
    ("build-model out --data locked.csv", ["locked.csv", "not readable"]),
    ("validate {m} {m} --batches 0", ["--batches 0", "at least 1"]),
    ("validate {m} {m} --batches -2", ["--batches", "x>=0"]),
    ("validate {m} {m} --batch-size 0", ["--batch-size", "x>=1"]),
    ("validate {m} {m} --atol nan", ["--atol", "nan", "finite"]),
    ("validate {m} {m} --rtol -1", ["--rtol", "finite number >= 0"]),
    ("validate {m} {m} --id-range ids=0", ["--id-range", "ids=0", "no id"]),
    ("validate {m} {m} --id-range ids=9:3", ["--id-range", "LOW < HIGH"]),
    ("validate {m} {m} --id-range ids", ["--id-range", "INPUT=ROWS"]),
    ("validate {m} {m} --seed -4", ["--seed", "-4"]),
    ("validate {m} {m} --loader tf3", ["--loader", "tf3"]),
    ("validate {m} missing", ["missing"]),
    ("validate locked {m}", ["locked", "not readable"]),
    ("nosuch", ["No such command", "nosuch"]),
    ("--bogus", ["No such option", "--bogus"]),
]


@pytest.mark.parametrize("command,expected", CASES, ids=[c for c, _ in CASES])
def test_bad_argument_is_one_line_exit_2(place, command, expected):
    model = str(place / "m")
    digest = tree_digest(model)
    before = sorted(os.listdir(place))
    argv = [a.replace("{m}", model) for a in command.split()]
    prefix = _without_root_override() if any(w in command for w in ("readonly", "locked")) else []
    result = subprocess.run(prefix + GRAPHOPT + argv, cwd=place, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: "), result.stderr
    assert "Traceback" not in result.stderr and "Error: " not in lines[0]
    for word in expected:  # the OS's own wording ("Permission denied") may start a clause
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert sorted(os.listdir(place)) == before, "nothing may be written, no stage left behind"
    assert os.listdir(place / "readonly") == []
    assert tree_digest(model) == digest


def test_refusals_come_before_any_work(place):
    """An output that cannot be written is refused before the plan is printed, not after."""
    for out in ("file/out", "readonly/out"):
        prefix = _without_root_override() if "readonly" in out else []
        result = subprocess.run(
            prefix + GRAPHOPT + ["rewrite", str(place / "m"), "-o", out],
            cwd=place,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 2 and result.stdout == "", result.stdout


def test_no_command_shows_the_help_not_an_error():
    result = subprocess.run(GRAPHOPT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and result.stderr.startswith("Usage: ") and "Commands:" in result.stderr
    assert "graphopt: error" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [["build-model", "", "--overwrite", "--epochs", "1"], ["rewrite", "{m}", "-o", "", "--overwrite"]],
)
def test_empty_output_path_never_replaces_the_working_directory(place, command):
    argv = [a.replace("{m}", str(place / "m")) for a in command]
    before = sorted(os.listdir(place))
    result = subprocess.run(GRAPHOPT + argv, cwd=place, capture_output=True, text=True, timeout=600)
    (line,) = result.stderr.strip().splitlines()
    assert result.returncode == 2 and line.startswith("graphopt: error: ")
    assert "output path is empty" in line or "overlaps the input" in line  # rewrite: the model is in it
    assert sorted(os.listdir(place)) == before
