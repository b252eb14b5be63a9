"""EmbeddingVariable: a dynamic-hash embedding table held in a TensorFlow resource.

One row per id actually seen, no fixed vocabulary, no collisions. Works eagerly, in
``tf.function`` and in TF1 graphs; checkpoints with ``tf.train.Checkpoint`` and the TF1
``Saver`` as ``<key>-keys/-values/-freqs/-versions`` (plus ``<key>-slot-<name>`` for an
optimizer's slots); survives ``tf.saved_model``. Trains with a sparse optimizer whose slots
live in the table's rows, with feature admission (``min_count``) and eviction.
"""

import numbers

import numpy as np
import tensorflow as tf
from tensorflow.python.checkpoint import saveable_compat
from tensorflow.python.eager import context
from tensorflow.python.framework import ops
from tensorflow.python.trackable import resource
from tensorflow.python.training.saving import (
    saveable_object,
    saveable_object_util,  # noqa: F401  (registers SaveSpec users)
)

from graphopt.ev import contract
from graphopt.ops import optimizers as sparse_optimizers
from graphopt.ops.library import load_library

KEY_DTYPES = (tf.int32, tf.int64)

# initializer name -> the keys of its Keras / tf.initializers config it reads.
_INITIALIZER_CONFIG = {
    "RandomUniform": ("uniform", {"minval": "init_minval", "maxval": "init_maxval"}),
    "RandomNormal": ("normal", {"mean": "init_mean", "stddev": "init_stddev"}),
    "TruncatedNormal": ("truncated_normal", {"mean": "init_mean", "stddev": "init_stddev"}),
    "Zeros": ("zeros", {}),
    "Ones": ("constant", {}),
    "Constant": ("constant", {"value": "init_value"}),
}
_INITIALIZER_NAMES = ("uniform", "normal", "truncated_normal", "zeros", "ones")
EVICT_POLICIES = ("lru", "lfu", "refuse")
ADMISSIONS = ("counter", "bloom")


def _invalid(message: str) -> tf.errors.InvalidArgumentError:
    return tf.errors.InvalidArgumentError(None, None, message)


def initializer_attrs(initializer) -> dict:
    """Handle-op attrs for an initializer: None, a name, or a tf/Keras initializer object."""
    if initializer is None:
        return {"initializer": "uniform", "init_minval": -0.05, "init_maxval": 0.05}
    if isinstance(initializer, str):
        if initializer not in _INITIALIZER_NAMES:
            raise _invalid(
                f"initializer must be one of {', '.join(_INITIALIZER_NAMES)} or a "
                f"tf.keras.initializers object, got '{initializer}'"
            )
        if initializer == "ones":
            return {"initializer": "constant", "init_value": 1.0}
        return {"initializer": initializer}
    kind = type(initializer).__name__
    if kind not in _INITIALIZER_CONFIG:
        raise _invalid(
            f"unsupported initializer {kind}; use one of {', '.join(sorted(_INITIALIZER_CONFIG))} or a name"
        )
    name, fields = _INITIALIZER_CONFIG[kind]
    config = initializer.get_config() if hasattr(initializer, "get_config") else {}
    attrs: dict[str, str | float | int] = {"initializer": name}
    if kind == "Ones":
        attrs["init_value"] = 1.0
    for field, attr in fields.items():
        value = config.get(field)
        if value is None:
            continue
        try:
            attrs[attr] = float(value)
        except (TypeError, ValueError):
            raise _invalid(f"{kind} {field} must be a scalar, got {value!r}") from None
    if config.get("seed") is not None:
        attrs["seed"] = int(config["seed"])
    return attrs


