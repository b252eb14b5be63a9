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
import signal
import tempfile
import threading

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


def _owner_running(stage):
    """Whether the run owning ``stage`` holds its lock: True, False (it died), or None when the
    stage has no lock file (its owner is between creating and locking it, or died in between)."""
    try:
        lock = os.open(os.path.join(stage, LOCK_FILE), os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        return True  # cannot tell: leave it alone
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(lock)  # closing releases a lock taken here
    return False


def _stages(parent):
    """(name, stage path, owner pid) of the stage folders in ``parent``."""
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    found = []
    for name in names:
        match = _STAGE.match(name)
        stage = os.path.join(parent, name)
        if match and not os.path.islink(stage) and os.path.isdir(stage):
            found.append((name, stage, int(match.group(1))))
    return found


def remove_stale_stages(parent):
    """Removes the stages in ``parent`` left by runs that died without cleaning up; returns them."""
    removed = []
    for _, stage, pid in _stages(parent):
        running = _owner_running(stage)
        # Without a lock file only the owner's pid tells a starting run from a dead one.
        if running is False or (running is None and not _pid_alive(pid)):
            shutil.rmtree(stage, ignore_errors=True)
            removed.append(stage)
    return removed


def _live_stages(parent, out_dir, own):
    """(stage, pid) of the other runs writing ``out_dir`` now (running, or starting)."""
    prefix = f".{os.path.basename(out_dir)}.partial-"
    return [
        (stage, pid)
        for name, stage, pid in _stages(parent)
        if stage != own and name.startswith(prefix) and _owner_running(stage) is not False
    ]


def _create_stage(out_dir):
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        remove_stale_stages(parent)
        stage = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.partial-{os.getpid()}-", dir=parent)
        lock = os.open(os.path.join(stage, LOCK_FILE), os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as exc:  # what check_output_dir could not foresee (a race, a read-only mount)
        raise OutputError(
            f"cannot create {out_dir}: {exc.strerror.lower()} in {parent}; "
            "choose an output path in a directory you can write to"
        ) from None
    fcntl.flock(lock, fcntl.LOCK_EX)  # a fresh file: nobody else can hold it
    # A second writer into the same output, while the first runs, would silently replace its
    # result (or be replaced): the later one to look refuses. Both look after locking their own
    # stage, so of two that start at once at least one sees the other; neither replaces the other.
    others = _live_stages(parent, out_dir, stage)
    if others:
        shutil.rmtree(stage, ignore_errors=True)
        os.close(lock)
        stage_of, pid = others[0]
        raise OutputError(
            f"{out_dir} is being written by another graphopt run (pid {pid}, staging in {stage_of}); "
            "wait for it to finish, or choose another output path"
        )
    return stage, lock


_OS_ERROR_TEXTS = ("No space left on device", "Disk quota exceeded", "Read-only file system")


def _write_failure(exc):
    """The cause of a failed write, when it is the file system's (an OSError, or TensorFlow's
    error carrying the OS's text); None for anything else."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower(), exc.filename
    text = str(exc)
    if type(exc).__module__.startswith("tensorflow"):
        cause = next((t for t in _OS_ERROR_TEXTS if t in text), None)
        if cause:
            return cause.lower(), None
    return None


@contextlib.contextmanager
def _interrupts_deferred():
    """SIGINT and SIGTERM that arrive inside the block take effect when it ends.

    Creating a stage is several steps (mkdir, lock file, the check for another writer); an
    interrupt between two of them would leave a stage that no ``finally`` knows of. Blocking the
    signal in this thread would not do: any other thread (TensorFlow's) may take it, and Python
    runs the handler in the main thread all the same. So the handlers themselves wait.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread has signal handlers to run
        return
    arrived = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: arrived.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(arrived):
            signal.raise_signal(sig)  # now, under the handler the caller had


@contextlib.contextmanager
def staged_output(out_dir, overwrite=False):
    """Yield a not-yet-existing path beside ``out_dir``; whatever is written there replaces
    ``out_dir`` only when the block completes, so a failure leaves nothing behind.

    Scratch files that must share the output's fate (removed with it on failure or interrupt)
    belong in ``os.path.dirname`` of the yielded path, the stage folder.
    """
    out_dir = os.path.abspath(out_dir)
    check_output_dir(out_dir, overwrite)
    stage = lock = None
    try:
        with _interrupts_deferred():
            stage, lock = _create_stage(out_dir)
        staged = os.path.join(stage, "output")
        try:
            yield staged
            if os.path.lexists(out_dir):
                os.rename(out_dir, os.path.join(stage, "replaced"))
            os.rename(staged, out_dir)
        except Exception as exc:
            failure = _write_failure(exc)
            if failure is None:
                raise
            cause, filename = failure
            inside = filename is not None and os.path.abspath(os.fsdecode(filename)).startswith(
                stage + os.sep
            )
            if filename is not None and not inside:
                raise  # about another path (an input that cannot be read): the CLI names it
            where = f" (writing {os.path.relpath(os.fsdecode(filename), stage)})" if inside else ""
            raise OutputError(
                f"cannot write {out_dir}: {cause}{where}; nothing was written: "
                "free space there or choose another output path"
            ) from None
    finally:
        if stage is not None and os.path.exists(stage):
            shutil.rmtree(stage, ignore_errors=True)
        if lock is not None:
            os.close(lock)
