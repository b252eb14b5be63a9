"""TFRA / DeepRec models in the CLI: ``rewrite`` migrates them, ``inspect`` lists them, and
``import-table`` loads a table dump into a rewritten model."""

import json

import click

from graphopt.cli.options import json_option, overwrite_option
from graphopt.errors import GraphoptError


def format_analysis(analysis) -> str:
    """What inspect and rewrite print about a source model: the system, its tables, every op."""
    from graphopt.analysis.sources import ROLE_TARGETS, SYSTEMS

    lines = [f"source system: {SYSTEMS[analysis.system].TITLE} ({analysis.system})"]
    for t in analysis.tables:
        what = f"slot {t.slot_name} of {t.slot_of}" if t.slot_of else f"[?, {t.dim}] {t.value_dtype}"
        lines.append(f"  table {t.name}: {what}, keys {t.key_dtype}, checkpoint key {t.checkpoint_key}")
        if t.problem:
            lines.append(f"    cannot convert: {t.problem}")
        if t.left_alone:
            lines.append(f"    left alone: {t.reason}")
        for op in t.ops:
            becomes = ROLE_TARGETS.get(op.role or "", "?")
            if t.slot_of:
                becomes = f"removed (rows -> in-row slot {t.slot_name} of {t.slot_of})"
            lines.append(f"    {op.op} at {op.where} -> {becomes}")
        for op in t.unknown:
            lines.append(f"    {op.op} at {op.where}: unknown ({op.reason})")
    for op in analysis.unknown_ops:
        lines.append(f"  unknown op {op.op} at {op.where}: {op.reason}")
    return "\n".join(lines)


def source_analysis(model, tags=None):
    """The SourceAnalysis of a TFRA / DeepRec model, or None for any other model."""
    from graphopt.analysis.sources import analyze
    from graphopt.graph.model import ModelGraph
    from graphopt.model_io import read_model

    source = read_model(model, tags)
    analysis = analyze(ModelGraph(source.meta_graph))
    return analysis if analysis.system else None


def run_migration(model, out, dry_run, debug, overwrite, tags, as_json, refused, collisionless=False):
    """``graphopt rewrite`` of a TFRA / DeepRec model; ``refused``: options that do not apply."""
    if refused:
        raise GraphoptError(
            f"{model} is a TFRA/DeepRec model, migrated table for table: {', '.join(refused)} "
            "apply to static tables only; drop them"
        )
    from graphopt.rewrite.targets.ev.migrate import migrate_model

    def on_analysis(analysis):
        if not as_json:
            click.echo(format_analysis(analysis))

    report = migrate_model(
        model,
        out,
        dry_run=dry_run,
        overwrite=overwrite,
        tags=tags,
        debug=debug,
        on_analysis=on_analysis,
        collisionless=collisionless,
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    for note in report.notes:
        click.echo(f"  note: {note}")
    if not dry_run:
        click.echo(f"bytes converted: {report.bytes_converted}")
    click.echo(report.message)


@click.command("import-table")
@click.argument("model", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--table", required=True, help="The EmbeddingVariable: its handle name or checkpoint key.")
@click.option(
    "-o", "--output", "out", required=True, type=click.Path(), help="Output directory (a new model)."
)
@overwrite_option
@json_option
def import_table(model, files, table, out, overwrite, as_json):
    """Load a table dump (HugeCTR key/emb_vector, HKV/TFRA NAME-keys/NAME-values, or .npz) into
    the EmbeddingVariable TABLE of the rewritten MODEL, written as a new model to OUTPUT."""
    from graphopt.rewrite.import_table import import_table as run

    result = run(model, table, files, out, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"imported {result['rows']} rows of dim {result['dim']} into table {table} of {out}")