def _integer(value, what: str):
    """An int64 scalar tensor from an integer value; refuses fractional or float steps."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        if not value.dtype.is_integer:
            raise _invalid(f"{what} must be an integer, got a {value.dtype.name} tensor")
        return tf.cast(value, tf.int64)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise _invalid(f"{what} must be an integer, got {value!r}")
    return tf.constant(int(value), tf.int64)


def _default_value_attr(default_value, dim: int) -> list:
    if default_value is None:
        return []
    values = [float(v) for v in tf.reshape(tf.constant(default_value, tf.float32), [-1]).numpy()]
    if len(values) not in (1, dim):
        raise _invalid(f"default_value must be a scalar or {dim} values, got {len(values)}")
    return values


@saveable_compat.legacy_saveable_name("table")
class EmbeddingVariable(resource.TrackableResource):
    """A dynamic-hash embedding table of float32 rows of a fixed ``dim``, keyed by int64 ids.

    ``lookup(ids)`` finds rows (unseen ids get the default row, nothing is inserted);
    ``lookup(ids, insert_missing=True)`` inserts unseen ids with a deterministic
    initializer row, a function of (seed, id) only; with ``min_count`` > 1 an id gets its
    row at its ``min_count``-th such lookup, counted exactly per id (``admission='counter'``)
    or in a counting Bloom filter of ``bloom_counters`` bytes fixed up front
    (``admission='bloom'``; a few ids are admitted early). ``optimizer`` (a name or a
    ``graphopt.ops.optimizers`` config) keeps its slots in each row;
    ``apply_gradients`` trains the rows, ``evict`` removes stale ones, ``max_rows`` caps
    the table (``evict_policy`` lru | lfu | refuse).
    """

    def __init__(
        self,
        dim,
        key_dtype=tf.int64,
        initializer=None,
        default_value=None,
        seed=0,
        name="embedding_variable",
        shared_name=None,
        container="",
        optimizer=None,
        min_count=0,
        max_rows=0,
        evict_policy="lru",
        admission="counter",
        bloom_counters=1 << 20,
        bloom_hashes=3,
    ):
        lib = load_library()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise _invalid(f"dim must be a positive int, got {dim!r}")
        key_dtype = tf.as_dtype(key_dtype)
        if key_dtype not in KEY_DTYPES:
            raise _invalid(f"key_dtype must be int32 or int64, got {key_dtype.name}")
        self._ops = lib
        self._dim = dim
        self._key_dtype = key_dtype
        self._name = name
        self._container = container
        self._attrs = initializer_attrs(initializer)
        if seed or "seed" not in self._attrs:  # an explicit seed beats the initializer's
            self._attrs["seed"] = int(seed)
        self._default_value = _default_value_attr(default_value, dim)
        self._optimizer = sparse_optimizers.get(optimizer)
        for label, value in (("min_count", min_count), ("max_rows", max_rows)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise _invalid(f"{label} must be an int >= 0, got {value!r}")
        if 0 < max_rows < 64:
            raise _invalid(
                f"max_rows must be 0 (no cap) or at least 64 (the cap is split over "
                f"64 shards), got {max_rows}"
            )
        if evict_policy not in EVICT_POLICIES:
            raise _invalid(f"evict_policy must be one of {', '.join(EVICT_POLICIES)}, got {evict_policy!r}")
        if admission not in ADMISSIONS:
            raise _invalid(f"admission must be one of {', '.join(ADMISSIONS)}, got {admission!r}")
        if admission == "bloom":
            for label, value, low, high in (
                ("min_count", min_count, 2, 255),
                ("bloom_counters", bloom_counters, 64, 1 << 40),
                ("bloom_hashes", bloom_hashes, 1, 16),
            ):
                if (
                    isinstance(value, bool)
                    or not isinstance(value, numbers.Integral)
                    or not low <= value <= high
                ):
                    raise _invalid(f"admission='bloom' needs {label} in [{low}, {high}], got {value!r}")
        self._admission = admission
        self._bloom_counters, self._bloom_hashes = int(bloom_counters), int(bloom_hashes)
        self._min_count, self._max_rows = int(min_count), int(max_rows)
        self._evict_policy = evict_policy
        # Eagerly each object owns a fresh table (TF's anonymous shared name makes
        # the kernel invent a unique one), so neither two objects nor two loads of
        # one SavedModel share rows by accident. In a graph an empty shared_name
        # shares by node name, which a TF1 checkpointed table needs.
        self._anonymous = shared_name is None and context.executing_eagerly()
        if self._anonymous:
            shared_name = context.anonymous_name()
        self._shared_name = shared_name or ""
        super().__init__()
        self._resource_handle = self._create_resource()
        if not context.executing_eagerly():
            self._checkpoint_name = self._resource_handle.op.name
            ops.add_to_collection(
                ops.GraphKeys.SAVEABLE_OBJECTS, _EmbeddingVariableSaveable(self, self._checkpoint_name)
            )

    # --- TrackableResource -------------------------------------------------------------
    def _create_resource(self):
        return self._ops.graphopt_ev_handle_op(
            container=self._container,
            shared_name=self._shared_name,
            dim=self._dim,
            key_dtype=self._key_dtype,
            default_value=self._default_value,
            name=self._name,
            optimizer=self._optimizer.name if self._optimizer else "",
            slot_init=self._optimizer.slot_init() if self._optimizer else [],
            min_count=self._min_count,
            max_rows=self._max_rows,
            evict_policy=self._evict_policy,
            admission=self._admission,
            bloom_counters=self._bloom_counters,
            bloom_hashes=self._bloom_hashes,
            **self._attrs,
        )

    def _destroy_resource(self):
        if self._anonymous:
            tf.raw_ops.DestroyResourceOp(resource=self.resource_handle, ignore_lookup_error=True)

    def _serialize_to_tensors(self):
        return checkpoint_tensors(self)

    def _restore_from_tensors(self, restored_tensors):
        with ops.name_scope(f"{self._name}_restore"):
            return restore_checkpoint_tensors(self, restored_tensors)

    # --- properties ----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def dtype(self):
        return tf.float32

    @property
    def key_dtype(self):
        return self._key_dtype

    @property
    def name(self) -> str:
        return self._name

    @property
    def optimizer(self):
        """The SparseOptimizer config the table was created for, or None."""
        return self._optimizer

    @property
    def slot_names(self) -> tuple:
        return self._optimizer.slot_names if self._optimizer else ()

    @property
    def handle(self):
        """The resource handle (watch it in a GradientTape to get row gradients)."""
        return self.resource_handle

    # --- ops -----------------------------------------------------------------------------
    def _keys(self, keys, what="ids"):
        if not isinstance(keys, (tf.Tensor, tf.SparseTensor, tf.RaggedTensor)) and not (
            hasattr(keys, "dtype") and tf.as_dtype(keys.dtype).is_integer
        ):
            try:
                keys = tf.convert_to_tensor(keys, dtype=self._key_dtype)
            except (TypeError, ValueError):
                keys = tf.convert_to_tensor(keys)
        keys = tf.convert_to_tensor(keys)
        if keys.dtype not in KEY_DTYPES:
            raise _invalid(f"{what} must be int32 or int64, got {keys.dtype.name}")
        return keys

    def lookup(self, ids, insert_missing=False, step=None, name=None):
        """Rows of ``ids``, shape ``ids.shape + [dim]``.

        With ``insert_missing`` unseen ids are inserted with their initializer row and
        every occurrence is counted in the id's frequency, ``step`` (int64, default 0)
        recorded as its last step.
        """
        ids = self._keys(ids)
        with ops.name_scope(name, f"{self._name}_lookup"):
            if insert_missing:
                step = tf.constant(0, tf.int64) if step is None else _integer(step, "step")
                return self._ops.graphopt_ev_find_or_insert(self.resource_handle, ids, step, dim=self._dim)
            return self._ops.graphopt_ev_find(self.resource_handle, ids, dim=self._dim)

    def insert(self, keys, values, name=None):
        """Assigns ``values`` (``keys.shape + [dim]``) to ``keys``, inserting missing keys."""
        keys = self._keys(keys, "keys")
        values = tf.convert_to_tensor(values, tf.float32)
        expected = keys.shape.concatenate([self._dim])
        if not values.shape.is_compatible_with(expected):
            raise _invalid(f"values must have shape keys.shape + [dim] = {expected}, got {values.shape}")
        with ops.name_scope(name, f"{self._name}_insert"):
            return self._ops.graphopt_ev_insert(self.resource_handle, keys, values, dim=self._dim)

    def remove(self, keys, name=None):
        """Removes ``keys``; absent keys are ignored."""
        keys = self._keys(keys, "keys")
        with ops.name_scope(name, f"{self._name}_remove"):
            return self._ops.graphopt_ev_remove(self.resource_handle, keys)

    def export(self, name=None):
        """(keys int64 [n], values float32 [n, dim], freqs int64 [n], versions int64 [n])."""
        return self.export_with_slots(name)[:4]

    def export_with_slots(self, name=None):
        """export() plus {slot name: float32 [n, dim]}, one consistent snapshot."""
        return self._snapshot(name)[:5]

    def _snapshot(self, name=None):
        """export_with_slots() plus the admission counters (pending keys, their counts; with
        admission='bloom' the filter: a header (bloom_counters, bloom_hashes), then
        (counter index, value) per nonzero counter)."""
        with ops.name_scope(name, f"{self._name}_export"):
            out = self._ops.graphopt_ev_export_with_slots(
                self.resource_handle, dim=self._dim, num_slots=len(self.slot_names)
            )
        return (
            out.keys,
            out.values,
            out.freqs,
            out.versions,
            dict(zip(self.slot_names, out.slots, strict=False)),
            (out.pending_keys, out.pending_counts),
        )

    def import_(self, keys, values, freqs=None, versions=None, slots=None, pending=None, name=None):
        """Replaces the whole content; freqs and versions default to zeros; slots
        ({name: [n, dim]}) default to the optimizer's initial values; pending (keys,
        counts) restores the admission counters of keys without a row (admission='bloom':
        the filter as _snapshot() gives it; empty arrays start an empty filter)."""
        keys = tf.convert_to_tensor(keys, tf.int64)
        values = tf.convert_to_tensor(values, tf.float32)
        zeros = tf.zeros_like(keys)
        freqs = zeros if freqs is None else tf.convert_to_tensor(freqs, tf.int64)
        versions = zeros if versions is None else tf.convert_to_tensor(versions, tf.int64)
        slots = slots or {}
        if slots and set(slots) != set(self.slot_names):
            raise _invalid(
                f"slots {sorted(slots)} do not match the slots "
                f"{list(self.slot_names)} of optimizer "
                f"'{self._optimizer.name if self._optimizer else ''}'"
            )
        slot_values = [tf.convert_to_tensor(slots[n], tf.float32) for n in self.slot_names] if slots else []
        with ops.name_scope(name, f"{self._name}_import"):
            if not slot_values and pending is None:
                return self._ops.graphopt_ev_import(
                    self.resource_handle, keys, values, freqs, versions, dim=self._dim
                )
            empty = tf.zeros([0], tf.int64)
            pending_keys, pending_counts = (empty, empty) if pending is None else pending
            return self._ops.graphopt_ev_import_with_slots(
                self.resource_handle,
                keys,
                values,
                freqs,
                versions,
                slot_values,
                tf.convert_to_tensor(pending_keys, tf.int64),
                tf.convert_to_tensor(pending_counts, tf.int64),
                dim=self._dim,
                optimizer=self._optimizer.name if slot_values else "",
            )

    def restore_from(self, checkpoint, key, name=None):
        """Imports the table saved under checkpoint ``key`` (e.g. ``emb/.ATTRIBUTES/table``
        or a TF1 op name) from a checkpoint path or prefix, slots included when it holds
        this optimizer's; a checkpoint without slots (written by a table without an
        optimizer, or before slots existed) gives fresh slots. Slots of another optimizer
        raise InvalidArgumentError. (tf.train.Checkpoint/Saver restore every tensor the
        table saves, so they need a checkpoint with the same optimizer.)"""
        reader = tf.train.load_checkpoint(checkpoint)
        first = contract.table_tensor_names(key)[0]
        if not reader.has_tensor(first):
            raise _invalid(f"checkpoint {checkpoint} holds no table '{key}' ({first} missing)")
        slot_prefix = contract.slot_tensor_name(key, "")
        saved = sorted(
            k[len(slot_prefix) :] for k in reader.get_variable_to_shape_map() if k.startswith(slot_prefix)
        )
        if saved and saved != sorted(self.slot_names):
            raise _invalid(
                f"checkpoint table '{key}' holds slots {saved}, but this table's "
                f"optimizer keeps {list(self.slot_names)}; restore it into a table "
                "with the same optimizer"
            )
        get = reader.get_tensor
        slots = {n: get(contract.slot_tensor_name(key, n)) for n in self.slot_names} if saved else None
        return self.import_(*map(get, contract.table_tensor_names(key)), slots=slots, name=name)

    def apply_gradients(self, keys_or_slices, grads=None, step=None, name=None):
        """One sparse optimizer step with the table's optimizer.

        ``keys_or_slices``: the ``tf.IndexedSlices`` of ``tape.gradient(loss, ev.handle)``,
        or keys (any shape) with ``grads`` (``keys.shape + [dim]``). Gradients of a key
        repeated in the batch are summed first; keys without a row (not admitted yet,
        evicted, never inserted) are skipped. ``step``: the integer training step, needed
        by Adam (1-based, bias correction) and by a learning-rate schedule.
        """
        if self._optimizer is None:
            raise _invalid(
                f"EmbeddingVariable '{self._name}' was created without an optimizer; "
                "pass optimizer= ('sgd', 'adagrad', 'adam', 'ftrl' or a config)"
            )
        if isinstance(keys_or_slices, tf.IndexedSlices):
            if grads is not None:
                raise _invalid("pass either IndexedSlices or keys and grads, not both")
            keys, grads = keys_or_slices.indices, keys_or_slices.values
        elif grads is None:
            raise _invalid("apply_gradients needs IndexedSlices or keys and grads")
        else:
            keys = keys_or_slices
        keys = self._keys(keys, "keys")
        grads = tf.convert_to_tensor(grads)
        if grads.dtype != tf.float32:
            raise _invalid(f"grads must be float32, got {grads.dtype.name}")
        expected = keys.shape.concatenate([self._dim])
        if not grads.shape.is_compatible_with(expected):
            raise _invalid(f"grads must have shape keys.shape + [dim] = {expected}, got {grads.shape}")
        if step is not None:
            step = _integer(step, "step")
        with ops.name_scope(name, f"{self._name}_apply"):
            return self._optimizer.apply(
                self._ops,
                self.resource_handle,
                tf.reshape(keys, [-1]),
                tf.reshape(grads, [-1, self._dim]),
                self._dim,
                step,
            )

    def evict(self, step=0, ttl=0, min_freq=0, max_rows=0, policy=None, name=None):
        """Removes rows last used more than ``ttl`` steps before ``step``, rows seen fewer
        than ``min_freq`` times, then the least recently (``policy='lfu'``: least
        frequently) used rows until at most ``max_rows`` remain (0 disables a rule).
        Returns the evicted keys (int64 [m])."""
        policy = policy or ("lfu" if self._evict_policy == "lfu" else "lru")
        if policy not in ("lru", "lfu"):
            raise _invalid(f"policy must be 'lru' or 'lfu', got {policy!r}")
        args = [
            _integer(v, label)
            for v, label in ((step, "step"), (ttl, "ttl"), (min_freq, "min_freq"), (max_rows, "max_rows"))
        ]
        with ops.name_scope(name, f"{self._name}_evict"):
            return self._ops.graphopt_ev_evict(self.resource_handle, *args, policy=policy)

    def stats(self, name=None) -> dict:
        """{size, admitted, evicted, pending, bytes} as int64 scalars: keys held, keys
        admitted by find-or-insert, keys evicted (evict() and the row cap), keys counted
        but not admitted yet (admission='bloom': the filter's estimate of the distinct keys
        it counted), bytes held (the filter's included)."""
        out = self._ops.graphopt_ev_stats(self.resource_handle, name=name)
        return {
            "size": out.size,
            "admitted": out.admitted,
            "evicted": out.evicted,
            "pending": out.pending,
            "bytes": out.bytes_used,
        }

    def size(self, name=None):
        """Number of keys (int64 scalar)."""
        return self._ops.graphopt_ev_size(self.resource_handle, name=name)

    def memory(self, name=None):
        """(bytes_used, capacity): bytes the table holds, keys it holds before growing."""
        return self._ops.graphopt_ev_memory(self.resource_handle, name=name)


def checkpoint_tensors(variable) -> dict:
    """Checkpoint suffix -> tensor: -keys/-values/-freqs/-versions, -slot-<name> per slot
    and, with admission (min_count > 1), -pending-keys/-pending-counts (admission='bloom':
    -bloom-index/-bloom-counts, the filter). A table without optimizer or admission saves
    what it saved before slots existed."""
    if not variable.slot_names and variable._min_count <= 1:
        return dict(zip(map(contract.suffix, contract.TABLE_TENSORS), variable.export(), strict=True))
    keys, values, freqs, versions, slots, pending = variable._snapshot()
    tensors = dict(
        zip(map(contract.suffix, contract.TABLE_TENSORS), (keys, values, freqs, versions), strict=True)
    )
    tensors.update({contract.suffix(contract.SLOT_TENSOR + n): t for n, t in slots.items()})
    if variable._min_count > 1:
        names = contract.BLOOM_TENSORS if variable._admission == "bloom" else contract.PENDING_TENSORS
        tensors.update(dict(zip(map(contract.suffix, names), pending, strict=True)))
    return tensors


def restore_checkpoint_tensors(variable, tensors: dict):
    slots = {
        n: tensors[contract.suffix(contract.SLOT_TENSOR + n)]
        for n in variable.slot_names
        if contract.suffix(contract.SLOT_TENSOR + n) in tensors
    }
    pending = next(
        (
            (tensors[contract.suffix(a)], tensors[contract.suffix(b)])
            for a, b in (contract.PENDING_TENSORS, contract.BLOOM_TENSORS)
            if contract.suffix(a) in tensors
        ),
        None,
    )
    return variable.import_(
        *(tensors[contract.suffix(p)] for p in contract.TABLE_TENSORS), slots=slots or None, pending=pending
    )


class _EmbeddingVariableSaveable(saveable_object.SaveableObject):
    """TF1 Saver support: saves the table as <name>-keys/-values/-freqs/-versions and
    <name>-slot-<slot name>."""

    def __init__(self, variable, name):
        tensors = checkpoint_tensors(variable)
        self._suffixes = list(tensors)
        specs = [saveable_object.SaveSpec(t, "", f"{name}{suffix}") for suffix, t in tensors.items()]
        super().__init__(variable, specs, name)

    def restore(self, restored_tensors, restored_shapes):
        del restored_shapes
        with ops.colocate_with(self.op.resource_handle):
            return restore_checkpoint_tensors(
                self.op, dict(zip(self._suffixes, restored_tensors, strict=False))
            )


@ops.RegisterGradient(contract.FIND.name)
def _find_grad(op, grad):
    """Row gradients as IndexedSlices keyed by id (the ids are the slice indices)."""
    return [_row_slices(op, grad), None]


@ops.RegisterGradient(contract.FIND_OR_INSERT.name)
def _find_or_insert_grad(op, grad):
    return [_row_slices(op, grad), None, None]


def _row_slices(op, grad):
    dim = op.get_attr("dim")
    values = tf.reshape(grad, [-1, dim])
    indices = tf.reshape(tf.cast(op.inputs[1], tf.int64), [-1])
    return tf.IndexedSlices(values, indices)
