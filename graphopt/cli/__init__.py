"""The ``graphopt`` command line: one module per command, registered on one group."""

import functools
import signal
import sys
import threading

import click

from graphopt.errors import GraphoptError
from graphopt.version import __version__


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException like KeyboardInterrupt, so ``except Exception`` blocks
    cannot swallow it and every ``finally`` (staged outputs, temp dirs) runs on the way out."""


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise Terminated()


def _interrupt_inside_extension(exc: RuntimeError):
    """The interrupt a RuntimeError stands for, or None.

    When SIGINT or SIGTERM lands while a pybind11 extension (TensorFlow's file system calls) is
    turning a C++ error into a Python one, the signal handler's exception replaces that error and
    pybind11 reports the swap as ``RuntimeError: ... MISMATCH ... REPLACED BY KeyboardInterrupt``.
    The user interrupted the run: it must end as an interrupt, not as a traceback.
    """
    message = str(exc)
    if "error_already_set" not in message:
        return None
    if "REPLACED BY KeyboardInterrupt" in message:
        return KeyboardInterrupt()
    if f"REPLACED BY {Terminated.__name__}" in message:
        return Terminated()
    return None


def _stopped_by_sigterm():
    click.echo("graphopt: stopped by SIGTERM; no partial output is left behind", err=True)
    sys.exit(128 + signal.SIGTERM)


# `graphopt` alone shows the help (click signals it as a usage error): not an error to reword.
_HELP_NOT_ERROR = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _usage_error(exc: click.UsageError):
    """Click's three-line usage error as graphopt's one line, pointing at the command's --help."""
    if isinstance(exc, _HELP_NOT_ERROR):
        raise exc
    command = exc.ctx.command_path if exc.ctx is not None else "graphopt"
    click.echo(f"graphopt: error: {exc.format_message().rstrip('.')}; see '{command} --help'", err=True)
    sys.exit(2)


class GraphoptGroup(click.Group):
    """Catches GraphoptError once, for every command: one line on stderr, exit code 2.

    SIGTERM takes the path SIGINT takes (staged outputs and temp dirs are removed), then exits
    128 + 15 as a shell reports a process ended by SIGTERM.
    """

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            _usage_error(exc)

    def invoke(self, ctx):
        # Deprecation notices of TF1-era APIs are for model authors, not CLI users. The logger is
        # TensorFlow's own (tf.get_logger()); setting it needs no TensorFlow import.
        main_thread = threading.current_thread() is threading.main_thread()  # signals need it
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _usage_error(exc)
        except GraphoptError as exc:
            click.echo(f"graphopt: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:
            if exc.filename is None:
                raise  # not about a path the user gave: a bug to see in full
            # A path the checks before could not foresee (permissions, a file that vanished).
            click.echo(
                f"graphopt: error: {exc.filename}: {exc.strerror.lower()}; "
                "check the path and its permissions",
                err=True,
            )
            sys.exit(2)
        except Terminated:
            _stopped_by_sigterm()
        except RuntimeError as exc:
            interrupt = _interrupt_inside_extension(exc)
            if isinstance(interrupt, Terminated):
                _stopped_by_sigterm()
            if interrupt is None:
                raise  # a bug to see in full
            raise interrupt from None  # click ends a KeyboardInterrupt as SIGINT's "Aborted!", exit 1
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)


@click.group(cls=GraphoptGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="graphopt")
def main():
    """Rewrite trained TensorFlow recommendation models onto dynamic-hash EmbeddingVariables."""


def _register():
    from graphopt.cli.build_model import build_model
    from graphopt.cli.delta import delta
    from graphopt.cli.inspect import inspect
    from graphopt.cli.migrate import import_table
    from graphopt.cli.rewrite import rewrite
    from graphopt.cli.serve import serve
    from graphopt.cli.validate import validate

    for command in (build_model, inspect, rewrite, validate, serve, delta, import_table):
        command.callback = _with_tensorflow(command.callback)
        main.add_command(command)


def _with_tensorflow(callback):
    """Imports TensorFlow (its start-up chatter muted) when a command runs, after its options
    parse: ``--help`` and ``--version`` never load it."""

    @functools.wraps(callback)
    def run(*args, **kwargs):
        from graphopt._tensorflow import import_tensorflow_quietly

        # Deprecation notices of TF1-era APIs are for model authors, not CLI users.
        import_tensorflow_quietly().get_logger().setLevel("ERROR")
        return callback(*args, **kwargs)

    return run


_register()
