"""The ``graphopt`` command line: one module per command, registered on one group."""

import sys

import click

from graphopt import __version__
from graphopt.errors import GraphoptError


class GraphoptGroup(click.Group):
    """Catches GraphoptError once, for every command: one line on stderr, exit code 2."""

    def invoke(self, ctx):
        try:
            if ctx.protected_args or ctx.args:
                # Deprecation notices of TF1-era APIs are for model authors, not CLI users.
                import tensorflow as tf

                tf.get_logger().setLevel("ERROR")
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
        main.add_command(command)


_register()
