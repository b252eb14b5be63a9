"""The models one server answers for: one from MODEL_BASE, or those of a model config file.

With ``--model-config-file`` a thread re-reads the file every poll interval (TF Serving's
``--model_config_file_poll_wait_seconds``) and applies it when its contents change: models added
are loaded (and answer once loaded), models removed stop answering, a model whose base path
changed is loaded anew beside the old one and swapped in, a changed version policy or labels
are applied in place. The map of models is replaced whole, so a request sees the old config or
the new one. A reload that does not parse or validate, or whose labels name versions that are
not served, is logged and the old config keeps serving.
"""

import logging
import os
import threading

from graphopt.errors import GraphoptError
from graphopt.serve.config_files import ConfigFileError
from graphopt.serve.errors import NotFound
from graphopt.serve.model_config import FLAG, ModelSpec, read_model_config
from graphopt.serve.repository import DEFAULT_WATCHER_NICE, ModelRepository, lower_thread_priority

log = logging.getLogger(__name__)


class ModelSet:
    """{model name: ModelRepository}, read without a lock, replaced whole on a config change."""

    def __init__(
        self,
        specs,
        poll_seconds=1.0,
        delta_poll_seconds=0.2,
        config_file=None,
        config_poll_seconds=0,
        watcher_nice=DEFAULT_WATCHER_NICE,
    ):
        self.poll_seconds, self.delta_poll_seconds = poll_seconds, delta_poll_seconds
        self.watcher_nice = watcher_nice
        self.config_file = config_file
        self.config_poll_seconds = config_poll_seconds
        self._specs = {spec.name: spec for spec in specs}
        self._repositories = {spec.name: self._repository(spec) for spec in specs}
        self._config_text = _read_text(config_file) if config_file else None
        self._stop = threading.Event()
        self._watcher = None
        self.reloads = 0  # config reloads applied (tests and metrics read it)

    @classmethod
    def from_config_file(
        cls,
        path,
        poll_seconds=1.0,
        delta_poll_seconds=0.2,
        config_poll_seconds=0,
        watcher_nice=DEFAULT_WATCHER_NICE,
    ):
        specs = read_model_config(path)
        return cls(specs, poll_seconds, delta_poll_seconds, path, config_poll_seconds, watcher_nice)

    def _repository(self, spec):
        return ModelRepository(
            spec.base_path,
            spec.name,
            self.poll_seconds,
            self.delta_poll_seconds,
            spec.policy,
            spec.label_map,
            self.watcher_nice,
        )

    # ---- what requests read ----

    def repositories(self):
        """The repositories serving now (in config order)."""
        return list(self._repositories.values())

    def repository(self, name):
        """The repository of model ``name``; NotFound naming the served models."""
        repositories = self._repositories
        try:
            return repositories[name]
        except KeyError:
            served = ", ".join(repr(n) for n in repositories)
            raise NotFound(f"model {name!r} is not served here; this server serves {served}") from None

    @property
    def first(self):
        return next(iter(self._repositories.values()))

    # ---- start, stop, reload ----

    def start(self):
        """Load every model (ModelError / ConfigFileError on the first that fails) and start watching."""
        started = []
        try:
            for repository in self._repositories.values():
                repository.start()
                started.append(repository)
                _check_labels(repository, self._where(repository.name))
        except BaseException:
            for repository in started:
                repository.stop()
            raise
        if self.config_file and self.config_poll_seconds > 0:
            self._watcher = threading.Thread(target=self._watch, name="graphopt-config-watcher", daemon=True)
            self._watcher.start()

    def stop(self):
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        for repository in self._repositories.values():
            repository.stop()

    def _where(self, name):
        return f"{FLAG} {self.config_file}: model {name!r}" if self.config_file else f"model {name!r}"

    def _watch(self):
        lower_thread_priority(self.watcher_nice)
        while not self._stop.wait(self.config_poll_seconds):
            self.reload_if_changed()

    def reload_if_changed(self):
        """Re-read the config file; apply it if its text changed. True if a new config now serves."""
        text = _read_text(self.config_file)
        if text is None or text == self._config_text:
            return False
        self._config_text = text
        try:
            specs = read_model_config(self.config_file)
            self.apply(specs)
        except GraphoptError as exc:
            log.error("model config reload refused, the previous config keeps serving: %s", exc)
            return False
        self.reloads += 1
        log.info("model config reloaded from %s: serving %s", self.config_file, ", ".join(self._repositories))
        return True

    def apply(self, specs):
        """Serve ``specs`` instead of the current models; on any failure nothing changes."""
        specs = {spec.name: spec for spec in specs}
        new, fresh = {}, []
        try:
            for name, spec in specs.items():
                old = self._repositories.get(name)
                if old is not None and self._specs[name].base_path == spec.base_path:
                    new[name] = old
                    continue
                repository = self._repository(spec)
                repository.start()
                fresh.append(repository)
                _check_labels(repository, self._where(name))
                new[name] = repository
            # policy and label changes of kept models: checked against what would be served
            for name, spec in specs.items():
                repository = new[name]
                if repository in fresh or self._specs[name] == spec:
                    continue
                _check_policy_labels(repository, spec, self._where(name))
        except BaseException:
            for repository in fresh:
                repository.stop()
            raise
        for name, spec in specs.items():
            repository = new[name]
            if repository not in fresh and self._specs[name] != spec:
                repository.set_policy(spec.policy, spec.label_map)
        removed = [r for name, r in self._repositories.items() if new.get(name) is not r]
        self._repositories, self._specs = new, specs  # one reference assignment each
        for repository in removed:
            repository.stop()


def single_model(base_path, name, poll_seconds, delta_poll_seconds, watcher_nice=DEFAULT_WATCHER_NICE):
    """The ModelSet of one MODEL_BASE served under ``name`` with TF Serving's default policy."""
    spec = ModelSpec(name, os.path.abspath(base_path))
    return ModelSet([spec], poll_seconds, delta_poll_seconds, watcher_nice=watcher_nice)


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _check_labels(repository, where):
    """ConfigFileError unless every label names a served version (TF Serving's rule)."""
    served = repository.served()
    for label, version in sorted(repository.labels.items()):
        if version not in served:
            raise ConfigFileError(
                f"{where}: field version_labels: label {label!r} names version {version}, which is "
                f"not served (served: {', '.join(map(str, sorted(served))) or 'none'}); "
                "point it at a served version"
            )


def _check_policy_labels(repository, spec, where):
    """ConfigFileError unless spec's labels name versions its policy would serve from what is on disk."""
    from graphopt.serve.repository import version_dirs

    would_serve = spec.policy.select(version_dirs(repository.base_path))
    for label, version in spec.labels:
        if version not in would_serve:
            raise ConfigFileError(
                f"{where}: field version_labels: label {label!r} names version {version}, which the "
                f"new policy would not serve ({', '.join(map(str, sorted(would_serve))) or 'none'}); "
                "point it at a served version"
            )
