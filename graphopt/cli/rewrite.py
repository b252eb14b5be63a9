"""``graphopt rewrite``: swap a model's embedding tables for EmbeddingVariables and save the result."""

import json
import os

import click

from graphopt.cli.options import json_option, overwrite_option, regex_option, tags_option, tensorboard_option
from graphopt.errors import GraphoptError

# The targets' --target names and descriptions, spelled here so that --help imports no TensorFlow;
# tests/cli/test_rewrite.py checks them against graphopt.rewrite.targets.TARGETS.
TARGET_NAMES = {"ev": "EmbeddingVariable", "stock": "built-in hash table + dense rows"}


def format_plan(plan, target="ev") -> str:
    lines = [f"plan: {len(plan.tables)} table(s) to rewrite"]
    for t in plan.tables:
        lines.append(
            f"  {t.name} [{t.rows}, {t.dim}] -> {TARGET_NAMES[target]}"
            + (f", {t.row_dtype} rows" if t.row_dtype != "float32" else "")
            + f" ({len(t.sites)} lookup site(s), checkpoint key {t.checkpoint_key})"
        )
    for t, reason in plan.skipped:
        lines.append(f"  skip {t.name}: {reason}")
    for m in plan.migrations:
        lines.append(f"  {m.table.name}: {m.line}" + ("" if m.possible else "; left keyed by bucket"))
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def format_summary(report) -> str:
    lines = ["nodes before -> after:"]
    removed = [b for b in report.nodes_before if b not in report.nodes_after]
    for body in sorted(report.nodes_after, key=lambda b: (b != "graph", b)):
        before, after = report.nodes_before.get(body), report.nodes_after[body]
        if before != after:
            lines.append(f"  {body}: {before if before is not None else '-'} -> {after}")
    unchanged = sum(1 for b in report.nodes_after if report.nodes_before.get(b) == report.nodes_after[b])
    lines.append(
        f"  {unchanged} function(s) unchanged, {len(removed)} removed (nothing reaches them any more)"
    )
    if not report.dry_run:  # a dry run converts nothing; its message says what it would do
        lines.append(
            f"tables converted: {report.tables_converted}, bytes converted: {report.bytes_converted}"
        )
    for path in report.tensorboard:
        lines.append(f"tensorboard graph: {path}")
    lines.append(report.message)
    return "\n".join(lines)


