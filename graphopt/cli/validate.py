"""``graphopt validate``: prove a rewritten SavedModel computes what its original computes."""

import math

import click

from graphopt.cli.options import SEED, json_option
from graphopt.errors import ArgumentError


def _parse_id_ranges(values):
    ranges = {}
    for value in values:
        name, sep, spec = value.partition("=")
        low, colon, high = spec.partition(":")
        try:
            ranges[name] = (int(low), int(high)) if colon else int(low)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ArgumentError(f"--id-range {value!r}: write INPUT=ROWS (ids 0..ROWS-1) or INPUT=LOW:HIGH")
        bounds = ranges[name] if colon else (0, ranges[name])
        if bounds[0] >= bounds[1]:
            raise ArgumentError(f"--id-range {value!r} holds no id; give ROWS >= 1, or LOW < HIGH")
    return ranges


def _tolerance(ctx, param, value):
    if value is None:  # not given: exact, or a compressed rewrite's default
        return value
    if not math.isfinite(value) or value < 0:
        raise click.BadParameter(f"{value} is not a tolerance; give a finite number >= 0 (0: exact)")
    return value


@click.command("validate")
@click.argument("original", type=click.Path())
@click.argument("rewritten", type=click.Path())
@click.option(
    "--signature",
    "signatures",
    multiple=True,
    metavar="NAME",
    help="Signature to run (repeatable); default: all of the original's.",
)
@click.option(
    "--batches",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Random batches to generate (with --data: the most batches to read, 0 for all).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Rows per batch."
)
@click.option(
    "--data",
    type=click.Path(),
    help="Inputs from a CSV (a column per signature input) or an .npz, instead of generated ones.",
)
@click.option(
    "--atol",
    type=float,
    default=None,
    callback=_tolerance,
    help="Absolute tolerance (default 0: exact; for a compressed rewrite, rewrite --row-dtype, "
    "the row dtype's default: atol int8 1e-2, float16 1e-3, bfloat16 1e-2).",
)
@click.option(
    "--rtol",
    type=float,
    default=None,
    callback=_tolerance,
    help="Relative tolerance (default 0: exact; for a compressed rewrite, rewrite --row-dtype, "
    "the row dtype's default: atol int8 1e-2, float16 1e-3, bfloat16 1e-2).",
)
@click.option(
    "--loader",
    type=click.Choice(["tf2", "session", "both"]),
    default="both",
    show_default=True,
    help="tf2: tf.saved_model.load; session: the TF Serving way (Session, saver restore, init op).",
)
@click.option(
    "--id-range",
    "id_ranges",
    multiple=True,
    metavar="INPUT=ROWS",
    help="Valid ids of an integer input, when the model's tables do not tell (repeatable).",
)
@click.option(
    "--memory-budget",
    type=click.FloatRange(min=0, min_open=True),
    default=4.0,
    show_default=True,
    metavar="GIB",
    help="Refuse --batch-size x --batches that would need more memory (estimated from the signatures).",
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the generated inputs.")
@click.option(
    "--train",
    is_flag=True,
    help="TF1 training graphs: ORIGINAL is the .meta, REWRITTEN the rewrite's output; run the "
    "train op of both on the same batch, compare losses, rows and slots (docs/training.md).",
)
@click.option(
    "--steps",
    "steps",
    multiple=True,
    type=click.IntRange(min=1),
    metavar="N",
    help="With --train: training steps per run (repeatable); default: 1 and 10.",
)
@click.option("--loss", default="loss", show_default=True, help="With --train: the loss tensor's name.")
@click.option(
    "--reference-outputs",
    "reference",
    type=click.Path(),
    help="TFRA/DeepRec migrations: the original's inputs and outputs recorded in its own environment "
    "(.npz, docs/migration.md); ORIGINAL is read for its tables only.",
)
@click.option(
    "--batching",
    is_flag=True,
    help="Also measure the rewritten model's batch-size dependence: each example of the first batch "
    "run alone vs inside it (what serving with --enable-batching may change), as a note.",
)
@json_option
def validate(
    original,
    rewritten,
    signatures,
    batches,
    batch_size,
    data,
    atol,
    rtol,
    loader,
    id_ranges,
    memory_budget,
    seed,
    train,
    steps,
    loss,
    reference,
    batching,
    as_json,
):
    """Check that REWRITTEN computes what ORIGINAL computes.

    Structure (edges, ops, signatures, restore, checkpoint rows), then both models run on the
    same inputs through the chosen loaders, output by output, then what each does with ids
    outside the original tables. Exit code 0: passed; 1: validation failed; 2: bad input.
    """
    import os

    from graphopt.cli.migrate import source_analysis

    if reference is not None or (
        not train and os.path.exists(original) and source_analysis(original) is not None
    ):
        # A TFRA/DeepRec original cannot run here: its outputs come from the file, its tables
        # from its checkpoint.
        from graphopt.validate.reference import validate_reference

        result = validate_reference(
            rewritten, reference, original=original, loader=loader, atol=atol, rtol=rtol
        )
        click.echo(result.to_json() if as_json else result.format())
        if not result.passed:
            raise click.exceptions.Exit(1)
        return
    if train:
        _validate_training(
            original, rewritten, batch_size, data, atol or 0.0, seed, steps or (1, 10), loss, as_json
        )
        return
    ranges = _parse_id_ranges(id_ranges)
    if batches == 0 and data is None:
        raise ArgumentError(
            "--batches 0 generates no random batch; give at least 1 (0 means every batch only with --data)"
        )
    from graphopt.course.data import samples_reader
    from graphopt.validate import validate_models  # loaded when the command runs, after its options parse

    report = validate_models(
        original,
        rewritten,
        signatures=list(signatures) or None,
        batches=batches,
        batch_size=batch_size,
        data=data,
        data_readers=(samples_reader,),
        atol=atol,
        rtol=rtol,
        loader=loader,
        id_ranges=ranges,
        seed=seed,
        batching=batching,
        memory_budget_gib=memory_budget,
    )
    click.echo(report.to_json() if as_json else report.format())
    if not report.passed:
        raise click.exceptions.Exit(1)


def _validate_training(original, rewritten, batch_size, data, atol, seed, steps, loss, as_json):
    """``--train``: the training check (graphopt.validate.training_steps); exit 1 when it fails."""
    import json

    import numpy as np

    from graphopt.validate import training_steps

    if data is not None:
        if not data.endswith(".npz"):
            raise ArgumentError(f"--data {data}: with --train give an .npz, one array per placeholder")
        try:
            with np.load(data, allow_pickle=True) as f:
                batch = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise ArgumentError(f"--data {data} cannot be read ({e}); give an .npz file") from None
    else:
        batch = training_steps.generated_batch(original, batch_size, seed)
    results = [
        training_steps.compare_training(original, rewritten, [batch], steps=n, loss=loss) for n in steps
    ]
    ok = all(training_steps.passed(r, atol) for r in results)
    if as_json:
        click.echo(json.dumps({"passed": ok, "runs": [r.to_dict() for r in results]}, indent=1))
    else:
        click.echo("\n".join(training_steps.format_result(r) for r in results))
        click.echo("training check " + ("passed" if ok else "failed"))
    if not ok:
        raise click.exceptions.Exit(1)
