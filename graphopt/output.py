"""Output directories that appear only when complete: staged beside the target, then renamed.

A stage is a hidden folder ``.NAME.partial-PID-XXXX`` beside the target. Its owner holds an
exclusive ``flock`` on the stage's lock file for as long as it runs, so the kernel releases the
lock however the owner ends; a stage whose lock can be taken belongs to a run that was killed
(SIGKILL, power loss) and the next staged_output in that folder removes it. A running run's
stage is never touched: its lock is held.
"""

import contextlib
import fcntl
import os
import re
import shutil
import tempfile

from graphopt.errors import OutputError, OutputExistsError

LOCK_FILE = ".graphopt-stage.lock"
_STAGE = re.compile(r"^\..+\.partial-(\d+)-[^.]+$")


def check_output_dir(out_dir, overwrite):
    """Refuse an existing ``out_dir`` unless ``overwrite``, and one that cannot be created (its
    nearest existing ancestor is a file, or not writable); say how to proceed."""
    if not os.fspath(out_dir).strip():  # abspath("") is the working directory: never replace it
        raise OutputError("the output path is empty; give the directory to write")
    if os.path.lexists(out_dir) and not overwrite:
        raise OutputExistsError(
            f"{out_dir} already exists; pass --overwrite to replace it or choose another path"
        )
    ancestor = os.path.dirname(os.path.abspath(out_dir))
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise OutputError(
            f"cannot create {out_dir}: {ancestor} is a file, not a directory; "
            "choose an output path inside a directory"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot create {out_dir}: {ancestor} is not writable; "
            "choose an output path in a directory you can write to"
        )


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_stages(parent):
    """Removes the stages in ``parent`` left by runs that died without cleaning up; returns them."""
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        match = _STAGE.match(name)
        stage = os.path.join(parent, name)
        if not match or os.path.islink(stage) or not os.path.isdir(stage):
            continue
        try:
            lock = os.open(os.path.join(stage, LOCK_FILE), os.O_RDONLY)
        except FileNotFoundError:
            # Not locked yet (its owner is between creating the folder and locking it) or never
            # locked (the owner died in between): only the owner's pid tells which.
            if not _pid_alive(int(match.group(1))):
                shutil.rmtree(stage, ignore_errors=True)
                removed.append(stage)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its owner is running
        else:
            shutil.rmtree(stage, ignore_errors=True)
            removed.append(stage)
        finally:
            os.close(lock)
    return removed


def _create_stage(out_dir):
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        remove_stale_stages(parent)
        stage = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.partial-{os.getpid()}-", dir=parent)
    except OSError as exc:  # what check_output_dir could not foresee (a race, a read-only mount)
        raise OutputError(
            f"cannot create {out_dir}: {exc.strerror.lower()} in {parent}; "
            "choose an output path in a directory you can write to"
        ) from None
    lock = os.open(os.path.join(stage, LOCK_FILE), os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)  # a fresh file: nobody else can hold it
    return stage, lock


@contextlib.contextmanager
def staged_output(out_dir, overwrite=False):
    """Yield a not-yet-existing path beside ``out_dir``; whatever is written there replaces
    ``out_dir`` only when the block completes, so a failure leaves nothing behind.

    Scratch files that must share the output's fate (removed with it on failure or interrupt)
    belong in ``os.path.dirname`` of the yielded path, the stage folder.
    """
    out_dir = os.path.abspath(out_dir)
    check_output_dir(out_dir, overwrite)
    stage, lock = _create_stage(out_dir)
    staged = os.path.join(stage, "output")
    try:
        yield staged
        if os.path.lexists(out_dir):
            os.rename(out_dir, os.path.join(stage, "replaced"))
        os.rename(staged, out_dir)
    finally:
        if os.path.exists(stage):
            shutil.rmtree(stage, ignore_errors=True)
        os.close(lock)
