"""A broken op library reaches a CLI user as one line with exit code 2, a library user as OpLibraryError."""

import json
import os
import shutil
import subprocess
import sys

import graphopt.ops.library as library


def _library_built_for(tmp_path, version):
    lib = library.library_path()
    shutil.copy(lib, tmp_path / os.path.basename(lib))
    info = json.load(open(os.path.join(os.path.dirname(lib), "_build_info.json")))
    info["tensorflow_version"] = version
    json.dump(info, open(tmp_path / "_build_info.json", "w"))
    return str(tmp_path / os.path.basename(lib))


def _run(args, lib):
    env = dict(os.environ, **{library.LIBRARY_ENV: lib})
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_with_a_library_for_another_tensorflow(tmp_path):
    # The library loads when a command that needs it runs; the CLI's one handler gives the message.
    result = _run(
        ["-m", "graphopt", "rewrite", str(tmp_path), "-o", str(tmp_path / "out")],
        _library_built_for(tmp_path, "2.20.0"),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "built for TensorFlow 2.20.0" in lines[0] and "make install" in lines[0]
    assert not (tmp_path / "out").exists()


def test_help_and_version_work_with_a_broken_library(tmp_path):
    lib = _library_built_for(tmp_path, "2.20.0")
    for args in (["--version"], ["--help"], ["rewrite", "--help"]):
        result = _run(["-m", "graphopt", *args], lib)
        assert result.returncode == 0 and result.stderr == "", (args, result.stderr)


def test_import_raises_op_library_error(tmp_path):
    result = _run(
        ["-c", "import graphopt; from graphopt import EmbeddingVariable"],
        _library_built_for(tmp_path, "2.20.0"),
    )
    assert result.returncode == 1
    assert (
        "graphopt.errors.OpLibraryError" in result.stderr and "built for TensorFlow 2.20.0" in result.stderr
    )
