"""``graphopt build-model``: train the course's Embedding+MLP and save it."""

import contextlib
import json
import sys

import click

from graphopt.cli.options import json_option, overwrite_option, seed_option


@click.command("build-model")
@click.argument("out_dir", type=click.Path(dir_okay=True, file_okay=False))
@click.option(
    "--form",
    type=click.Choice(["keras", "feature-columns", "tf1"]),
    default="keras",
    show_default=True,
    help="How the model is built and saved.",
)
@click.option(
    "--data",
    type=click.Path(),
    default=None,
    help="Samples CSV in the course's format (default: built-in synthetic data).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True, help="Training epochs.")
@seed_option
@json_option
@overwrite_option
def build_model(out_dir, form, data, epochs, seed, as_json, overwrite):
    """Train the course's Embedding+MLP and save it to OUT_DIR the way its users save it.

    keras: a Keras 3 model exported as a serving SavedModel; feature-columns: the course's
    tf.feature_column + DenseFeatures model as a tf_keras SavedModel; tf1: a graph-mode model as a
    v1 SavedModel plus checkpoint/ (model.ckpt, model.ckpt.meta, model.pbtxt). Prints test accuracy,
    ROC AUC and PR AUC on a time-ordered 80/20 split and writes them to OUT_DIR/training_report.json.
    """
    from graphopt.course.models import build_model as build

    with _epoch_progress(epochs, quiet=as_json) as on_epoch:
        report = build(
            out_dir, form=form, data=data, epochs=epochs, seed=seed, overwrite=overwrite, on_epoch=on_epoch
        )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())


@contextlib.contextmanager
def _epoch_progress(epochs, quiet):
    """Yields the ``on_epoch`` callback: a bar on a terminal, one line per epoch otherwise,
    nothing with ``quiet`` (--json keeps stdout to the report)."""
    if quiet:
        yield None
    elif not sys.stdout.isatty():
        yield lambda epoch, loss: click.echo(f"epoch {epoch}/{epochs}: loss {loss:.4f}")
    else:
        show = lambda loss: f"loss {loss:.4f}" if loss is not None else ""  # noqa: E731
        with click.progressbar(length=epochs, label="training", show_pos=True, item_show_func=show) as bar:
            yield lambda epoch, loss: bar.update(1, loss)
