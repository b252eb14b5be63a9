"""Which EmbeddingVariables a model version holds, under the names deltas use, and their live handles.

A table is named by its checkpoint key without the ``/.ATTRIBUTES/...`` tail: its object path
from the model's root (``table``, ``_all_variables/2``) in a TF2 SavedModel or checkpoint, its op
name in a TF1 one. A model written by ``graphopt rewrite`` also answers to the original variable's
name (``graphopt_manifest.json``: ``embedding_1/embeddings_1``).
"""

import dataclasses
import json
import os
from typing import Any

from graphopt.errors import ModelError
from graphopt.ev import contract

ATTRIBUTES = "/.ATTRIBUTES/"


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One EmbeddingVariable of a checkpoint: its name, other names, checkpoint key and dim."""

    name: str
    checkpoint_key: str  # KEY of KEY-keys, KEY-values, KEY-versions
    dim: int
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def checkpoint_prefix(path) -> str:
    """The checkpoint prefix of a SavedModel directory, a checkpoint directory or a prefix."""
    import tensorflow as tf

    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "variables", "variables.index")):
            return os.path.join(path, "variables", "variables")
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        raise ModelError(
            f"{path} holds neither a SavedModel (variables/variables.index) nor a checkpoint; "
            "pass a SavedModel directory, a checkpoint directory or a checkpoint prefix"
        )
    if os.path.isfile(path + ".index"):
        return path
    raise ModelError(
        f"{path} is not a checkpoint (no {path}.index); pass a SavedModel directory, "
        "a checkpoint directory or a checkpoint prefix"
    )


def table_specs(path) -> list[TableSpec]:
    """The EmbeddingVariables saved in the checkpoint of ``path`` (see checkpoint_prefix), with the
    rewrite manifest's table names as aliases when ``path`` is a rewritten SavedModel."""
    import tensorflow as tf

    prefix = checkpoint_prefix(path)
    try:
        shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as exc:
        raise ModelError(
            f"cannot read checkpoint {prefix} ({str(exc).strip().splitlines()[0]}); copy it again"
        ) from None
    aliases = _rewrite_names(path) if os.path.isdir(path) else {}
    specs = []
    for key in sorted(shapes):
        base = contract.table_key_of(key)
        if base is None:
            continue
        values = shapes.get(contract.tensor_name(base, contract.VALUES))
        if values is None or len(values) != 2 or contract.tensor_name(base, contract.VERSIONS) not in shapes:
            continue
        name = base.split(ATTRIBUTES)[0]
        alias = aliases.get(base)
        specs.append(TableSpec(name, base, int(values[1]), (alias,) if alias and alias != name else ()))
    return specs


def _rewrite_names(version_dir) -> dict[str, str]:
    """checkpoint key -> the table's original variable name, from graphopt_manifest.json."""
    try:
        with open(os.path.join(version_dir, contract.MANIFEST)) as f:
            manifest = json.load(f)
        return {t["checkpoint_key"]: t["name"] for t in manifest.get("tables", []) if t.get("checkpoint_key")}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def rewrite_target(version_dir) -> str | None:
    """ "ev" or "stock" for a model graphopt rewrote (by the ops its lookups became), else None."""
    try:
        with open(os.path.join(version_dir, contract.MANIFEST)) as f:
            replaced = json.load(f).get("replaced", [])
    except (OSError, ValueError, AttributeError):
        return None
    ops = {(r.get("new") or {}).get("op", "") for r in replaced if isinstance(r, dict)}
    if not ops:
        return None
    return "ev" if any(contract.is_ev_op(op) for op in ops) else "stock"


def by_name(specs: list[TableSpec]) -> dict[str, TableSpec]:
    """Every name and alias -> its spec."""
    return {name: spec for spec in specs for name in spec.names}


def live_handles(loaded, specs: list[TableSpec]) -> dict[str, object]:
    """spec.name -> the resource handle of that table in a loaded TF2 SavedModel object.

    The object graph is walked breadth first, as the checkpoint that named the tables was; a
    table of a TF1 model (no object graph) is not reachable and is left out.
    """
    from tensorflow.python.checkpoint import graph_view
    from tensorflow.python.trackable import trackable_utils

    wanted = {spec.name for spec in specs}
    found: dict[str, Any] = {}
    try:
        objects, paths = graph_view.ObjectGraphView(loaded).breadth_first_traversal()
    except (TypeError, AttributeError, ValueError):
        return found
    for obj in objects:
        path = "/".join(trackable_utils.escape_local_name(ref.name) for ref in paths.get(obj, ()))
        if path in wanted and path not in found and hasattr(obj, "resource_handle"):
            found[path] = obj.resource_handle
    return found
