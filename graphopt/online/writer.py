"""Writing deltas while training: DeltaWriter, and a Keras callback that calls it every N steps or seconds.

A delta holds, per table, the rows whose last step (what ``lookup(..., insert_missing=True,
step=...)`` records; the sparse optimizers only train rows looked up in the same step) is after the
previous delta's, and the keys serving holds that training no longer does. The writer keeps the
keys serving holds (the version's checkpoint, then every delta on disk, then each delta it writes),
so every way a key leaves a training table (``evict``, the ``max_rows`` cap, ``remove``) reaches
serving as a removal.
"""

import os
from typing import Any

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.ev import contract
from graphopt.online import delta_format
from graphopt.online.tables import (
    DenseSpec,
    TableSpec,
    by_identity,
    by_name,
    checkpoint_prefix,
    dense_specs,
    rewrite_target,
    table_specs,
)

ALL_ROWS = np.iinfo(np.int64).min  # `since` that takes every row


def embedding_variables(source) -> dict[str, Any]:
    """name -> EmbeddingVariable for a dict (kept), a list (named by ``ev.name``) or any trackable
    model/module (named by object path from its root, as its SavedModel's checkpoint names them)."""
    from graphopt.ops import EmbeddingVariable

    if isinstance(source, dict):
        return dict(source)
    if isinstance(source, (list, tuple)):
        found = {ev.name: ev for ev in source if isinstance(ev, EmbeddingVariable)}
        if len(found) != len([ev for ev in source if isinstance(ev, EmbeddingVariable)]):
            raise GraphoptError("two EmbeddingVariables of the list share a name; pass {name: variable}")
        return found
    from tensorflow.python.checkpoint import graph_view
    from tensorflow.python.trackable import trackable_utils

    objects, paths = graph_view.ObjectGraphView(source).breadth_first_traversal()
    found = {}
    for obj in objects:
        if isinstance(obj, EmbeddingVariable) and all(obj is not v for v in found.values()):
            found["/".join(trackable_utils.escape_local_name(r.name) for r in paths[obj])] = obj
    return found


def check_takes_deltas(version_dir):
    """A served version deltas can go to: a model version (saved_model.pb) and not a stock
    rewrite, whose rows are dense variables behind built-in hash tables that cannot take new keys."""
    delta_format.model_fingerprint(version_dir)  # refuses a directory that is no model version first
    if rewrite_target(version_dir) == "stock":
        raise GraphoptError(
            f"{version_dir} is a --target stock rewrite: stock versions cannot take deltas (their rows "
            "are dense, behind built-in hash tables); serve the ev rewrite "
            "(graphopt rewrite MODEL -o DIR --target ev) and write deltas for it"
        )


def _check_since(since):
    if since is not None and int(since) < 0:
        raise GraphoptError(
            f"since={since}: a training step is >= 0 (the step the served version was trained to)"
        )


def _served_deltas(version_dir):
    """The deltas serving applies, in order: every complete one up to the first that cannot be
    read (it stops serving's replay too)."""
    fingerprint = delta_format.model_fingerprint(version_dir)
    for expected, sequence in enumerate(delta_format.sequences(version_dir), start=1):
        path = os.path.join(delta_format.deltas_dir(version_dir), str(sequence))
        try:
            if sequence != expected:
                return
            delta = delta_format.read_delta(path, delta_format.version_of(version_dir), fingerprint)
        except delta_format.DeltaError:
            return
        yield delta


