"""graphopt.output: an output appears only complete, a failed write says where and why, and two
writers into one output do not both succeed."""

import errno
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from click.testing import CliRunner

from graphopt.cli import main
from graphopt.errors import OutputError
from graphopt.output import staged_output
from tests.rewrite import cases


def _left_in(parent):
    return sorted(os.listdir(parent))


def test_a_full_disk_while_writing_names_the_output_and_the_cause(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputError) as caught:
        with staged_output(out) as staged:
            os.makedirs(staged)
            with open(os.path.join(staged, "data"), "wb") as f:
                f.write(b"x")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what f.write raises: no filename
    text = str(caught.value)
    assert text.startswith(f"cannot write {out}: no space left on device") and "\n" not in text
    assert _left_in(tmp_path) == []  # neither the output nor its stage


def test_an_os_error_on_a_staged_file_names_that_file(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=r"read-only file system \(writing output/variables\)"):
        with staged_output(out) as staged:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(staged, "variables"))
    assert _left_in(tmp_path) == []


def test_an_error_about_another_path_is_left_to_the_caller(tmp_path):
    with pytest.raises(FileNotFoundError):
        with staged_output(tmp_path / "out"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "input"))
    assert _left_in(tmp_path) == []


def test_a_second_writer_into_the_same_output_fails_while_the_first_runs(tmp_path):
    out = tmp_path / "out"
    with staged_output(out) as first:
        os.makedirs(first)
        with pytest.raises(OutputError, match="being written by another graphopt run"):
            with staged_output(out, overwrite=True):
                pass
        # The CLI says so in one line and exits 2 (the first run's check had passed already).
        model = cases.tf1_builder(str(tmp_path / "m")).path
        result = CliRunner().invoke(main, ["rewrite", model, "-o", str(out), "--overwrite"])
        assert result.exit_code == 2 and "being written by another graphopt run" in result.output
    assert os.path.isdir(out)  # the first completes
    with staged_output(out, overwrite=True) as again:  # once it is done, the next may write
        os.makedirs(again)


def test_rewrite_onto_a_full_disk_exits_2_with_one_line(tmp_path, monkeypatch):
    from graphopt.checkpoint import conversion

    model = cases.tf1_builder(str(tmp_path / "m")).path

    def full(*_args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(conversion, "_copy_checked", full)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["rewrite", model, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert f"graphopt: error: cannot write {out}: no space left on device" in result.output
    assert not os.path.exists(out) and _left_in(tmp_path) == ["m"]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """An 8 KiB tmpfs, where this process may mount one (root on Linux); skipped elsewhere."""
    mount = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("command", ["rewrite", "build-model"])
def test_a_real_full_disk_exits_2_with_one_line_and_leaves_nothing(tiny_tmpfs, tmp_path, command):
    out = tiny_tmpfs / "out"
    if command == "rewrite":
        args = ["rewrite", cases.tf1_partitioned_mod(str(tmp_path / "m")).path, "-o", str(out)]
    else:
        args = ["build-model", str(out), "--form", "tf1", "--epochs", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "graphopt", *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"graphopt: error: cannot write {out}: no space left on device; nothing was written: "
        "free space there or choose another output path"
    ]
    assert _left_in(tiny_tmpfs) == []
