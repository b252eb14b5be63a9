"""A TF Serving model base path: versioned SavedModels, those its version policy selects served.

MODEL_BASE/<version>/saved_model.pb, versions being whole numbers. The version policy (TF
Serving's model_version_policy) picks which to serve: the latest N (default 1), all, or specific
ones. A watcher thread polls the base path; a version the policy newly selects is loaded beside
the served ones, warmed up, and published with one reference assignment (the map of served
versions is replaced whole, never changed in place); a version the policy drops is unpublished
only after its replacements are serving. Requests hold a reference to the version they started
on, so none is dropped: an old version is released when its last request ends.
"""

import logging
import os
import threading
import time
from dataclasses import dataclass, field

import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from graphopt import model_io
from graphopt.errors import ModelError
from graphopt.ev import contract
from graphopt.serve.deltas import ApplyGate, DeltaFeed, directory_state
from graphopt.serve.errors import BadRequest, NotFound
from graphopt.serve.model_config import VersionPolicy
from graphopt.serve.signature import DEFAULT_SIGNATURE, PredictSignature

log = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State


@dataclass
class ServableVersion:
    """One loaded version: its signatures and the SignatureDefMap reported as metadata."""

    version: int
    path: str
    signatures: dict
    signature_defs: get_model_metadata_pb2.SignatureDefMap
    # the loaded object owns the variables the signature functions read
    loaded: object = field(repr=False)
    # the deltas applied to its variables (None until the repository attaches them)
    deltas: object = field(default=None, repr=False)
    # its signatures' calls and its deltas' applications pass through it (serve/deltas.py)
    gate: ApplyGate = field(default_factory=ApplyGate, repr=False)

    def signature(self, name):
        """The signature called ``name``; BadRequest lists the real ones when it does not exist."""
        try:
            return self.signatures[name or DEFAULT_SIGNATURE]
        except KeyError:
            raise BadRequest(
                f"signature {name!r} not found in version {self.version}; "
                f"its signatures are: {', '.join(sorted(self.signatures))}"
            ) from None


@dataclass
class VersionStatus:
    """What the server knows about one version directory, as GetModelStatus reports it."""

    version: int
    state: int
    error_code: int = 0
    error_message: str = ""

    @property
    def state_name(self):
        """AVAILABLE, LOADING, END, ... as TF Serving prints it."""
        return State.Name(self.state)


def load_version(path, version):
    """Load one version directory and warm its signatures up so its first request is not slow."""
    try:
        loaded = tf.saved_model.load(path, tags=["serve"])
    except tf.errors.NotFoundError as exc:
        if "Op type not registered" in str(exc) and contract.OP_PREFIX in str(exc):
            raise ModelError(
                f"{path} uses graphopt's EmbeddingVariable ops but the op library is not loaded; "
                "run `make install` so that `import graphopt.ops` registers them"
            ) from None
        raise
    # "__saved_model_init_op" (a stock rewrite's hash-table initializer) is no signature to call
    signatures = {
        name: PredictSignature(name, fn)
        for name, fn in loaded.signatures.items()
        if not name.startswith("__")
    }
    if not signatures:
        raise ModelError(f"{path} has no serving signatures; export it with a serving_default signature")
    gate = ApplyGate()
    for signature in signatures.values():
        _warm_up(signature)
        signature.gate = gate
    return ServableVersion(version, path, signatures, read_signature_defs(path), loaded, gate=gate)


def _warm_up(signature):
    # The first call of a restored function optimizes its graph (tens of milliseconds or more);
    # paying that before the swap keeps it out of the first client's latency.
    try:
        signature.run(signature.example_arrays())
    except BadRequest as exc:
        log.debug("warm-up of signature %s skipped: %s", signature.name, exc)


def read_signature_defs(path):
    """The SignatureDefMap of the serving meta graph in ``path``/saved_model.pb."""
    meta_graph = model_io.read_model(path).meta_graph
    result = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in meta_graph.signature_def.items():
        if not name.startswith("__"):  # "__saved_model_init_op" is not a signature clients call
            result.signature_def[name].CopyFrom(signature_def)
    return result


# The watcher thread loads versions and applies deltas at this lower CPU priority (a nice
# increment of the thread alone), so on a busy machine the request threads win the cores.
DEFAULT_WATCHER_NICE = 10


def lower_thread_priority(increment):
    """Raise the calling thread's nice value by ``increment`` (Linux: per thread); no-op elsewhere."""
    if increment <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except (AttributeError, OSError):  # not Linux, or not allowed: keep the priority
        pass


