"""``graphopt build-model``: train the course's Embedding+MLP and save it."""

import click


@click.command("build-model")
@click.argument("out_dir", type=click.Path())
def build_model(out_dir):
    """Train the Embedding+MLP and save it to OUT_DIR."""
    raise click.UsageError("build-model is being written")
