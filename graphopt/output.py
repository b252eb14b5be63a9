"""Output directories that appear only when complete: staged beside the target, then renamed."""

import contextlib
import os
import shutil
import tempfile

from graphopt.errors import OutputExistsError


def check_output_dir(out_dir, overwrite):
    """Refuse an existing ``out_dir`` unless ``overwrite``; say how to proceed."""
    if os.path.lexists(out_dir) and not overwrite:
        raise OutputExistsError(f"{out_dir} already exists; pass --overwrite to replace it or choose another path")


@contextlib.contextmanager
def staged_output(out_dir, overwrite=False):
    """Yield a not-yet-existing path beside ``out_dir``; whatever is written there replaces
    ``out_dir`` only when the block completes, so a failure leaves nothing behind."""
    out_dir = os.path.abspath(out_dir)
    check_output_dir(out_dir, overwrite)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.partial-", dir=parent)
    staged = os.path.join(stage, "output")
    try:
        yield staged
        if os.path.lexists(out_dir):
            os.rename(out_dir, os.path.join(stage, "replaced"))
        os.rename(staged, out_dir)
    finally:
        if os.path.exists(stage):
            shutil.rmtree(stage, ignore_errors=True)
