"""``graphopt validate``: prove a rewritten SavedModel computes what its original computes."""

import click

from graphopt.cli.options import json_option
from graphopt.errors import GraphoptError


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
            raise GraphoptError(f"--id-range {value!r}: write INPUT=ROWS (ids 0..ROWS-1) or INPUT=LOW:HIGH")
    return ranges


@click.command("validate")
@click.argument("original", type=click.Path())
@click.argument("rewritten", type=click.Path())
@click.option("--signature", "signatures", multiple=True, metavar="NAME",
              help="Signature to run (repeatable); default: all of the original's.")
@click.option("--batches", type=int, default=4, show_default=True,
              help="Random batches to generate (with --data: the most batches to read, 0 for all).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Rows per batch.")
@click.option("--data", type=click.Path(),
              help="Inputs from a CSV (a column per signature input) or an .npz, instead of generated ones.")
@click.option("--atol", type=float, default=0.0, show_default=True, help="Absolute tolerance (0: exact).")
@click.option("--rtol", type=float, default=0.0, show_default=True, help="Relative tolerance (0: exact).")
@click.option("--loader", type=click.Choice(["tf2", "session", "both"]), default="both", show_default=True,
              help="tf2: tf.saved_model.load; session: the TF Serving way (Session, saver restore, init op).")
@click.option("--id-range", "id_ranges", multiple=True, metavar="INPUT=ROWS",
              help="Valid ids of an integer input, when the model's tables do not tell (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated inputs.")
@json_option
def validate(original, rewritten, signatures, batches, batch_size, data, atol, rtol, loader, id_ranges, seed,
             as_json):
    """Check that REWRITTEN computes what ORIGINAL computes.

    Structure (edges, ops, signatures, restore, checkpoint rows), then both models run on the
    same inputs through the chosen loaders, output by output, then what each does with ids
    outside the original tables. Exit code 0: passed; 1: validation failed; 2: bad input.
    """
    ranges = _parse_id_ranges(id_ranges)
    from graphopt.validate import validate_models  # loaded when the command runs, after its options parse

    report = validate_models(
        original, rewritten, signatures=list(signatures) or None, batches=batches, batch_size=batch_size,
        data=data, atol=atol, rtol=rtol, loader=loader, id_ranges=ranges, seed=seed,
    )
    click.echo(report.to_json() if as_json else report.format())
    if not report.passed:
        raise click.exceptions.Exit(1)
