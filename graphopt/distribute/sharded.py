"""ShardedEmbeddingVariable: one logical EmbeddingVariable split over N table resources, each
placed on a parameter-server task of TensorFlow's own distributed runtime.

Routing: a key goes to shard ``((fmix64(key) >> 32) & (2**26 - 1)) * N >> 26``, the murmur3
finalizer the table itself hashes with, reduced by multiply-shift on hash bits 32..57. The table
picks its 64 internal shards from the top 6 bits (58..63) and its home slot from the low 32, so
routing shares no bit with either: a PS shard's keys still spread over the table's own shards
and slots. Sequential ids spread like random ones (not ``key mod N``).

A lookup or sparse apply splits the batch per shard with ``tf.dynamic_partition`` (batch order
kept inside each part), runs each part under ``tf.device`` of its shard (where the table lives),
and ``tf.dynamic_stitch`` puts the rows back in batch order. A key's gradients are summed in
batch order on its shard exactly as the single table sums them, so training steps are
bit-identical to one EmbeddingVariable.

Checkpoint: the shards save as ONE logical table, the tensors a single EmbeddingVariable saves
(``K-keys/-values/-freqs/-versions``, ``-slot-<name>``, ``-pending-keys/-counts``), every
shard's export concatenated. Restoring re-routes every key, so a checkpoint restores into any
number of shards (N -> M) and into a plain ``EmbeddingVariable`` (a serving model on one
machine); a plain table's checkpoint restores into a sharded one the same way.
"""

import tensorflow as tf
from tensorflow.python.checkpoint import saveable_compat
from tensorflow.python.eager import context
from tensorflow.python.framework import ops
from tensorflow.python.trackable import base as trackable
from tensorflow.python.training.saving import saveable_object

from graphopt.ev import contract
from graphopt.ops.embedding_variable import (
    EmbeddingVariable,
    _invalid,
    checkpoint_tensors,
    restore_checkpoint_tensors,
)

# A table's checkpoint tensors, named after its key: -keys, -values, ...; admission's pending keys.
_TABLE = tuple(map(contract.suffix, contract.TABLE_TENSORS))
_KEYS = _TABLE[0]
_PENDING = tuple(map(contract.suffix, contract.PENDING_TENSORS))

_FMIX_C1 = 0xFF51AFD7ED558CCD
_FMIX_C2 = 0xC4CEB9FE1A85EC53
_ROUTE_BITS = 26  # hash bits 32..57: below the table's shard bits, above its home-slot bits


def ps_devices(num_shards: int, num_ps: int | None = None, job: str = "ps") -> list:
    """Devices of ``num_shards`` shards over ``num_ps`` PS tasks (default one shard per task),
    shard i on task ``i % num_ps``."""
    num_ps = num_ps or num_shards
    return [f"/job:{job}/replica:0/task:{i % num_ps}/device:CPU:0" for i in range(num_shards)]


def fmix64(keys):
    """murmur3's 64-bit finalizer of int32/int64 keys as uint64, bit for bit the table's Hash()."""
    h = tf.bitcast(tf.cast(keys, tf.int64), tf.uint64)
    c1, c2, s = (tf.constant(c, tf.uint64) for c in (_FMIX_C1, _FMIX_C2, 33))
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, s)) * c1
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, s)) * c2
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, s))


def shard_of(keys, num_shards: int):
    """The shard (int32, keys' shape) each key is routed to among ``num_shards``."""
    bits = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(fmix64(keys), tf.constant(32, tf.uint64)),
        tf.constant((1 << _ROUTE_BITS) - 1, tf.uint64),
    )
    shard = tf.bitwise.right_shift(
        bits * tf.constant(num_shards, tf.uint64), tf.constant(_ROUTE_BITS, tf.uint64)
    )
    return tf.cast(shard, tf.int32)


