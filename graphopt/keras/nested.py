"""Tables held inside other layers: keras-rs ``DistributedEmbedding`` and custom layers whose
``keras.layers.Embedding`` sublayers are attributes (or entries of dict/list attributes).

Pattern (a layer L of a model being converted):

    L (custom class) .attr = Embedding(V, D)            .tables = {"a": EmbedReduce(V, D, "mean")}
      ==>
    DynamicTables(L) .inner = L' (L rebuilt from its config),
                     L'.attr = DynamicEmbedding(D)   L'.tables = {"a": DynamicEmbedding(D, combiner="mean")}

``DynamicTables`` is a registered layer whose config is the inner layer's serialized config plus
the tables' options: it rebuilds the inner layer and swaps its Embeddings for DynamicEmbeddings
right after construction (before the inner layer builds them), so a saved ``.keras`` file loads
back the same way and the tables' rows restore into the dynamic layers. Calls go to the inner
layer unchanged. Embeddings a layer creates only in ``build`` are not reached (left static,
named in the conversion report's warnings).
"""

import math

import keras

from graphopt.keras.layer import DynamicEmbedding

_KERAS_RS_EMBED_REDUCE = "EmbedReduce"


def convertible(embedding) -> bool:
    """An Embedding whose lookup a DynamicEmbedding reproduces: exactly keras.layers.Embedding, or
    keras-rs' EmbedReduce (an Embedding followed by a sum/mean/sqrtn reduction)."""
    return type(embedding) is keras.layers.Embedding or (
        type(embedding).__name__ == _KERAS_RS_EMBED_REDUCE
        and type(embedding).__module__.startswith("keras_rs")
    )


def row_initializer(embedding):
    """The embedding's initializer as one a table applies to a single new row: a VarianceScaling
    (keras-rs' default, Glorot, He, ...) becomes the normal, truncated normal or uniform
    distribution it draws from for the embedding's [input_dim, output_dim] shape."""
    init = embedding.embeddings_initializer
    if not isinstance(init, keras.initializers.VarianceScaling):
        return init
    fan_in, fan_out = embedding.input_dim, embedding.output_dim
    fan = {"fan_in": fan_in, "fan_out": fan_out}.get(init.mode, (fan_in + fan_out) / 2.0)
    scale = init.scale / max(1.0, fan)
    seed = init.seed if isinstance(init.seed, int) else None
    if init.distribution == "truncated_normal":
        return keras.initializers.TruncatedNormal(0.0, math.sqrt(scale) / 0.87962566103423978, seed=seed)
    if init.distribution == "untruncated_normal":
        return keras.initializers.RandomNormal(0.0, math.sqrt(scale), seed=seed)
    limit = math.sqrt(3.0 * scale)
    return keras.initializers.RandomUniform(-limit, limit, seed=seed)


def nested_embeddings(layer):
    """[(path, owner, holder, key, embedding)]: the Embedding sublayers held in ``layer``'s
    attributes (directly, in dict or list attributes, or in non-model sublayers, recursively):
    ``getattr(owner, key)`` where the holder is the owner layer itself, else ``holder[key]``.
    Shared tables appear once."""
    found, seen = [], set()

    def walk(obj, prefix):
        stores = (
            [store for _, store in getattr(obj, "_tracker", None).config.values()]
            if hasattr(obj, "_tracker")
            else []
        )
        for name, value in sorted(vars(obj).items()):
            if any(value is store for store in stores) or name.startswith(("_tracker", "_self_")):
                continue  # Keras' own lists of every sublayer and variable, TF's dependency maps
            items = (
                value.items()
                if isinstance(value, dict)
                else enumerate(value)
                if isinstance(value, (list, tuple))
                else [(None, value)]
            )
            for key, item in items:
                path = prefix + ((name,) if key is None else (name, key))
                if isinstance(item, keras.layers.Embedding):
                    if id(item) not in seen:
                        seen.add(id(item))
                        holder = obj if key is None else value
                        found.append((path, obj, holder, name if key is None else key, item))
                elif isinstance(item, keras.layers.Layer) and not isinstance(item, keras.Model):
                    if id(item) not in seen:
                        seen.add(id(item))
                        walk(item, path)

    walk(layer, ())
    return found


def _replace(owner, holder, key, old, new):
    """Puts ``new`` where ``old`` was (``owner``'s attribute, or an entry of ``holder``, one of its
    dicts or lists) and untracks ``old``, whose weights would otherwise still be saved."""
    tracker = owner._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        if holder is owner:
            setattr(owner, key, new)
        else:
            holder[key] = new
            tracker.track(new)
        tracker.untrack(old)
    finally:
        if locked:
            tracker.lock()


@keras.saving.register_keras_serializable(package="graphopt")
class DynamicTables(keras.layers.Layer):
    """Runs ``layer`` (a layer or its serialized config) with its Embedding sublayers swapped for
    DynamicEmbeddings configured by ``optimizer``, ``min_count``, ``max_rows``, ``evict_policy``."""

    def __init__(self, layer, optimizer=None, min_count=0, max_rows=0, evict_policy="lru", **kwargs):
        inner = keras.saving.deserialize_keras_object(layer) if isinstance(layer, dict) else layer
        kwargs.setdefault("name", inner.name)
        super().__init__(**kwargs)
        self.options = {
            "optimizer": optimizer,
            "min_count": min_count,
            "max_rows": max_rows,
            "evict_policy": evict_policy,
        }
        self.inner = inner
        # path -> DynamicEmbedding; untracked (the tables are tracked where they sit in the inner layer)
        object.__setattr__(self, "tables", {})
        for path, owner, holder, key, embedding in nested_embeddings(inner):
            if not convertible(embedding):
                continue
            table = DynamicEmbedding(
                embedding.output_dim,
                embeddings_initializer=row_initializer(embedding),
                mask_zero=embedding.mask_zero,
                combiner=None if type(embedding) is keras.layers.Embedding else embedding.combiner,
                name=embedding.name,
                **self.options,
            )
            _replace(owner, holder, key, embedding, table)
            self.tables[path] = table

    def call(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.inner.compute_output_spec(*args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update({"layer": keras.saving.serialize_keras_object(self.inner), **self.options})
        return config
