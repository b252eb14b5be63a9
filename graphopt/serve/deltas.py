"""Deltas applied live to a served version's EmbeddingVariables and dense variables (docs/online.md).

A DeltaFeed follows MODEL_BASE/<version>/deltas/ of one loaded version: it applies delta N+1 after
N, each read and checked in full first (manifest, base version, model fingerprint, checksums,
tables, dims, dtypes, the dense variables' names, dtypes and shapes) and then applied whole: its
tables with GraphoptEvApplyDelta and its dense variables with ``assign``, inside the version's
ApplyGate, which the version's requests pass through, so a request sees all of a delta or none of
it (a delta of one table and no dense variable skips the gate: the op alone is atomic). A refused
delta blocks the ones after it (they build on it) and is looked at again only when its directory
changes; a gap waits for the missing delta. Nothing is written to disk: a restarted server loads
the version and applies its deltas again, so it ends where the last complete delta left it.
"""

import contextlib
import datetime
import logging
import os
import threading
import time

from graphopt.online import delta_format
from graphopt.online.tables import live_handles, rewrite_target, table_specs

log = logging.getLogger(__name__)


def directory_state(path):
    """Names, sizes and times of a directory's files: they change while it is being written or
    copied (a delta, a model version)."""
    items = []
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            items.append((os.path.relpath(os.path.join(root, name), path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(items))


class ApplyGate:
    """Requests of a version against the deltas applied to it: any number of requests at a time, or
    one delta alone. A waiting delta lets no new request in, so a busy server still applies it."""

    def __init__(self):
        self._cond = threading.Condition()
        self._running = 0  # requests inside
        self._applying = False
        self._waiting = 0  # deltas waiting for the requests inside to end

    @contextlib.contextmanager
    def request(self):
        with self._cond:
            while self._applying or self._waiting:
                self._cond.wait()
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                if not self._running:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def applying(self):
        with self._cond:
            self._waiting += 1
            while self._applying or self._running:
                self._cond.wait()
            self._waiting -= 1
            self._applying = True
        try:
            yield
        finally:
            with self._cond:
                self._applying = False
                self._cond.notify_all()


def live_variables(loaded) -> dict[str, list]:
    """name -> the tf.Variables of that name (its SavedModel's ``mlp_0/kernel``) in a loaded TF2
    SavedModel: a Keras export saves each variable twice, its functions may read either copy."""
    import tensorflow as tf
    from tensorflow.python.checkpoint import graph_view

    found: dict[str, list] = {}
    try:
        objects, _ = graph_view.ObjectGraphView(loaded).breadth_first_traversal()
    except (TypeError, AttributeError, ValueError):
        return found
    for obj in objects:
        if isinstance(obj, tf.Variable):
            name = obj.name.split(":")[0]
            if all(obj is not v for v in found.get(name, [])):
                found.setdefault(name, []).append(obj)
    return found


class DeltaFeed:
    """The deltas of one loaded version: which applied, which was refused, applying the next."""

    def __init__(self, model_name, version, version_dir, loaded, gate: ApplyGate | None = None):
        self.model_name, self.version, self.version_dir = model_name, version, version_dir
        self.applied = 0  # sequence of the last delta applied
        self.last_delta: dict | None = None
        self.refused: dict | None = None  # the delta holding the others up, and why
        self._refused_state: dict[int, tuple] = {}
        self._said: set = set()  # one log line per (sequence, what) for conditions that persist
        self._lock = threading.Lock()  # one applier at a time (start-up and the watcher)
        self.target = rewrite_target(version_dir)
        try:
            self.specs = table_specs(version_dir)
            self.fingerprint = delta_format.model_fingerprint(version_dir)
        except Exception as exc:  # noqa: BLE001 - a model without a readable checkpoint takes no deltas
            log.debug("version %d of %s takes no deltas: %s", version, model_name, exc)
            self.specs, self.fingerprint = [], ""
        handles = live_handles(loaded, self.specs) if self.specs else {}
        self.handles = {spec.name: handles[spec.name] for spec in self.specs if spec.name in handles}
        self.dims = {
            name: spec.dim for spec in self.specs if spec.name in self.handles for name in spec.names
        }
        self._spec = {name: spec for spec in self.specs for name in spec.names}
        self.gate = gate or ApplyGate()
        self.variables = live_variables(loaded) if self.dims else {}
        # The dense variables a delta may set: one dtype and shape per name, else ambiguous.
        self.dense = {
            name: (found[0].dtype.name, tuple(found[0].shape.as_list()))
            for name, found in self.variables.items()
            if all(v.dtype == found[0].dtype and v.shape.as_list() == found[0].shape.as_list() for v in found)
        }

    def status(self) -> dict:
        """What the status endpoint reports about this version's deltas."""
        return {"last_applied_delta": self.last_delta, "refused_delta": self.refused}

    def status_line(self) -> str:
        """One line for the version's status message: the last delta applied, or ''."""
        if self.last_delta is None:
            return ""
        d = self.last_delta
        return (
            f"delta {d['sequence']} applied at {d['applied_at']} ({d['upserts']} rows upserted, "
            f"{d['removals']} keys removed)"
        )

    def table_stats(self) -> dict:
        """{table name: (rows, bytes used)} of the version's live EmbeddingVariables (the metrics);
        a table is named by its first alias (the variable's own path) when it has one."""
        from graphopt.ops.library import load_library

        ops = load_library()
        stats = {}
        for spec in self.specs:
            if spec.name in self.handles:
                out = ops.graphopt_ev_stats(self.handles[spec.name])
                stats[spec.aliases[0] if spec.aliases else spec.name] = (int(out.size), int(out.bytes_used))
        return stats

    def poll(self) -> int:
        """Apply every delta that is next in order and valid; returns how many were applied."""
        with self._lock:
            count = 0
            while self._apply_next():
                count += 1
            return count

    def _say_once(self, key, level, message, *args):
        if key not in self._said:
            self._said.add(key)
            log.log(level, message, *args)

    def _apply_next(self) -> bool:
        found = delta_format.sequences(self.version_dir)
        if not found or found[-1] <= self.applied:
            return False
        wanted = self.applied + 1
        if not self.dims:
            if self.target == "stock":
                reason = (
                    "the model was rewritten with --target stock: its tables are fixed-size "
                    "TensorFlow hash tables that cannot take deltas; rewrite it with --target ev "
                    "to apply deltas live"
                )
            elif self.specs:
                reason = "its EmbeddingVariables are not reachable through its object graph (a TF1 model)"
            else:
                reason = "it has no EmbeddingVariables"
            self._say_once(
                (found[-1], "none"),
                logging.WARNING,
                "delta %d of version %d of %s ignored: %s",
                found[-1],
                self.version,
                self.model_name,
                reason,
            )
            return False
        if wanted not in found:
            self._say_once(
                (wanted, "gap"),
                logging.WARNING,
                "delta %d of version %d of %s is missing but delta %d is there: waiting for %d "
                "(deltas apply in order, each once)",
                wanted,
                self.version,
                self.model_name,
                min(s for s in found if s > wanted),
                wanted,
            )
            return False
        path = os.path.join(delta_format.deltas_dir(self.version_dir), str(wanted))
        state = directory_state(path)
        if self._refused_state.get(wanted) == state:
            return False
        started = time.monotonic()
        try:
            delta = delta_format.read_delta(path, self.version, self.fingerprint, self.dims, self.dense)
        except delta_format.DeltaError as exc:
            self._refused_state[wanted] = state
            incomplete = isinstance(exc, delta_format.DeltaIncomplete)
            self.refused = {"sequence": wanted, "reason": str(exc)}
            log.log(
                logging.INFO if incomplete else logging.WARNING,
                "delta %d of version %d of %s refused, still serving delta %d: %s",
                wanted,
                self.version,
                self.model_name,
                self.applied,
                exc,
            )
            return False
        from graphopt.ops.online import apply_delta

        log.info(
            "applying delta %d to version %d of %s (%d tables, %d dense variables)",
            wanted,
            self.version,
            self.model_name,
            len(delta.tables),
            len(delta.dense),
        )
        # No request runs while the delta is half applied: it waits for the requests running and
        # holds new ones back for the apply (20-30 ms for the course model's delta of 10 tables
        # and 6 dense variables). One table alone is atomic without that: GraphoptEvApplyDelta
        # swaps an overlay in and out, and a find reads all of it or none.
        alone = len(delta.tables) <= 1 and not delta.dense
        with contextlib.nullcontext() if alone else self.gate.applying():
            for table in delta.tables:
                spec = self._spec[table.name]
                try:
                    apply_delta(
                        self.handles[spec.name], spec.dim, table.keys, table.values, table.removed_keys
                    )
                except Exception as exc:  # noqa: BLE001 - out of memory, a refusing row cap
                    self._refused_state[wanted] = state
                    self.refused = {
                        "sequence": wanted,
                        "reason": f"applying table {table.name} failed: {exc}",
                    }
                    log.error(
                        "delta %d of version %d of %s failed on table %s (tables before it are updated, "
                        "its dense variables are not; a restart applies the deltas again from the "
                        "version): %s",
                        wanted,
                        self.version,
                        self.model_name,
                        table.name,
                        str(exc).strip().splitlines()[0],
                    )
                    return False
            # Checked by read_delta (name, dtype, shape): an assign of the same shape cannot fail.
            for dense in delta.dense:
                for variable in self.variables[dense.name]:
                    variable.assign(dense.value)
        seconds = time.monotonic() - started
        self.applied = wanted
        self.refused = None
        self.last_delta = {
            "sequence": wanted,
            "path": path,
            "created": delta.created,
            "up_to_step": delta.up_to_step,
            "applied_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "upserts": delta.upserts,
            "removals": delta.removals,
            "tables": len(delta.tables),
            "dense_variables": len(delta.dense),
            "seconds": round(seconds, 6),
        }
        log.info(
            "applied delta %d to version %d of %s: %d rows upserted, %d keys removed in %d tables, "
            "%d dense variables set (%.3f s)",
            wanted,
            self.version,
            self.model_name,
            delta.upserts,
            delta.removals,
            len(delta.tables),
            len(delta.dense),
            seconds,
        )
        return True
