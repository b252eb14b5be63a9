"""The ``graphopt`` command line: one module per command, registered on one group."""

import os
import sys

import click

# TensorFlow's C++ start-up chatter drowns the one-line reports users read.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from graphopt import __version__  # noqa: E402
from graphopt.errors import GraphoptError  # noqa: E402
from graphopt.startup import import_tensorflow_quietly as _import_tensorflow_quietly  # noqa: E402


class GraphoptGroup(click.Group):
    """Catches GraphoptError once, for every command: one line on stderr, exit code 2."""

    def invoke(self, ctx):
        try:
            if ctx.protected_args or ctx.args:
                _import_tensorflow_quietly()
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

    main.add_command(build_model)


_register()
