"""Options shared by several commands, as decorator objects."""

import re

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace the output directory if it exists."
)
SEED = click.IntRange(0, 2**32 - 1)  # what numpy and Keras accept as a seed
seed_option = click.option("--seed", type=SEED, default=42, show_default=True, help="Random seed.")
tags_option = click.option(
    "--tags",
    callback=lambda ctx, param, v: v.split(",") if v else None,
    help="Comma-separated tag set of the meta graph to use (default: serve, or the only one).",
)


def _writable_dir(ctx, param, value):
    from graphopt.output import check_output_dir

    if value is not None:
        check_output_dir(value, overwrite=True)  # refused before the run, not after its work
    return value


tensorboard_option = click.option(
    "--tensorboard",
    type=click.Path(file_okay=False),
    default=None,
    callback=_writable_dir,
    help="Write the graph(s) to this log directory for TensorBoard's graph view.",
)


def regex_option(*decls, **kwargs):
    """An option holding a regular expression, refused here (not mid-run) when it does not compile."""

    def check(ctx, param, value):
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise click.BadParameter(
                    f"{value!r} is not a valid regular expression ({exc}); fix the pattern "
                    "(Python re syntax: escape ( ) [ ] . * + ? with a backslash)"
                ) from None
        return value

    return click.option(*decls, metavar="REGEX", callback=check, **kwargs)
