"""Which EmbeddingVariables a model version holds, under the names deltas use, and their live handles.

A table is named by its checkpoint key without the ``/.ATTRIBUTES/...`` tail: its object path
from the model's root (``table``, ``_all_variables/2``) in a TF2 SavedModel or checkpoint, its op
name in a TF1 one. A model written by ``graphopt rewrite`` also answers to the original variable's
name (``graphopt_manifest.json``: ``embedding_1/embeddings_1``). Its identity (``identity`` in the
rewrite's manifest, or in ``graphopt_tables.json`` beside a graphopt.online export) is the Keras
path of the embedding variable, ``movieId_embedding/embeddings``: the same in a Keras export, its
rewrite and the export of the model trained on from its ``.keras`` file, where the object paths
are positions that differ (``_all_variables/5``, ``_misc_assets/1``).

The dense variables (DenseSpec) are the other floating-point variables, named by the variable's
own name where a SavedModel records it (``mlp_0/kernel``), else by object path or op name.
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
    identity: str | None = None  # contract.TABLE_IDENTITY: None where nothing recorded one

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclasses.dataclass(frozen=True)
class DenseSpec:
    """One dense floating-point variable of a checkpoint: its name, every checkpoint key saving it
    (a Keras export saves each variable twice, under ``variables/`` and ``_all_variables/``),
    dtype and shape."""

    name: str
    checkpoint_keys: tuple[str, ...]
    dtype: str
    shape: tuple[int, ...]


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
    identities = _identities(path) if os.path.isdir(path) else {}
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
        specs.append(
            TableSpec(
                name,
                base,
                int(values[1]),
                (alias,) if alias and alias != name else (),
                identities.get(base),
            )
        )
    return specs


def dense_specs(path) -> list[DenseSpec]:
    """The dense floating-point variables saved in the checkpoint of ``path`` (not the tables'
    tensors, not integer counters), by name (see DenseSpec)."""
    import tensorflow as tf
    from tensorflow.python.trackable.base import OBJECT_GRAPH_PROTO_KEY

    prefix = checkpoint_prefix(path)
    reader = tf.train.load_checkpoint(prefix)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    names = variable_names(path)
    tables = {base for base in map(contract.table_key_of, shapes) if base is not None}
    keys: dict[str, list[str]] = {}
    for key in sorted(shapes):
        if key == OBJECT_GRAPH_PROTO_KEY or not dtypes[key].is_floating:
            continue
        if names:
            # The SavedModel's object graph says which keys are variables: a table's tensors and
            # what a rewrite left behind of the variables it replaced are not.
            name = names.get(key)
        elif any(key.startswith(base + "-") for base in tables):
            name = None
        else:
            name = key.split(ATTRIBUTES)[0]
        if name is not None:
            keys.setdefault(name, []).append(key)
    specs = []
    for name, found in keys.items():
        shape, dtype = tuple(shapes[found[0]]), dtypes[found[0]]
        if all(tuple(shapes[k]) == shape and dtypes[k] == dtype for k in found):
            specs.append(DenseSpec(name, tuple(found), dtype.name, shape))
    return specs


def variable_names(path) -> dict[str, str]:
    """{checkpoint key: variable name} from the SavedModel in ``path``'s object graph; {} for a
    checkpoint without a SavedModel, or a TF1 SavedModel (its keys are the variables' names)."""
    from graphopt import model_io
    from graphopt.graph import meta_graphs, object_graphs

    if not (os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb"))):
        return {}
    meta_graph = model_io.read_model(path, check_integrity=False).meta_graph
    if not meta_graphs.has_object_graph(meta_graph):
        return {}
    ckpt_graph = object_graphs.read_object_graph(checkpoint_prefix(path))
    return object_graphs.variable_names(object_graphs.saved_object_graph(meta_graph), ckpt_graph)


def _identities(path) -> dict[str, str]:
    """checkpoint key -> the table's identity, from the rewrite's manifest or the tables file a
    graphopt.online export writes."""
    found = {}
    for name in (contract.MANIFEST, contract.TABLES_FILE):
        try:
            with open(os.path.join(path, name)) as f:
                tables = json.load(f).get("tables", [])
            for t in tables:
                if t.get("checkpoint_key") and t.get(contract.TABLE_IDENTITY):
                    found[t["checkpoint_key"]] = str(t[contract.TABLE_IDENTITY])
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
    return found


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


def by_identity(specs: list[TableSpec]) -> dict[str, TableSpec]:
    """Each recorded identity -> its spec (an identity two tables claim matches neither)."""
    counts: dict[str, int] = {}
    for spec in specs:
        if spec.identity:
            counts[spec.identity] = counts.get(spec.identity, 0) + 1
    return {spec.identity: spec for spec in specs if spec.identity and counts[spec.identity] == 1}


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