def served_dense(version_dir, specs: list[DenseSpec]) -> dict[str, np.ndarray]:
    """name -> the value serving holds of each dense variable: the version's checkpoint, then the
    last delta on disk that set it."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(version_dir, "variables", "variables"))
    values = {spec.name: reader.get_tensor(spec.checkpoint_keys[0]) for spec in specs}
    for delta in _served_deltas(version_dir):
        for dense in delta.dense:
            if dense.name in values:
                values[dense.name] = np.asarray(dense.value)
    return values


def served_keys(version_dir, spec: TableSpec) -> np.ndarray:
    """The keys serving holds in a table after the version's checkpoint and every delta on disk
    (sorted, unique); a delta that cannot be read stops the replay, as it stops serving."""
    import tensorflow as tf

    prefix = os.path.join(version_dir, "variables", "variables")
    keys = np.unique(
        tf.train.load_checkpoint(prefix).get_tensor(contract.tensor_name(spec.checkpoint_key, contract.KEYS))
    )
    for delta in _served_deltas(version_dir):
        for table in delta.tables:
            if table.name in spec.names:
                keys = np.union1d(np.setdiff1d(keys, table.removed_keys), table.keys)
    return keys


class DeltaWriter:
    """Writes deltas of training EmbeddingVariables beside the served version ``version_dir``.

    ``tables``: {served table name: EmbeddingVariable}, a list of EmbeddingVariables (named by
    ``ev.name``) or a model whose variables include EmbeddingVariables (named by object path; a
    Keras model's DynamicEmbedding tables also by identity, ``<layer path>/embeddings``). Each must
    be a table of the served version (by name, alias from its rewrite manifest or identity), with
    the same dim. ``since``: the step the served version was trained to (rows whose last step is
    after it go into the first delta); None puts every row into the first delta.

    ``dense``: the dense variables to carry, {served name: variable} or a model (its
    floating-point variables, named by Keras path or ``tf.Variable`` name, ``mlp_0/kernel``);
    those the served version has go into a delta whenever their value changed since serving's.
    None (the default) carries none: the served model then computes the trained rows through its
    own dense layers.
    """

    def __init__(self, version_dir, tables, since: int | None = None, dense=None):
        self.version_dir = version_dir
        identities = _table_identities(tables)
        self.tables = embedding_variables(tables)
        if not self.tables:
            raise GraphoptError(
                "no EmbeddingVariables to write deltas of; pass {name: variable}, a list "
                "of EmbeddingVariables or a model holding some"
            )
        check_takes_deltas(version_dir)
        _check_since(since)
        served_specs = table_specs(version_dir)
        served, served_ids = by_name(served_specs), by_identity(served_specs)
        self.specs: dict[str, TableSpec] = {}
        for name, ev in self.tables.items():
            spec = served.get(name) or served_ids.get(identities.get(id(ev), ""))
            if spec is None:
                raise GraphoptError(
                    f"table {name!r} is not a table of the served model {version_dir}; its tables are "
                    f"{', '.join(sorted(served)) or 'none'}: pass {{served name: variable}}"
                )
            if spec.dim != ev.dim:
                raise GraphoptError(f"table {name!r} has dim {ev.dim}, the served table has dim {spec.dim}")
            self.specs[name] = spec
        self.since = ALL_ROWS if since is None else int(since)
        self._served = {name: served_keys(version_dir, spec) for name, spec in self.specs.items()}
        self.dense = _dense_variables(dense, version_dir)
        self._dense_served = served_dense(version_dir, [spec for spec, _ in self.dense.values()])
        self.last_path: str | None = None

    def write(self, step: int | None = None) -> str | None:
        """Write one delta (rows changed after the previous delta, keys removed since) and return
        its directory; None (nothing written) when nothing changed. ``step``: the training step
        every lookup so far has reached; the next delta takes rows whose last step is after it
        (default: the largest last step in this delta)."""
        from graphopt.ops import online

        parts: list[delta_format.TableDelta] = []
        watermark = self.since
        served = {}
        for name, ev in self.tables.items():
            keys, values, versions, present = (
                t.numpy() for t in online.export_changed(ev.handle, ev.dim, self.since)
            )
            present = np.unique(present)
            removed = np.setdiff1d(self._served[name], present, assume_unique=True)
            parts.append(delta_format.TableDelta(self.specs[name].name, keys, values, versions, removed))
            served[name] = np.union1d(np.intersect1d(self._served[name], present, assume_unique=True), keys)
            if len(versions):
                watermark = max(watermark, int(versions.max()))
        up_to = watermark if step is None else int(step)
        dense = []
        for name, (_, variable) in self.dense.items():
            value = variable.numpy()
            if not _same(value, self._dense_served[name]):
                dense.append(delta_format.DenseDelta(name, value))
        if not dense and not any(len(p.keys) or len(p.removed_keys) for p in parts):
            self.since = up_to
            return None
        path = delta_format.write_delta(
            self.version_dir,
            parts,
            since_step=None if self.since == ALL_ROWS else self.since,
            up_to_step=up_to,
            dense=dense,
        )
        self._dense_served.update((d.name, d.value) for d in dense)
        self._served, self.since, self.last_path = served, up_to, path
        return path


def _table_identities(source) -> dict[int, str]:
    """id(EmbeddingVariable) -> identity, for the DynamicEmbedding layers of a Keras model."""
    layers = getattr(source, "layers", None)
    if not isinstance(layers, list):
        return {}
    from graphopt.keras.identity import all_layers, table_identity
    from graphopt.keras.layer import DynamicEmbedding

    return {
        id(layer.table): table_identity(layer)
        for layer in all_layers(source)
        if isinstance(layer, DynamicEmbedding)
    }


def _dense_variables(source, version_dir) -> dict[str, tuple[DenseSpec, Any]]:
    """served name -> (its spec, the training variable) for the served version's dense variables
    that ``source`` (None, {name: variable} or a model) holds."""
    if source is None:
        return {}
    import tensorflow as tf

    if isinstance(source, dict):
        found = dict(source)
    else:
        found = {}
        for variable in getattr(source, "variables", None) or []:
            name = getattr(variable, "path", None) or variable.name.split(":")[0]
            found.setdefault(name, variable)
    served = {spec.name: spec for spec in dense_specs(version_dir)}
    out = {}
    for name, variable in found.items():
        spec = served.get(name)
        if spec is None or not tf.as_dtype(variable.dtype).is_floating:
            continue
        shape, dtype = tuple(variable.shape), tf.as_dtype(variable.dtype).name
        if (dtype, shape) != (spec.dtype, spec.shape):
            raise GraphoptError(
                f"dense variable {name} is {dtype} {list(shape)}, the served one is {spec.dtype} "
                f"{list(spec.shape)}: train the model the served version was made from"
            )
        out[name] = (spec, variable)
    return out


def delta_from_checkpoint(
    source, version_dir, since: int, table_map: dict[str, str] | None = None
) -> str | None:
    """Write the delta that takes serving from ``version_dir`` (and its deltas so far) to the model
    saved in ``source`` (a SavedModel, checkpoint directory or prefix): the rows whose last step is
    after ``since``, the keys serving holds that ``source`` does not, and every dense variable of
    the served version whose value in ``source`` differs from what serving holds (whole).

    A table of ``source`` goes to the served table ``table_map`` names (source name -> served
    name), else to the one of the same identity (the Keras path of its embedding variable, which
    ``graphopt rewrite`` and ``graphopt.online.export_model`` record), else to the one of the same
    name or alias. A dense variable is matched by name (``mlp_0/kernel`` in a SavedModel), else by
    object path. Returns the delta's directory, or None when nothing changed."""
    import tensorflow as tf

    check_takes_deltas(version_dir)
    _check_since(since)
    served_specs = table_specs(version_dir)
    served, served_ids = by_name(served_specs), by_identity(served_specs)
    sources = table_specs(source)
    if not sources:
        raise GraphoptError(
            f"{source} holds no EmbeddingVariables (no KEY-keys / KEY-values / KEY-versions "
            "tensors); pass the training checkpoint or SavedModel of a model trained on them"
        )
    table_map = dict(table_map or {})
    unknown = set(table_map) - {name for spec in sources for name in spec.names}
    if unknown:
        raise GraphoptError(
            f"--table names {', '.join(sorted(unknown))}, not tables of {source}; its tables "
            f"are {', '.join(s.name for s in sources)}"
        )
    reader = tf.train.load_checkpoint(checkpoint_prefix(source))
    parts = []
    for spec in sources:
        goal = _served_table(spec, table_map, served, served_ids)
        if goal is None:
            raise GraphoptError(
                f"table {spec.name}{f' ({spec.identity})' if spec.identity else ''} of {source} is "
                f"not a table of the served model {version_dir} (its tables: "
                f"{', '.join(sorted(served)) or 'none'}); map it with --table {spec.name}=SERVED_NAME"
            )
        if goal.dim != spec.dim:
            raise GraphoptError(
                f"table {spec.name} of {source} has dim {spec.dim}, served table {goal.name} "
                f"has dim {goal.dim}"
            )
        keys, values, versions = (
            reader.get_tensor(contract.tensor_name(spec.checkpoint_key, t))
            for t in (contract.KEYS, contract.VALUES, contract.VERSIONS)
        )
        changed = versions > since
        removed = np.setdiff1d(served_keys(version_dir, goal), keys)
        parts.append(
            delta_format.TableDelta(goal.name, keys[changed], values[changed], versions[changed], removed)
        )
    targets = [p.name for p in parts]
    if len(set(targets)) != len(targets):
        raise GraphoptError(
            f"two tables of {source} go to one served table ({', '.join(sorted(targets))}); "
            "map each with --table SOURCE=SERVED"
        )
    dense = changed_dense(source, reader, version_dir)
    if not dense and not any(len(p.keys) or len(p.removed_keys) for p in parts):
        return None
    up_to = max([since] + [int(p.versions.max()) for p in parts if len(p.versions)])
    return delta_format.write_delta(version_dir, parts, since_step=since, up_to_step=up_to, dense=dense)


def _served_table(spec: TableSpec, table_map, served, served_ids) -> TableSpec | None:
    mapped = next((table_map[n] for n in spec.names if n in table_map), None)
    if mapped is not None:
        return served.get(mapped)
    if spec.identity and spec.identity in served_ids:
        return served_ids[spec.identity]
    return next((served[n] for n in spec.names if n in served), None)


def changed_dense(source, reader, version_dir) -> list[delta_format.DenseDelta]:
    """The dense variables of the served version whose value in ``source`` (its checkpoint
    ``reader``) differs, bit for bit, from what serving holds. A variable only one side has is
    left out: training state (a layer's step counter) or a variable serving does not read."""
    served = dense_specs(version_dir)
    if not served:
        return []
    mine = dense_specs(source)
    # By name; a checkpoint without a SavedModel names no variable: by checkpoint key then (in a
    # SavedModel a key is a position, which another export of the model may give another variable).
    named = os.path.isfile(os.path.join(str(source), "saved_model.pb"))
    by_key = {} if named else {key: spec for spec in mine for key in spec.checkpoint_keys}
    mine_by_name = {spec.name: spec for spec in mine}
    current = served_dense(version_dir, served)
    out = []
    for goal in served:
        spec = mine_by_name.get(goal.name) or next(
            (by_key[k] for k in goal.checkpoint_keys if k in by_key), None
        )
        if spec is None:
            continue
        if (spec.dtype, spec.shape) != (goal.dtype, goal.shape):
            raise GraphoptError(
                f"dense variable {spec.name} of {source} is {spec.dtype} {list(spec.shape)}, the "
                f"served {goal.name} is {goal.dtype} {list(goal.shape)}: SOURCE must be the model "
                "the served version was made from, trained on"
            )
        value = reader.get_tensor(spec.checkpoint_keys[0])
        if any(not _same(value, reader.get_tensor(k)) for k in spec.checkpoint_keys[1:]):
            raise GraphoptError(
                f"{source} saves dense variable {spec.name} under {len(spec.checkpoint_keys)} keys "
                "with different values; save the model again"
            )
        if not _same(value, current[goal.name]):
            out.append(delta_format.DenseDelta(goal.name, value))
    return out


def _same(a, b) -> bool:
    """Bit for bit (a NaN equals itself, -0.0 is not 0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