@saveable_compat.legacy_saveable_name("table")
class ShardedEmbeddingVariable(trackable.Trackable):
    """An EmbeddingVariable split over ``num_shards`` tables, shard i on ``devices[i]``.

    Takes EmbeddingVariable's arguments (``dim``, ``optimizer``, ``initializer``, ``seed``,
    ``min_count``, ...); each shard is an EmbeddingVariable named ``<name>_part_<i>``.
    ``devices`` defaults to one shard per PS task (``ps_devices``). Rows are a function of
    (seed, key) only, so a key's row does not depend on its shard. ``max_rows`` caps each
    shard.
    """

    def __init__(self, dim, num_shards=None, devices=None, name="embedding_variable", **kwargs):
        if devices is None:
            if num_shards is None:
                raise _invalid("pass num_shards or devices")
            devices = ps_devices(num_shards)
        devices = list(devices)
        num_shards = len(devices) if num_shards is None else num_shards
        if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
            raise _invalid(f"num_shards must be a positive int, got {num_shards!r}")
        if len(devices) != num_shards:
            raise _invalid(f"{num_shards} shards need {num_shards} devices, got {len(devices)}")
        if "shared_name" in kwargs and kwargs["shared_name"]:
            raise _invalid("a sharded table names its shards itself; shared_name is not supported")
        self._devices = devices
        self._name = name
        shards = []
        for i, device in enumerate(devices):
            with tf.device(device):
                shards.append(EmbeddingVariable(dim, name=f"{name}_part_{i}", **kwargs))
        self._shards = tuple(shards)
        if not context.executing_eagerly():
            # The TF1 Saver saves the logical table once, not every part.
            saveables = ops.get_collection_ref(ops.GraphKeys.SAVEABLE_OBJECTS)
            saveables[:] = [s for s in saveables if getattr(s, "op", None) not in self._shards]
            ops.add_to_collection(ops.GraphKeys.SAVEABLE_OBJECTS, _ShardedSaveable(self, name))

    # --- properties ----------------------------------------------------------------------
    @property
    def num_shards(self) -> int:
        return len(self._shards)

    @property
    def shards(self) -> tuple:
        return self._shards

    @property
    def devices(self) -> list:
        return list(self._devices)

    @property
    def dim(self) -> int:
        return self._shards[0].dim

    @property
    def name(self) -> str:
        return self._name

    @property
    def slot_names(self) -> tuple:
        return self._shards[0].slot_names

    @property
    def handles(self) -> list:
        """The shards' resource handles; watch them in a GradientTape for row gradients."""
        return [s.handle for s in self._shards]

    # --- routing -------------------------------------------------------------------------
    def _partition(self, keys, *tensors):
        """Per shard: (keys, batch positions, each of ``tensors``' rows), batch order kept."""
        n = self.num_shards
        which = shard_of(keys, n)
        positions = tf.range(tf.size(keys, out_type=tf.int32))
        parts = [tf.dynamic_partition(t, which, n) for t in (keys, positions, *tensors)]
        return list(zip(*parts, strict=True))

    # --- ops -----------------------------------------------------------------------------
    def lookup(self, ids, insert_missing=False, step=None, name=None):
        """Rows of ``ids`` (``ids.shape + [dim]``), each shard's part looked up on its device."""
        ids = self._shards[0]._keys(ids)
        with ops.name_scope(name, f"{self._name}_lookup"):
            flat = tf.reshape(ids, [-1])
            rows, positions = [], []
            for shard, device, (keys, pos) in zip(
                self._shards, self._devices, self._partition(flat), strict=True
            ):
                with tf.device(device):
                    rows.append(shard.lookup(keys, insert_missing=insert_missing, step=step))
                positions.append(pos)
            stitched = tf.dynamic_stitch(positions, rows)
            return tf.reshape(stitched, tf.concat([tf.shape(ids), [self.dim]], 0))

    def insert(self, keys, values, name=None):
        keys = tf.reshape(self._shards[0]._keys(keys, "keys"), [-1])
        values = tf.reshape(tf.convert_to_tensor(values, tf.float32), [-1, self.dim])
        return self._per_shard(keys, values, lambda s, k, v: s.insert(k, v), name, "insert")

    def remove(self, keys, name=None):
        keys = tf.reshape(self._shards[0]._keys(keys, "keys"), [-1])
        return self._per_shard(keys, None, lambda s, k, _: s.remove(k), name, "remove")

    def apply_gradients(self, keys_or_slices, grads=None, step=None, name=None):
        """One sparse optimizer step. ``keys_or_slices``: the list of per-shard
        ``tf.IndexedSlices`` of ``tape.gradient(loss, sev.handles)`` (each applied on its
        shard), or keys with ``grads`` (routed like a lookup)."""
        if isinstance(keys_or_slices, (list, tuple)):
            if grads is not None or len(keys_or_slices) != self.num_shards:
                raise _invalid(
                    f"pass {self.num_shards} IndexedSlices (one per shard, from "
                    "tape.gradient(loss, handles)) or keys and grads"
                )
            updates = []
            with ops.name_scope(name, f"{self._name}_apply"):
                for shard, device, g in zip(self._shards, self._devices, keys_or_slices, strict=True):
                    if g is None:  # a shard no id of the batch reached in this graph
                        continue
                    with tf.device(device):
                        updates.append(shard.apply_gradients(g, step=step))
            return tf.group(updates) if not context.executing_eagerly() else None
        if isinstance(keys_or_slices, tf.IndexedSlices):
            keys_or_slices, grads = keys_or_slices.indices, keys_or_slices.values
        if grads is None:
            raise _invalid("apply_gradients needs per-shard IndexedSlices or keys and grads")
        keys = tf.reshape(self._shards[0]._keys(keys_or_slices, "keys"), [-1])
        grads = tf.reshape(tf.convert_to_tensor(grads, tf.float32), [-1, self.dim])
        return self._per_shard(keys, grads, lambda s, k, g: s.apply_gradients(k, g, step=step), name, "apply")

    def _per_shard(self, keys, rows, fn, name, what):
        with ops.name_scope(name, f"{self._name}_{what}"):
            extra = () if rows is None else (rows,)
            results = []
            for shard, device, part in zip(
                self._shards, self._devices, self._partition(keys, *extra), strict=True
            ):
                with tf.device(device):
                    results.append(fn(shard, part[0], part[2] if rows is not None else None))
            if context.executing_eagerly():
                return None
            return tf.group([r for r in results if r is not None])

    def size(self, name=None):
        """Keys held by all shards (int64 scalar)."""
        sizes = []
        for shard, device in zip(self._shards, self._devices, strict=True):
            with tf.device(device):
                sizes.append(shard.size())
        return tf.add_n(sizes, name=name)

    def shard_sizes(self):
        """Keys held by each shard (int64 [num_shards])."""
        sizes = []
        for shard, device in zip(self._shards, self._devices, strict=True):
            with tf.device(device):
                sizes.append(shard.size())
        return tf.stack(sizes)

    def evict(self, step=0, ttl=0, min_freq=0, max_rows=0, policy=None, name=None):
        """EmbeddingVariable.evict on every shard, on its PS; returns the evicted keys. The
        ``ttl`` and ``min_freq`` rules are per key, so they evict exactly what one table would;
        ``max_rows`` is split evenly over the shards (like the table's own row cap), each
        keeping its least recently (lfu: least frequently) used rows down to its share."""
        n = self.num_shards
        evicted = []
        with ops.name_scope(name, f"{self._name}_evict"):
            for i, (shard, device) in enumerate(zip(self._shards, self._devices, strict=True)):
                share = 0 if not max_rows else max_rows // n + int(i < max_rows % n)
                if max_rows and share == 0:
                    raise _invalid(f"max_rows {max_rows} leaves shard {i} of {n} no row; use 0 or >= {n}")
                with tf.device(device):
                    evicted.append(shard.evict(step, ttl, min_freq, share, policy))
            return tf.concat(evicted, 0)

    def stats(self) -> dict:
        """EmbeddingVariable.stats summed over the shards (int64 scalars)."""
        per_shard = []
        for shard, device in zip(self._shards, self._devices, strict=True):
            with tf.device(device):
                per_shard.append(shard.stats())
        return {k: tf.add_n([s[k] for s in per_shard]) for k in per_shard[0]}

    def export(self):
        """(keys, values, freqs, versions) of every shard, concatenated (one logical table)."""
        t = self._checkpoint_tensors()
        return tuple(t[s] for s in _TABLE)

    def restore_from(self, checkpoint, key, name=None):
        """Imports the table saved under checkpoint ``key`` (one logical table: a plain
        EmbeddingVariable's, a sharded one's with any number of shards, or a rewritten model's
        ``variables/variables``), every key re-routed to its shard. Like
        ``EmbeddingVariable.restore_from``: slots when the checkpoint holds this optimizer's,
        fresh slots when it holds none, InvalidArgumentError for another optimizer's."""
        reader = tf.train.load_checkpoint(checkpoint)
        if not reader.has_tensor(key + _KEYS):
            raise _invalid(f"checkpoint {checkpoint} holds no table '{key}' ({key + _KEYS} missing)")
        names = reader.get_variable_to_shape_map()
        slot_prefix = contract.slot_tensor_name(key, "")
        saved = sorted(k[len(slot_prefix) :] for k in names if k.startswith(slot_prefix))
        if saved and saved != sorted(self.slot_names):
            raise _invalid(
                f"checkpoint table '{key}' holds slots {saved}, but this table's optimizer keeps "
                f"{list(self.slot_names)}; restore it into a table with the same optimizer"
            )
        suffixes = [*_TABLE, *(contract.suffix(contract.SLOT_TENSOR + n) for n in saved)]
        if key + _PENDING[0] in names and self._shards[0]._min_count > 1:
            suffixes += _PENDING
        with ops.name_scope(name, f"{self._name}_restore_from"):
            return self._restore_tensors({s: reader.get_tensor(f"{key}{s}") for s in suffixes})

    # --- checkpoint: one logical table ---------------------------------------------------
    def _checkpoint_tensors(self) -> dict:
        parts = []
        for shard, device in zip(self._shards, self._devices, strict=True):
            with tf.device(device):
                parts.append(checkpoint_tensors(shard))
        return {suffix: tf.concat([p[suffix] for p in parts], 0) for suffix in parts[0]}

    def _restore_tensors(self, tensors: dict):
        """Re-routes every saved key (rows, slots, counters) to its shard and imports there."""
        tensors = dict(tensors)
        row_suffixes = [s for s in tensors if s not in (_KEYS, *_PENDING)]
        keys = tf.convert_to_tensor(tensors[_KEYS], tf.int64)
        rows = self._partition(keys, *[tensors[s] for s in row_suffixes])
        pending = None
        if _PENDING[0] in tensors:
            pending = self._partition(
                tf.convert_to_tensor(tensors[_PENDING[0]], tf.int64), tensors[_PENDING[1]]
            )
        restores = []
        for i, (shard, device) in enumerate(zip(self._shards, self._devices, strict=True)):
            part = {_KEYS: rows[i][0]}
            part.update({s: rows[i][2 + j] for j, s in enumerate(row_suffixes)})
            if pending is not None:
                part[_PENDING[0]], part[_PENDING[1]] = pending[i][0], pending[i][2]
            with tf.device(device):
                restores.append(restore_checkpoint_tensors(shard, part))
        if context.executing_eagerly():
            return None
        return tf.group([r for r in restores if r is not None])

    # --- checkpoint: one file per shard, written and read on the PS tasks ------------------
    def save_parts(self, prefix, name=None):
        """Writes shard i as ``<prefix>-part-<i>-of-<N>`` (a tensor bundle: ``table-keys``,
        ``-values``, ``-freqs``, ``-versions``, ``-slot-<name>``, ``-pending-*``), each with
        ``SaveV2`` on the shard's own device, so no task ever holds more than its shard (the
        prefix must be on a filesystem every PS task writes to). Returns the part prefixes
        (eagerly) or the save op (in a graph)."""
        n, saves, prefixes = self.num_shards, [], []
        with ops.name_scope(name, f"{self._name}_save_parts"):
            for i, (shard, device) in enumerate(zip(self._shards, self._devices, strict=True)):
                part = f"{prefix}-part-{i}-of-{n}"
                with tf.device(device):
                    tensors = checkpoint_tensors(shard)
                    saves.append(
                        tf.raw_ops.SaveV2(
                            prefix=part,
                            tensor_names=[f"table{k}" for k in tensors],
                            shape_and_slices=[""] * len(tensors),
                            tensors=list(tensors.values()),
                        )
                    )
                prefixes.append(part)
        return prefixes if context.executing_eagerly() else tf.group(saves)

    def restore_parts(self, prefix, name=None):
        """Restores what ``save_parts`` wrote with any number of shards: old part i is read on
        one of this table's devices, split by this table's routing, and every shard imports the
        pieces routed to it (the whole content is replaced)."""
        import glob

        found = sorted(glob.glob(f"{glob.escape(prefix)}-part-*-of-*.index"))
        if not found:
            raise _invalid(f"no parts {prefix}-part-<i>-of-<n> found; write them with save_parts")
        count = int(found[0][: -len(".index")].rsplit("-of-", 1)[1])
        parts = [f"{prefix}-part-{i}-of-{count}" for i in range(count)]
        missing = [p for p in parts if not tf.io.gfile.exists(p + ".index")]
        if missing:
            raise _invalid(f"checkpoint parts missing: {', '.join(missing)}")
        reader = tf.train.load_checkpoint(parts[0])
        dtypes = reader.get_variable_to_dtype_map()
        names = sorted(dtypes)
        pieces = []  # per old part: {suffix: [tensor routed to new shard j for each j]}
        with ops.name_scope(name, f"{self._name}_restore_parts"):
            for i, part in enumerate(parts):
                with tf.device(self._devices[i % self.num_shards]):
                    values = tf.raw_ops.RestoreV2(
                        prefix=part,
                        tensor_names=names,
                        shape_and_slices=[""] * len(names),
                        dtypes=[dtypes[k] for k in names],
                    )
                    tensors = {k[len("table") :]: v for k, v in zip(names, values, strict=True)}
                    rows = [s for s in tensors if s not in (_KEYS, *_PENDING)]
                    routed = self._partition(tensors[_KEYS], *[tensors[s] for s in rows])
                    piece = {_KEYS: [r[0] for r in routed]}
                    piece.update({s: [r[2 + j] for r in routed] for j, s in enumerate(rows)})
                    if _PENDING[0] in tensors:
                        pending = self._partition(tensors[_PENDING[0]], tensors[_PENDING[1]])
                        piece[_PENDING[0]] = [r[0] for r in pending]
                        piece[_PENDING[1]] = [r[2] for r in pending]
                    pieces.append(piece)
            restores = []
            for j, (shard, device) in enumerate(zip(self._shards, self._devices, strict=True)):
                with tf.device(device):
                    merged = {s: tf.concat([p[s][j] for p in pieces], 0) for s in pieces[0]}
                    restores.append(restore_checkpoint_tensors(shard, merged))
        return None if context.executing_eagerly() else tf.group([r for r in restores if r is not None])

    def _serialize_to_tensors(self):
        return self._checkpoint_tensors()

    def _restore_from_tensors(self, restored_tensors):
        with ops.name_scope(f"{self._name}_restore"):
            return self._restore_tensors(restored_tensors)


class _ShardedSaveable(saveable_object.SaveableObject):
    """TF1 Saver support: the logical table as <name>-keys/-values/... (like one table)."""

    def __init__(self, variable, name):
        tensors = variable._checkpoint_tensors()
        self._suffixes = list(tensors)
        specs = [saveable_object.SaveSpec(t, "", f"{name}{suffix}") for suffix, t in tensors.items()]
        super().__init__(variable, specs, name)

    def restore(self, restored_tensors, restored_shapes):
        del restored_shapes
        return self.op._restore_tensors(dict(zip(self._suffixes, restored_tensors, strict=True)))
