"""Options shared by several commands, as decorator objects."""

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace the output directory if it exists."
)
seed_option = click.option("--seed", type=int, default=42, show_default=True, help="Random seed.")