def version_dirs(base_path):
    """{version: path} for the numbered subdirectories of base_path that hold a SavedModel."""
    found = {}
    try:
        entries = os.listdir(base_path)
    except FileNotFoundError:
        return found
    for entry in entries:
        path = os.path.join(base_path, entry)
        if entry.isdigit() and (
            os.path.isfile(os.path.join(path, "saved_model.pb"))
            or os.path.isfile(os.path.join(path, "saved_model.pbtxt"))
        ):
            found[int(entry)] = path
    return found


class ModelRepository:
    """One model: the versions its policy selects under its base path, swapped as they change."""

    def __init__(
        self,
        base_path,
        name,
        poll_seconds=1.0,
        delta_poll_seconds=0.2,
        policy=None,
        labels=None,
        watcher_nice=DEFAULT_WATCHER_NICE,
    ):
        self.base_path = os.path.abspath(base_path)
        self.name = name
        self.poll_seconds = poll_seconds
        self.delta_poll_seconds = min(delta_poll_seconds, poll_seconds)
        self.policy = policy or VersionPolicy()
        self.watcher_nice = watcher_nice
        self._labels = dict(labels or {})
        self._served = {}  # version -> ServableVersion; replaced whole, never changed in place
        self._statuses = {}
        self._failed = {}  # version -> fingerprint of the directory that failed to load
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()  # one poll at a time (the watcher, a config reload)
        self._stop = threading.Event()
        self._watcher = None

    def start(self):
        """Load the versions the policy selects (ModelError if none loads) and start watching."""
        if not os.path.isdir(self.base_path):
            raise ModelError(
                f"model base path {self.base_path} does not exist; "
                "pass a directory holding <version>/saved_model.pb"
            )
        versions = version_dirs(self.base_path)
        if not versions:
            hint = (
                f"it is a SavedModel itself: move it to {self.base_path}/1/ and serve {self.base_path}"
                if os.path.isfile(os.path.join(self.base_path, "saved_model.pb"))
                else "expected <version>/saved_model.pb with a whole-number version"
            )
            raise ModelError(f"no model version under {self.base_path}: {hint}")
        wanted = self.policy.select(versions)
        if not wanted:
            raise ModelError(
                f"none of the versions under {self.base_path} ({', '.join(map(str, sorted(versions)))}) "
                f"is one the version policy serves ({self.policy.describe()})"
            )
        self.poll()
        if not self._served:
            latest = max(wanted)
            raise ModelError(
                f"version {latest} under {self.base_path} failed to load: "
                f"{self._statuses[latest].error_message}"
            )
        self._watcher = threading.Thread(target=self._watch, name="graphopt-version-watcher", daemon=True)
        self._watcher.start()

    def stop(self):
        """Stop watching the base path (served versions stay usable until released)."""
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()

    def served(self):
        """{version: ServableVersion} of the versions answering requests now (do not modify)."""
        return self._served

    @property
    def labels(self):
        """{label: version} (TF Serving's version_labels)."""
        return dict(self._labels)

    def set_policy(self, policy, labels):
        """Serve what ``policy`` selects with ``labels`` (a model config reload): new versions are
        loaded, then the labels move, then versions no longer selected are retired."""
        self.policy = policy
        self.poll(labels)

    def version_for_label(self, label):
        """The version a label names; NotFound naming the labels that exist."""
        labels = self._labels
        if label not in labels:
            known = ", ".join(f"{k} (version {v})" for k, v in sorted(labels.items())) or "none"
            raise NotFound(
                f"version label {label!r} of model {self.name!r} does not exist; its labels are: {known}"
            )
        return labels[label]

    def get(self, version=None, label=None):
        """The version to answer a request with: the newest served, the one asked for (by number
        or label), or NotFound naming what is served."""
        served = self._served
        if not served:
            raise NotFound(f"model {self.name!r} has no version loaded yet")
        if label is not None:
            version = self.version_for_label(label)
        if version is None:
            return served[max(served)]
        try:
            return served[version]
        except KeyError:
            what = "served versions are" if len(served) > 1 else "served version is"
            raise NotFound(
                f"version {version} of model {self.name!r} is not served; "
                f"the {what} {', '.join(map(str, sorted(served)))}"
            ) from None

    def statuses(self, version=None):
        """VersionStatus of every version seen (newest first), or of one version (NotFound if unseen)."""
        with self._lock:
            statuses = sorted(self._statuses.values(), key=lambda s: -s.version)
        if version is None:
            return statuses
        chosen = [s for s in statuses if s.version == version]
        if not chosen:
            raise NotFound(f"version {version} of model {self.name!r} is unknown to this server")
        return chosen

    def status_response(self, version=None):
        """A GetModelStatusResponse for every version seen, or for one version."""
        response = get_model_status_pb2.GetModelStatusResponse()
        served = self._served
        for status in self.statuses(version):
            entry = response.model_version_status.add(version=status.version, state=status.state)
            entry.status.error_code = status.error_code
            entry.status.error_message = status.error_message
            # TF Serving's schema has no field for it: an available version's OK status message
            # names the last delta applied ("" without deltas, as TF Serving sends).
            servable = served.get(status.version)
            if (
                servable is not None
                and servable.deltas is not None
                and status.state == State.AVAILABLE
                and not status.error_message
            ):
                entry.status.error_message = servable.deltas.status_line()
        return response

    def delta_status(self, version=None):
        """{"version": V, "last_applied_delta": {...} | None, "refused_delta": {...} | None} of the
        served version asked for (the newest without one; REST adds it to the status reply as
        "graphopt"), or None."""
        served = self._served
        if not served:
            return None
        servable = served.get(max(served) if version is None else version)
        if servable is None or servable.deltas is None:
            return None
        return {"version": servable.version, **servable.deltas.status()}

    def poll_deltas(self):
        """Apply every served version's new deltas; returns how many were applied."""
        return sum(s.deltas.poll() for s in self._served.values() if s.deltas is not None)

    def poll(self, labels=None):
        """Look at the base path once and serve what the policy selects; True if anything changed.

        Versions to add are loaded first (newest first), then ``labels`` (if given) replace the
        labels, and only then are the versions the policy no longer selects unpublished, so the
        model (and each label) never goes without a version in between.
        """
        with self._poll_lock:
            versions = version_dirs(self.base_path)
            candidates = {
                v: p
                for v, p in versions.items()
                if v not in self._failed or self._failed[v] != directory_state(p)
            }
            wanted = self.policy.select(candidates)
            if not wanted:
                if labels is not None:
                    self._labels = dict(labels)
                return False  # nothing to serve instead: keep what serves
            changed = False
            for version in sorted(wanted - set(self._served), reverse=True):
                changed |= self._load_and_publish(version, versions[version])
            if labels is not None:
                self._labels = dict(labels)
            retired = [v for v in self._served if v not in wanted]
            if retired and any(v in self._served for v in wanted):
                self._served = {v: s for v, s in self._served.items() if v in wanted}
                for version in retired:
                    self._set_status(version, State.END)
                log.info(
                    "now serving version(s) %s of %s (retired %s)",
                    ", ".join(map(str, sorted(self._served))),
                    self.name,
                    ", ".join(map(str, sorted(retired))),
                )
                changed = True
            return changed

    def _watch(self):
        lower_thread_priority(self.watcher_nice)
        next_version_poll = time.monotonic() + self.poll_seconds
        while not self._stop.wait(self.delta_poll_seconds):
            if time.monotonic() >= next_version_poll:
                self.poll()
                next_version_poll = time.monotonic() + self.poll_seconds
            self.poll_deltas()

    def _set_status(self, version, state, error_code=0, error_message=""):
        with self._lock:
            self._statuses[version] = VersionStatus(version, state, error_code, error_message)

    def _load_and_publish(self, version, path):
        fingerprint = directory_state(path)
        self._set_status(version, State.LOADING)
        log.info("loading version %d of %s from %s", version, self.name, path)
        try:
            servable = load_version(path, version)
        # A broken version directory must never take the serving process down: record it in the
        # version's status, keep serving the old one, and retry once the directory changes.
        except Exception as exc:  # noqa: BLE001
            code = exc.error_code if isinstance(exc, tf.errors.OpError) else 2  # error.Code UNKNOWN
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._failed[version] = fingerprint
            self._set_status(version, State.END, code, message)
            log.warning("version %d of %s failed to load: %s", version, self.name, message)
            return False
        # Deltas already on disk are applied before the version answers a request (restarts too).
        servable.deltas = DeltaFeed(self.name, version, path, servable.loaded, servable.gate)
        servable.deltas.poll()
        self._served = {**self._served, version: servable}  # one reference assignment
        self._set_status(version, State.AVAILABLE)
        log.info("now serving version %d of %s", version, self.name)
        return True
