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
from graphopt.online.tables import TableSpec, by_name, checkpoint_prefix, rewrite_target, table_specs

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


def served_keys(version_dir, spec: TableSpec) -> np.ndarray:
    """The keys serving holds in a table after the version's checkpoint and every delta on disk
    (sorted, unique); a delta that cannot be read stops the replay, as it stops serving."""
    import tensorflow as tf

    prefix = os.path.join(version_dir, "variables", "variables")
    keys = np.unique(
        tf.train.load_checkpoint(prefix).get_tensor(contract.tensor_name(spec.checkpoint_key, contract.KEYS))
    )
    fingerprint = delta_format.model_fingerprint(version_dir)
    for expected, sequence in enumerate(delta_format.sequences(version_dir), start=1):
        path = os.path.join(delta_format.deltas_dir(version_dir), str(sequence))
        try:
            if sequence != expected:
                break
            delta = delta_format.read_delta(path, delta_format.version_of(version_dir), fingerprint)
        except delta_format.DeltaError:
            break
        for table in delta.tables:
            if table.name in spec.names:
                keys = np.union1d(np.setdiff1d(keys, table.removed_keys), table.keys)
    return keys


class DeltaWriter:
    """Writes deltas of training EmbeddingVariables beside the served version ``version_dir``.

    ``tables``: {served table name: EmbeddingVariable}, a list of EmbeddingVariables (named by
    ``ev.name``) or a model whose variables include EmbeddingVariables (named by object path).
    Each name must be a table of the served version (or an alias from its rewrite manifest), with
    the same dim. ``since``: the step the served version was trained to (rows whose last step is
    after it go into the first delta); None puts every row into the first delta.
    """

    def __init__(self, version_dir, tables, since: int | None = None):
        self.version_dir = version_dir
        self.tables = embedding_variables(tables)
        if not self.tables:
            raise GraphoptError(
                "no EmbeddingVariables to write deltas of; pass {name: variable}, a list "
                "of EmbeddingVariables or a model holding some"
            )
        check_takes_deltas(version_dir)
        _check_since(since)
        served = by_name(table_specs(version_dir))
        self.specs: dict[str, TableSpec] = {}
        for name, ev in self.tables.items():
            spec = served.get(name)
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
            parts.append(delta_format.TableDelta(name, keys, values, versions, removed))
            served[name] = np.union1d(np.intersect1d(self._served[name], present, assume_unique=True), keys)
            if len(versions):
                watermark = max(watermark, int(versions.max()))
        up_to = watermark if step is None else int(step)
        if not any(len(p.keys) or len(p.removed_keys) for p in parts):
            self.since = up_to
            return None
        path = delta_format.write_delta(
            self.version_dir,
            parts,
            since_step=None if self.since == ALL_ROWS else self.since,
            up_to_step=up_to,
        )
        self._served, self.since, self.last_path = served, up_to, path
        return path


def delta_from_checkpoint(
    source, version_dir, since: int, table_map: dict[str, str] | None = None
) -> str | None:
    """Write the delta that takes serving from ``version_dir`` (and its deltas so far) to the
    EmbeddingVariables saved in ``source`` (a SavedModel, checkpoint directory or prefix): the rows
    whose last step is after ``since``, and the keys serving holds that ``source`` does not.
    ``table_map``: source table name -> served table name, where they differ. Returns the delta's
    directory, or None when nothing changed."""
    import tensorflow as tf

    check_takes_deltas(version_dir)
    _check_since(since)
    served = by_name(table_specs(version_dir))
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
        target = next((table_map[n] for n in spec.names if n in table_map), None) or next(
            (n for n in spec.names if n in served), None
        )
        if target not in served:
            raise GraphoptError(
                f"table {spec.name} of {source} is not a table of the served model {version_dir} "
                f"(its tables: {', '.join(sorted(served)) or 'none'}); "
                f"map it with --table {spec.name}=SERVED_NAME"
            )
        goal = served[target]
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
    if not any(len(p.keys) or len(p.removed_keys) for p in parts):
        return None
    up_to = max([since] + [int(p.versions.max()) for p in parts if len(p.versions)])
    return delta_format.write_delta(version_dir, parts, since_step=since, up_to_step=up_to)
