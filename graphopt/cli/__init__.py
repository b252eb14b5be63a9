"""The ``graphopt`` command line: one module per command, registered on one group."""

import os
import sys

import click

# TensorFlow's C++ start-up chatter drowns the one-line reports users read.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from graphopt import __version__  # noqa: E402
from graphopt.errors import GraphoptError  # noqa: E402


def _import_tensorflow_quietly():
    """Import TensorFlow and initialize its devices with fd 2 muted.

    TensorFlow's C++ start-up lines (absl pre-init notices, oneDNN, CUDA probing) bypass
    TF_CPP_MIN_LOG_LEVEL; users of a CLI should see only its reports and its errors.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import tensorflow as tf

        tf.config.list_physical_devices()
        tf.get_logger().setLevel("ERROR")
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
    from graphopt.cli.inspect import inspect
    from graphopt.cli.rewrite import rewrite

    main.add_command(build_model)
    main.add_command(inspect)
    main.add_command(rewrite)

    from graphopt.cli.validate import validate

    main.add_command(validate)


_register()
