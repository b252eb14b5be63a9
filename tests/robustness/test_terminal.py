"""Every command as a user at a terminal runs it (a pseudo-terminal) and as a script runs it
(pipes): the same exit code, progress drawn on the terminal, plain lines on a pipe, never a
traceback."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest

GRAPHOPT = [sys.executable, "-m", "graphopt"]
PROGRESS_BAR = "\r\x1b[?25l"  # click redraws its bar in place: carriage return, cursor hidden


def run_on_terminal(argv, timeout=600, **kwargs):
    """Runs argv with stdin, stdout and stderr on a new pseudo-terminal; returns (code, output)."""
    controller, terminal = pty.openpty()
    env = dict(os.environ, TERM="xterm", COLUMNS="100")
    proc = subprocess.Popen(argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env, **kwargs)
    os.close(terminal)
    output, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 1 << 16)
                except OSError:  # EIO: every holder of the terminal has closed it
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"{argv} did not end within {timeout}s: {output[-2000:]!r}")
    finally:
        os.close(controller)
    return proc.wait(timeout=60), output.decode(errors="replace")


def run_on_pipes(argv, timeout=600, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def models(course_models, tmp_path_factory):
    """The course's keras and tf1 models, and a serving base holding a rewrite of the keras one."""
    from graphopt.rewrite import rewrite_model

    keras_dir, _ = course_models("keras")
    tf1_dir, _ = course_models("tf1")
    base = tmp_path_factory.mktemp("terminal") / "serving"
    rewrite_model(keras_dir, str(base / "1"))
    return {"keras": keras_dir, "tf1": tf1_dir, "base": str(base), "rewritten": str(base / "1")}


COMMAND_NAMES = ("build-model", "inspect", "rewrite", "validate", "serve")
HELP = [["--version"], ["--help"]] + [[c, "--help"] for c in COMMAND_NAMES]


@pytest.mark.parametrize("args", HELP, ids=" ".join)
def test_help_and_version_on_a_terminal_and_pipes(args):
    (t_code, t_out), (p_code, p_out) = run_on_terminal(GRAPHOPT + args), run_on_pipes(GRAPHOPT + args)
    assert t_code == p_code == 0, (t_out, p_out)
    assert "Traceback" not in t_out + p_out
    assert t_out.replace("\r\n", "\n").strip() == p_out.strip()


# (arguments with {keras}/{tf1}/{base}/{rewritten}/{out}, what a terminal shows, what a pipe shows)
COMMANDS = {
    "build-model": (
        ["build-model", "{out}", "--form", "tf1", "--epochs", "2"],
        ["training", "2/2", "ROC AUC"],
        ["epoch 1/2: loss", "epoch 2/2: loss", "ROC AUC"],
    ),
    "inspect": (["inspect", "{keras}"], ["embedding tables: 10"], ["embedding tables: 10"]),
    "rewrite": (
        ["rewrite", "{keras}", "-o", "{out}"],
        ["converting tables", "100%", "tables converted: 10"],
        ["converting tables", "tables converted: 10"],
    ),
    "rewrite --dry-run": (
        ["rewrite", "{tf1}", "-o", "{out}", "--dry-run"],
        ["would rewrite 10 table(s)"],
        ["would rewrite 10 table(s)"],
    ),
    "rewrite --target stock": (
        ["rewrite", "{tf1}", "-o", "{out}", "--target", "stock"],
        ["converting tables", "100%", "tables converted: 10"],
        ["tables converted: 10"],
    ),
    "rewrite --verify": (
        ["rewrite", "{tf1}", "-o", "{out}", "--verify"],
        ["converting tables", "100%", "PASSED"],
        ["converting tables", "PASSED"],
    ),
    # --loader tf2: the session loader of a Keras export can differ from the original's tf2 load
    # by an ulp on some CPUs, which validate reports and fails on (docs/validate.md).
    "validate": (
        ["validate", "{keras}", "{rewritten}", "--batches", "1", "--loader", "tf2"],
        ["PASSED"],
        ["PASSED"],
    ),
    "serve --once": (
        ["serve", "{base}", "--once", "--rest-port", "0", "--grpc-port", "0"],
        ["predictions"],
        ["predictions"],
    ),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_on_a_terminal_and_pipes(models, tmp_path, name):
    args, on_terminal, on_pipes = COMMANDS[name]
    results = {}
    for mode, runner in (("terminal", run_on_terminal), ("pipes", run_on_pipes)):
        values = dict(models, out=str(tmp_path / mode / "out"))
        results[mode] = runner(GRAPHOPT + [a.format(**values) for a in args])
    (t_code, t_out), (p_code, p_out) = results["terminal"], results["pipes"]
    assert t_code == p_code == 0, (t_out[-3000:], p_out[-3000:])
    assert "Traceback" not in t_out and "Traceback" not in p_out
    for text in on_terminal:
        assert text in t_out, (text, t_out[-3000:])
    for text in on_pipes:
        assert text in p_out, (text, p_out[-3000:])
    if "100%" in on_terminal or "training" in on_terminal:
        assert PROGRESS_BAR in t_out, "a progress bar is drawn on a terminal"
    assert "\r" not in p_out and "\x1b[" not in p_out, "a pipe gets plain lines, no terminal control"
    for mode in results:
        folder = tmp_path / mode
        assert not folder.exists() or [p for p in os.listdir(folder) if ".partial-" in p] == []


def test_error_is_the_same_one_line_on_a_terminal(models, tmp_path):
    args = GRAPHOPT + ["rewrite", models["keras"], "-o", str(tmp_path / "o"), "--include", "("]
    (t_code, t_out), (p_code, p_out) = run_on_terminal(args), run_on_pipes(args)
    assert t_code == p_code == 2
    assert t_out.strip() == p_out.strip() and len(p_out.strip().splitlines()) == 1
