"""An interrupt that reaches the CLI wrapped by an extension still ends as an interrupt.

SIGINT or SIGTERM landing while pybind11 turns a C++ error into a Python one (TensorFlow's file
system calls raise NotFoundError inside ``tf.train.load_checkpoint``) reaches Python as a
RuntimeError that names the interrupt; tests/robustness/test_interrupt.py hits it by chance.
"""

import click
import pytest
from click.testing import CliRunner

from graphopt.cli import GraphoptGroup

MISMATCH = (
    "pybind11::error_already_set: MISMATCH of original and normalized active exception types: "
    "ORIGINAL NotFoundError REPLACED BY {}: <MESSAGE UNAVAILABLE DUE TO ANOTHER EXCEPTION>"
)


def cli_raising(exc):
    @click.group(cls=GraphoptGroup)
    def group():
        pass

    @group.command()
    def run():
        raise exc

    return group


def invoke(exc):
    return CliRunner().invoke(cli_raising(exc), ["run"])


def test_sigint_replacing_an_extension_error_ends_as_sigint():
    result = invoke(RuntimeError(MISMATCH.format("KeyboardInterrupt")))
    assert result.exit_code == 1  # what a plain KeyboardInterrupt gives: click's "Aborted!"
    assert "Aborted!" in result.output and "Traceback" not in result.output
    assert not isinstance(result.exception, RuntimeError)


def test_sigterm_replacing_an_extension_error_ends_as_sigterm():
    result = invoke(RuntimeError(MISMATCH.format("Terminated")))
    assert result.exit_code == 128 + 15
    assert "stopped by SIGTERM" in result.output


@pytest.mark.parametrize(
    "message", ["something else broke", MISMATCH.format("ValueError"), "REPLACED BY KeyboardInterrupt"]
)
def test_other_runtime_errors_stay_visible_bugs(message):
    result = invoke(RuntimeError(message))
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == message
