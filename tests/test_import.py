"""``import graphopt`` and the CLI's --help / --version stay cheap: TensorFlow loads at run time."""

import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code_or_args, timeout=120):
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    return result, time.perf_counter() - start


def test_parsing_help_imports_no_tensorflow():
    # -X importtime lists every module the command imported, on stderr.
    for args in (["--help"], ["rewrite", "--help"], ["validate", "--help"], ["--version"]):
        result, _ = _python(["-X", "importtime", "-m", "graphopt", *args])
        assert result.returncode == 0, result.stderr[-2000:]
        imported = {
            line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in result.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "graphopt" in imported
        assert not imported & {"tensorflow", "keras", "tf_keras"}, args


def test_help_answers_fast():
    # Well under a second on an idle machine; 3 s leaves room for a loaded one.
    for args in (["--help"], ["rewrite", "--help"], ["--version"]):
        result, seconds = _python(["-m", "graphopt", *args])
        assert result.returncode == 0, result.stderr
        assert seconds < 3, f"graphopt {' '.join(args)} took {seconds:.1f} s"


def test_library_import_registers_the_ops():
    # A library user's `import graphopt` is enough to load a rewritten model (README).
    code = """
import graphopt
from tensorflow.python.framework import op_def_registry
assert op_def_registry.get("GraphoptEvFind") is not None
from graphopt import EmbeddingVariable
from graphopt.ops import EmbeddingVariable as direct
assert EmbeddingVariable is direct and graphopt.EmbeddingVariable is direct
print("OK")
"""
    result, _ = _python(code, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]
