"""The ``graphopt`` command line: one module per command, registered on one group."""

import functools
import sys

import click

from graphopt import __version__
from graphopt.errors import GraphoptError


class GraphoptGroup(click.Group):
    """Catches GraphoptError once, for every command: one line on stderr, exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GraphoptError as exc:
            click.echo(f"graphopt: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=GraphoptGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="graphopt")
def main():
    """Rewrite trained TensorFlow recommendation models onto dynamic-hash EmbeddingVariables."""


def _register():
    from graphopt.cli.build_model import build_model
    from graphopt.cli.inspect import inspect
    from graphopt.cli.rewrite import rewrite
    from graphopt.cli.serve import serve
    from graphopt.cli.validate import validate

    for command in (build_model, inspect, rewrite, validate, serve):
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
