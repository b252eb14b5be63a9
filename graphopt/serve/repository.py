"""A TF Serving model base path: versioned SavedModels, the latest one loaded and served.

MODEL_BASE/<version>/saved_model.pb, versions being whole numbers. A watcher thread polls the
base path; when a newer version appears (or the served one is deleted and an older one remains)
it loads that version beside the served one, warms it up, and swaps it in with one reference
assignment. Requests hold a reference to the version they started on, so none is dropped: the
old version serves until the new one is ready and is released when its last request ends.
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
from graphopt.serve.deltas import DeltaFeed, directory_state
from graphopt.serve.errors import BadRequest, NotFound
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
    # the deltas applied to its EmbeddingVariables (None until the repository attaches them)
    deltas: object = field(default=None, repr=False)

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
    for signature in signatures.values():
        _warm_up(signature)
    return ServableVersion(version, path, signatures, read_signature_defs(path), loaded)


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
    """Serves the latest version under a model base path and swaps in newer ones as they appear."""

    def __init__(self, base_path, name, poll_seconds=1.0, delta_poll_seconds=0.2):
        self.base_path = os.path.abspath(base_path)
        self.name = name
        self.poll_seconds = poll_seconds
        self.delta_poll_seconds = min(delta_poll_seconds, poll_seconds)
        self._current = None
        self._statuses = {}
        self._failed = {}  # version -> fingerprint of the directory that failed to load
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher = None

    def start(self):
        """Load the latest version now (ModelError if there is none or it fails) and start watching."""
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
        latest = max(versions)
        if not self._load_and_swap(latest, versions[latest]):
            raise ModelError(
                f"version {latest} under {self.base_path} failed to load: "
                f"{self._statuses[latest].error_message}"
            )
        self._watcher = threading.Thread(target=self._watch, name="graphopt-version-watcher", daemon=True)
        self._watcher.start()

    def stop(self):
        """Stop watching the base path (served versions stay usable until released)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()

    def get(self, version=None):
        """The version to answer a request with: the served one, or NotFound for any other."""
        current = self._current
        if current is None:
            raise NotFound(f"model {self.name!r} has no version loaded yet")
        if version is not None and version != current.version:
            raise NotFound(
                f"version {version} of model {self.name!r} is not served; "
                f"the served version is {current.version}"
            )
        return current

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

    def check_name(self, name):
        """NotFound unless ``name`` is the served model's name."""
        if name != self.name:
            raise NotFound(f"model {name!r} is not served here; this server serves {self.name!r}")

    def status_response(self, version=None):
        """A GetModelStatusResponse for every version seen, or for one version."""
        response = get_model_status_pb2.GetModelStatusResponse()
        current = self._current
        for status in self.statuses(version):
            entry = response.model_version_status.add(version=status.version, state=status.state)
            entry.status.error_code = status.error_code
            entry.status.error_message = status.error_message
            # TF Serving's schema has no field for it: an available version's OK status message
            # names the last delta applied ("" without deltas, as TF Serving sends).
            if (
                current is not None
                and current.version == status.version
                and current.deltas is not None
                and status.state == State.AVAILABLE
                and not status.error_message
            ):
                entry.status.error_message = current.deltas.status_line()
        return response

    def delta_status(self, version=None):
        """{"version": V, "last_applied_delta": {...} | None, "refused_delta": {...} | None} of the
        served version (REST adds it to the status reply as "graphopt"), or None."""
        current = self._current
        if current is None or current.deltas is None or version not in (None, current.version):
            return None
        return {"version": current.version, **current.deltas.status()}

    def poll_deltas(self):
        """Apply the served version's new deltas; returns how many were applied."""
        current = self._current
        return current.deltas.poll() if current is not None and current.deltas is not None else 0

    def poll(self):
        """Look at the base path once and swap in the version it should serve; True if it swapped."""
        versions = version_dirs(self.base_path)
        candidates = [
            v for v in versions if v not in self._failed or self._failed[v] != directory_state(versions[v])
        ]
        if not candidates:
            return False
        wanted = max(candidates)
        current = self._current
        if current is not None and wanted == current.version:
            return False
        return self._load_and_swap(wanted, versions[wanted])

    def _watch(self):
        next_version_poll = time.monotonic() + self.poll_seconds
        while not self._stop.wait(self.delta_poll_seconds):
            if time.monotonic() >= next_version_poll:
                self.poll()
                next_version_poll = time.monotonic() + self.poll_seconds
            self.poll_deltas()

    def _set_status(self, version, state, error_code=0, error_message=""):
        with self._lock:
            self._statuses[version] = VersionStatus(version, state, error_code, error_message)

    def _load_and_swap(self, version, path):
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
        servable.deltas = DeltaFeed(self.name, version, path, servable.loaded)
        servable.deltas.poll()
        old, self._current = self._current, servable
        self._set_status(version, State.AVAILABLE)
        if old is not None:
            self._set_status(old.version, State.END)
            log.info("now serving version %d of %s (version %d retired)", version, self.name, old.version)
        else:
            log.info("now serving version %d of %s", version, self.name)
        return True
