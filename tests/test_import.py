"""``import graphopt`` and the CLI's --help / --version stay cheap: TensorFlow loads at run time."""

import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code_or_args, timeout=120):
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                            cwd=REPO)
    return result, time.perf_counter() - start


def test_parsing_help_imports_no_tensorflow():
    code = """
import sys
from graphopt.cli import main
for args in (["--help"], ["rewrite", "--help"], ["validate", "--help"], ["--version"]):
    try:
        main(args, standalone_mode=False)
    except SystemExit:
        pass
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print("HEAVY", heavy)
"""
    result, _ = _python(code)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout[-2000:]


def test_help_answers_fast():
    # Well under a second on an idle machine; 3 s leaves room for a loaded one.
    for args in (["--help"], ["rewrite", "--help"], ["--version"]):
        result, seconds = _python(["-m", "graphopt", *args])
        assert result.returncode == 0, result.stderr
        assert seconds < 3, f"graphopt {' '.join(args)} took {seconds:.1f} s"


def test_embedding_variable_loads_on_first_use():
    code = """
import sys
import graphopt
assert "tensorflow" not in sys.modules
from graphopt import EmbeddingVariable
from graphopt.ops import EmbeddingVariable as direct
assert EmbeddingVariable is direct and graphopt.EmbeddingVariable is direct
print("OK")
"""
    result, _ = _python(code, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]
