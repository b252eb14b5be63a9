"""``graphopt delta``: write the delta that brings a served model version up to a training checkpoint."""

import json

import click

from graphopt.errors import ArgumentError


@click.command("delta")
@click.argument("source", type=click.Path())
@click.option(
    "--since",
    type=click.IntRange(min=0),
    required=True,
    help="Take the rows whose last training step is after this step (>= 0): the step the served "
    "version was trained to (python -m graphopt.keras.train prints it; 0 for a fresh rewrite "
    "trained on), or the previous delta's up_to_step (in its manifest.json).",
)
@click.option(
    "-o",
    "--output",
    "version_dir",
    type=click.Path(file_okay=False, exists=True),
    required=True,
    help="The served version directory (MODEL_BASE/<version>); the delta goes to its deltas/<n>/.",
)
@click.option(
    "--table",
    "tables",
    multiple=True,
    metavar="SOURCE=SERVED",
    help="Map a table of SOURCE to the served table of another name (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the delta's manifest as JSON.")
def delta(source, since, version_dir, tables, as_json):
    """Write a delta of SOURCE (a training checkpoint or SavedModel) for a served version: rows
    changed after --since, keys serving holds that SOURCE no longer has, and the served version's
    dense variables whose value in SOURCE differs. Tables are matched by --table, else by identity
    (recorded by graphopt rewrite and graphopt.online.export_model), else by name. `graphopt serve`
    applies it live, all at once."""
    from graphopt.online.delta_format import read_manifest
    from graphopt.online.writer import delta_from_checkpoint

    table_map = {}
    for item in tables:
        source_name, sep, served_name = item.partition("=")
        if not sep or not source_name or not served_name:
            raise ArgumentError(
                f"--table {item!r} must be SOURCE=SERVED (two table names); see 'graphopt delta --help'"
            )
        table_map[source_name] = served_name
    path = delta_from_checkpoint(source, version_dir, since, table_map)
    if path is None:
        click.echo(
            json.dumps({"delta": None})
            if as_json
            else f"nothing changed after step {since}: no delta written"
        )
        return
    manifest = read_manifest(path)
    if as_json:
        click.echo(json.dumps({"delta": path, **manifest}, indent=2))
        return
    click.echo(f"wrote delta {manifest['sequence']} of version {manifest['base_version']}: {path}")
    for table in manifest["tables"]:
        click.echo(
            f"  {table['name']}: {table['upserts']} rows upserted, {table['removals']} keys removed "
            f"(dim {table['dim']})"
        )
    for dense in manifest.get("dense", []):
        click.echo(f"  {dense['name']}: {dense['dtype']} {dense['shape']} set")