@click.command("rewrite")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", "out", required=True, type=click.Path(), help="Output directory.")
@regex_option("--include", help="Only rewrite tables whose name matches.")
@regex_option("--exclude", help="Do not rewrite tables whose name matches.")
@click.option(
    "--min-rows",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip tables with fewer rows.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and summary; write nothing.")
@click.option("--debug", is_flag=True, help="Check graph integrity after every pass.")
@click.option(
    "--target",
    type=click.Choice(list(TARGET_NAMES)),
    default="ev",
    show_default=True,
    help="ev: EmbeddingVariables (needs graphopt's ops); stock: dense rows behind TensorFlow's "
    "built-in hash tables, servable by a stock tensorflow_model_server.",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Validate the output against MODEL (graphopt validate); exit 1 if it fails.",
)
@click.option(
    "--verify-loader",
    type=click.Choice(["tf2", "session", "both"]),
    default="both",
    show_default=True,
    help="With --verify: the loaders to run the output through (graphopt validate --loader).",
)
@click.option(
    "--collisionless",
    is_flag=True,
    help="Key tables behind a hash bucket or vocabulary lookup by the raw id, falling back to "
    "the original bucket's row (outputs unchanged; training gives each id its own row).",
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE first (a package whose layers a .keras file uses, e.g. keras_rs); repeatable.",
)
@click.option(
    "--row-dtype",
    type=click.Choice(["float32", "int8", "float16", "bfloat16"]),
    default="float32",
    show_default=True,
    help="How serving tables store their rows: int8 row-wise (per-row scale and bias) or 16-bit "
    "floats, read back as float32 (validate checks the error bound); trained tables stay float32.",
)
@overwrite_option
@tags_option
@tensorboard_option
@json_option
def rewrite(
    model,
    out,
    include,
    exclude,
    min_rows,
    dry_run,
    debug,
    target,
    verify,
    verify_loader,
    collisionless,
    row_dtype,
    overwrite,
    tags,
    tensorboard,
    as_json,
    imports=(),
):
    """Rewrite MODEL's embedding tables onto EmbeddingVariables and write the model to OUTPUT.

    A Keras 3 ``.keras`` file is converted to a ``.keras`` file whose Embedding layers are
    graphopt.keras.DynamicEmbedding layers (trainable with model.fit).
    """
    if _is_keras_file(model):
        if target != "ev" or verify or tensorboard or include or exclude or min_rows or collisionless:
            raise GraphoptError(
                "a .keras rewrite converts every Embedding layer; --target stock, --verify, "
                "--collisionless, --tensorboard, --include/--exclude and --min-rows apply to "
                "SavedModels only"
            )
        _import_modules(imports)
        return _rewrite_keras_file(model, out, dry_run, overwrite, as_json)
    if imports:
        raise GraphoptError("--import applies to .keras files (the classes their layers use); drop it")
    from graphopt.cli.migrate import run_migration, source_analysis
    from graphopt.ops.library import load_library

    load_library()  # a missing or stale library is the first thing to report, before any read
    if source_analysis(model, tags) is not None:
        given = {
            "--include": include,
            "--exclude": exclude,
            "--min-rows": min_rows,
            "--verify": verify,
            "--target stock": target != "ev",
            "--tensorboard": tensorboard,
        }
        refused = [k for k, v in given.items() if v]
        return run_migration(model, out, dry_run, debug, overwrite, tags, as_json, refused, collisionless)
    from graphopt.rewrite import rewrite_model

    planned = []
    bar = None

    def on_plan(plan):
        planned.extend(plan.tables)
        if not as_json:
            click.echo(format_plan(plan, target))

    def progress(done, _conversion):
        # The item shown is the planned table's name: the callback's second argument is whatever
        # the converter iterates over (checkpoint conversions), not an TableCandidate.
        nonlocal bar
        if bar is None:
            bar = click.progressbar(
                length=len(planned), label="converting tables", item_show_func=lambda name: name or ""
            )
            bar.__enter__()
        bar.update(1, planned[done - 1].name if 0 < done <= len(planned) else None)

    def verify_output(staged):
        # Checked before it is moved into place: a failing output never appears as OUT.
        from graphopt.validate import validate_models

        validation = validate_models(model, staged, loader=verify_loader, **({"tags": tags} if tags else {}))
        validation.rewritten = out
        return validation

    if verify and not any(
        os.path.isfile(os.path.join(model, f)) for f in ("saved_model.pb", "saved_model.pbtxt")
    ):
        raise GraphoptError(
            f"--verify validates SavedModels and {model} is not one; "
            "run without --verify (or validate a SavedModel export of it)"
        )
    try:
        report = rewrite_model(
            model,
            out,
            include=include,
            exclude=exclude,
            min_rows=min_rows,
            dry_run=dry_run,
            overwrite=overwrite,
            tags=tags,
            tensorboard=tensorboard,
            progress=None if as_json else progress,
            debug=debug,
            on_plan=on_plan,
            target=target,
            verify=verify_output if verify else None,
            collisionless=collisionless,
            row_dtype=row_dtype,
        )
    finally:
        if bar is not None:  # ends the bar's line, also when the run fails or is interrupted
            bar.__exit__(None, None, None)
    validation = report.verification
    if as_json:
        result = report.to_dict()
        if validation is not None:
            result["validation"] = validation.to_dict()
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_summary(report))
        if validation is not None:
            click.echo("")
            click.echo(validation.format())
    if validation is not None and not validation.passed:
        raise click.exceptions.Exit(1)
    if report.why_nothing:  # a rewrite that writes nothing is no success: a pipeline stops here
        raise GraphoptError(report.why_nothing)


def _import_modules(names):
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise GraphoptError(f"--import {name}: {exc}; install it or fix the module name") from None


def _is_keras_file(path) -> bool:
    import zipfile

    return str(path).endswith((".keras", ".h5", ".hdf5")) or (
        os.path.isfile(path) and zipfile.is_zipfile(path)
    )


def _rewrite_keras_file(model, out, dry_run, overwrite, as_json):
    from graphopt.keras.convert import (
        ConversionReport,
        convert,
        convert_file,
        load_keras_file,
        nothing_converted,
    )
    from graphopt.tf_keras.convert import is_tf_keras_file

    if is_tf_keras_file(model):  # a tf_keras .keras or .h5 file
        from graphopt.tf_keras import convert as tf_keras_convert

        if dry_run:
            report = ConversionReport()
            tf_keras_convert.convert(tf_keras_convert.tf_keras.models.load_model(model), report=report)
        else:
            report = tf_keras_convert.convert_file(model, out, overwrite=overwrite)
    elif dry_run:
        report = ConversionReport()
        convert(load_keras_file(model), report=report)
    else:
        report = convert_file(model, out, overwrite=overwrite)
    for warning in report.warnings():
        click.echo(warning, err=True)
    if not report.tables:  # convert_file refuses to write such a file; a dry run says the same
        raise GraphoptError(nothing_converted(model, report))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "tables": [
                        {"name": n, "rows": r, "dim": d, "slots": list(s)} for n, r, d, s in report.tables
                    ],
                    "custom_layers": [{"name": n, "class": c} for n, c in report.custom_layers],
                    "output": None if dry_run else out,
                },
                indent=2,
            )
        )
    else:
        click.echo(report.format())
        click.echo("dry run: nothing written" if dry_run else f"wrote {out}")
