"""TF Serving's model config file (``--model-config-file``): ModelServerConfig in text format.

    model_config_list {
      config { name: "rec" base_path: "/models/rec" model_platform: "tensorflow"
               model_version_policy { latest { num_versions: 2 } }
               version_labels { key: "stable" value: 3 } version_labels { key: "canary" value: 4 } }
      config { name: "tower" base_path: "/models/tower" model_version_policy { all {} } }
    }

Parsed with tensorflow_serving.config.model_server_config_pb2 (the tensorflow-serving-api
package), so exactly the files TF Serving takes parse. Every refusal is one line naming the file,
the config entry and field, and the fix.
"""

import dataclasses
import os
import re

from tensorflow_serving.config import model_server_config_pb2

from graphopt.serve.config_files import ConfigFileError, parse_text_file

_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which versions under a base path are served: TF Serving's ServableVersionPolicy."""

    kind: str = "latest"  # latest | all | specific
    count: int = 1  # latest: how many
    versions: tuple = ()  # specific: which

    def select(self, available):
        """The versions to serve out of ``available`` (an iterable of version numbers)."""
        available = sorted(available)
        if self.kind == "all":
            return set(available)
        if self.kind == "specific":
            return set(self.versions) & set(available)
        return set(available[-self.count :]) if available else set()

    def describe(self):
        if self.kind == "all":
            return "all versions"
        if self.kind == "specific":
            return "specific versions " + ", ".join(map(str, self.versions))
        return "the latest version" if self.count == 1 else f"the latest {self.count} versions"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of the config: name, base path, version policy, labels ({label: version})."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: tuple = ()  # ((label, version), ...) sorted, so specs compare by value

    @property
    def label_map(self):
        return dict(self.labels)


FLAG = "--model-config-file"


def read_model_config(path):
    """The models of a ModelServerConfig text file; ConfigFileError names the file, field and fix."""
    where = f"{FLAG} {path}"
    example = 'model_config_list { config { name: "m" base_path: "/models/m" } }'
    config = parse_text_file(path, FLAG, model_server_config_pb2.ModelServerConfig(), example)
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigFileError(
            f"{where}: field model_config_list: missing (custom_model_config is not supported); "
            "list the models in model_config_list { config { ... } }"
        )
    entries = config.model_config_list.config
    if not entries:
        raise ConfigFileError(f"{where}: field model_config_list.config: no models; add a config entry")
    specs, seen = [], set()
    for index, entry in enumerate(entries):
        specs.append(_model_spec(entry, f"{where}: model_config_list.config[{index}]"))
        if specs[-1].name in seen:
            raise ConfigFileError(
                f"{where}: model_config_list.config[{index}].name: {specs[-1].name!r} appears twice; "
                "give every model its own name"
            )
        seen.add(specs[-1].name)
    return specs


def _model_spec(entry, where):
    def refuse(field, problem, fix):
        raise ConfigFileError(f"{where}.{field}: {problem}; {fix}")

    if not entry.name:
        refuse("name", "missing", 'name the model clients address, e.g. name: "rec"')
    where = f"{where} (model {entry.name!r})"
    if "/" in entry.name or ":" in entry.name:
        refuse("name", f"{entry.name!r} has a '/' or ':'", "use a name a REST path can carry")
    if entry.model_platform not in ("", "tensorflow"):
        refuse("model_platform", f"{entry.model_platform!r} is not served here", 'use "tensorflow"')
    if not entry.base_path:
        refuse("base_path", "missing", "point it at a directory holding <version>/saved_model.pb")
    # TF Serving resolves a relative base path against its working directory; so does graphopt
    base_path = os.path.abspath(entry.base_path)
    if not os.path.isdir(base_path):
        refuse(
            "base_path",
            f"{entry.base_path} does not exist or is not a directory",
            "point it at a directory holding <version>/saved_model.pb",
        )
    policy = _policy(entry.model_version_policy, refuse)
    labels = dict(entry.version_labels)
    for label, version in labels.items():
        if not _LABEL.match(label) or label.isdigit():
            refuse(
                "version_labels",
                f"label {label!r} is not a name",
                "use letters, digits, '_', '-' or '.', not a plain number",
            )
        if version < 0:
            refuse("version_labels", f"label {label!r} names version {version}", "name a version >= 0")
        if policy.kind == "specific" and version not in policy.versions:
            refuse(
                "version_labels",
                f"label {label!r} names version {version}, which the specific policy does not serve",
                f"name one of {', '.join(map(str, policy.versions))} or add it to the policy",
            )
    return ModelSpec(entry.name, base_path, policy, tuple(sorted(labels.items())))


def _policy(proto, refuse):
    kind = proto.WhichOneof("policy_choice")
    if kind in (None, "latest"):
        count = proto.latest.num_versions if kind else 1
        return VersionPolicy("latest", count or 1)  # TF Serving: num_versions defaults to 1
    if kind == "all":
        return VersionPolicy("all")
    versions = tuple(sorted(set(proto.specific.versions)))
    if not versions:
        refuse(
            "model_version_policy.specific.versions",
            "empty",
            "list at least one version, e.g. specific { versions: 1 }",
        )
    if versions[0] < 0:
        refuse("model_version_policy.specific.versions", f"{versions[0]} is negative", "list versions >= 0")
    return VersionPolicy("specific", versions=versions)
