"""Options shared by several commands, as decorator objects."""

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace the output directory if it exists."
)
seed_option = click.option("--seed", type=int, default=42, show_default=True, help="Random seed.")
tags_option = click.option(
    "--tags", callback=lambda ctx, param, v: v.split(",") if v else None,
    help="Comma-separated tag set of the meta graph to use (default: serve, or the only one).",
)
tensorboard_option = click.option(
    "--tensorboard", type=click.Path(file_okay=False), default=None,
    help="Write the graph(s) to this log directory for TensorBoard's graph view.",
)
