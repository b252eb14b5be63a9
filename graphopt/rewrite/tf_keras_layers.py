"""The tf_keras layers that own a converted table, and how ``tf_keras.models.load_model`` revives
them from the rewritten SavedModel (docs/training.md, "tf_keras SavedModels").

An ``Embedding`` (the layer holding exactly one table, as its ``embeddings``) of a model compiled
with an optimizer that has a sparse counterpart is revived as ``graphopt>DynamicEmbedding``
(graphopt.tf_keras): its keras_metadata entry gets that class and a config carrying the model's
optimizer, and the checkpoint gets the table's optimizer slots at their initial values beside
its rows (``K-slot-<name>``; tf_keras' SavedModel loader starts the model's optimizer afresh
too), so ``fit`` after ``import graphopt`` trains the rows and inserts new ids. Any other layer
holding its tables as direct children (``DenseFeatures`` of feature columns) is revived as
``graphopt>SavedTables`` (graphopt.tf_keras.saved_tables), which trains them through the layer's
saved call function. A layer whose table is shared with another, or held in nested objects, loses
its config and is revived from the SavedModel: it serves and predicts, but ``fit`` leaves its rows
(the plan notes say which and why).
"""

import dataclasses

import numpy as np

from graphopt.analysis.tables import TableCandidate
from graphopt.graph import keras_metadata
from graphopt.graph import meta_graphs as mg_lib
from graphopt.graph import object_graphs as og_lib

DYNAMIC_EMBEDDING = "graphopt>DynamicEmbedding"
SAVED_TABLES = "graphopt>SavedTables"
# Embedding config entries the dynamic layer takes as they are.
_KEPT = (
    "name",
    "trainable",
    "dtype",
    "output_dim",
    "embeddings_initializer",
    "mask_zero",
    "embeddings_regularizer",
)


@dataclasses.dataclass
class TableLayer:
    """A tf_keras layer owning a converted table."""

    node_id: int
    name: str
    class_name: str
    tables: list[TableCandidate]
    config: dict | None = None  # the config of the graphopt class it is revived as, if any
    revived_as: str = ""  # that class
    reason: str = ""  # why fit cannot train it (revived from the SavedModel)
    slots: dict = dataclasses.field(default_factory=dict)  # slot name -> initial value
    children: list = dataclasses.field(default_factory=list)  # the tables' object-graph child names

    @property
    def trains(self) -> bool:
        return self.config is not None and self.config.get("optimizer") is not None


def plan(source, tables) -> list[TableLayer]:
    """The table layers of tf_keras SavedModel ``source`` (a graph.io model); [] for other models."""
    meta_graph = source.meta_graph
    if not mg_lib.has_object_graph(meta_graph) or any(len(t.handles) > 1 for t in tables):
        return []
    fields = keras_metadata.node_fields(source.path)
    ckpt = og_lib.read_object_graph(source.checkpoint_prefix) if fields is not None else None
    if fields is None or ckpt is None:
        return []
    optimizer, optimizer_problem = _optimizer(fields.get(0, {}).get("training_config"))
    og = og_lib.saved_object_graph(meta_graph)
    owners: dict[int, list] = {}
    for table in tables:
        ids = og_lib.objects_saved_under(ckpt, table.checkpoint_key)
        for node_id in keras_metadata.layers_owning(meta_graph, ids):
            if node_id in fields:  # a tf_keras layer, not one of its weight lists
                owners.setdefault(node_id, []).append(table)
    layers = []
    for node_id, owned in sorted(owners.items()):
        meta = fields.get(node_id, {})
        layer = TableLayer(node_id, meta.get("name", str(node_id)), meta.get("class_name", "?"), owned)
        children = og_lib.children(og, node_id)
        sharers = [
            o
            for o, tables_of in owners.items()
            if o != node_id and set(map(id, owned)) & set(map(id, tables_of))
        ]
        # The object-graph child name of each owned table, where the layer holds it directly.
        child_of = {}
        for table in owned:
            ids = og_lib.objects_saved_under(ckpt, table.checkpoint_key)
            names = [name for name, child in children.items() if child in ids]
            if names:
                child_of[table.name] = names[0]
        layer.children = [child_of[t.name] for t in owned if t.name in child_of]
        if sharers:
            layer.reason = "its table is shared with another layer"
        elif layer.class_name == "Embedding" and isinstance(meta.get("config"), dict):
            if len(owned) > 1 or child_of.get(owned[0].name) != "embeddings":
                layer.reason = "its table is not the layer's own embeddings"
            else:
                layer.revived_as = DYNAMIC_EMBEDDING
                layer.config = {k: meta["config"][k] for k in _KEPT if k in meta["config"]}
        elif len(child_of) == len(owned):
            layer.revived_as = SAVED_TABLES
            layer.config = {k: meta[k] for k in ("name", "trainable", "dtype") if k in meta}
            layer.config["tables"] = {
                child_of[t.name]: {"output_dim": t.dim, "embeddings_initializer": _column_initializer(t.dim)}
                for t in owned
            }
        else:
            layer.reason = f"its class {layer.class_name} holds its tables in nested objects"
        if layer.config is not None:
            # Without an optimizer it is still revived as the graphopt class, which warns at load
            # and at the first fit that it cannot train.
            layer.config["optimizer"] = optimizer
            layer.reason = optimizer_problem
            layer.slots = _initial_slots(optimizer) if optimizer is not None else {}
        layers.append(layer)
    return layers


def _column_initializer(dim) -> dict:
    """tf.feature_column.embedding_column's default initializer, for the rows of new ids."""
    return {"class_name": "TruncatedNormal", "config": {"mean": 0.0, "stddev": 1.0 / dim**0.5}}


def _optimizer(training_config):
    """(the tf_keras optimizer config the tables train with, why there is none)."""
    if not training_config or not training_config.get("optimizer_config"):
        return None, "the model was saved without a compiled optimizer"
    import tf_keras

    from graphopt.keras.layer import optimizer_config

    try:
        config = training_config["optimizer_config"]
        return optimizer_config(tf_keras.optimizers.deserialize(config), tf_keras), ""
    except ValueError as exc:
        return None, str(exc)


def _initial_slots(optimizer) -> dict:
    import tf_keras

    from graphopt.keras.layer import sparse_optimizer

    sparse = sparse_optimizer(optimizer, tf_keras)
    return dict(zip(sparse.slot_names, sparse.slot_init(), strict=True))


def notes(layers: list[TableLayer]) -> list[str]:
    """One plan note per table layer fit cannot train (or trains without part of what it had)."""
    out = []
    for layer in layers:
        if layer.config is not None and not layer.trains:
            out.append(
                f"tf_keras layer {layer.name}: not trainable after tf_keras.models.load_model "
                f"({layer.reason}); revived as {layer.revived_as} without an optimizer, it looks "
                "ids up find-only in fit (a warning at load and at the first fit says so)"
            )
        elif not layer.trains:
            out.append(
                f"tf_keras layer {layer.name}: not trainable after tf_keras.models.load_model "
                f"({layer.reason}); it is revived from the SavedModel, so fit trains the other "
                "layers and looks this one up find-only"
            )
        elif layer.config is not None and layer.config.get("embeddings_regularizer"):
            out.append(
                f"tf_keras layer {layer.name}: its embeddings_regularizer counts in the loss but "
                "its gradient is not applied when fit trains the dynamic table (a warning at load "
                "says so)"
            )
    return out


def slot_tensors(layers: list[TableLayer]) -> dict[str, np.ndarray]:
    """The checkpoint tensors the layers revived as DynamicEmbedding add: ``K-slot-<name>`` of
    their tables and their own weights (layer_weights)."""
    out = {key: value for *_, key, value in layer_weights(layers)}
    for layer in layers:
        for t in layer.tables:
            for name, value in layer.slots.items():
                out[f"{t.checkpoint_key}-slot-{name}"] = np.full((t.rows, t.dim), value, np.float32)
    return out


def _layer_weights(layer) -> tuple:
    """The graphopt layer's own weights, which the SavedModel does not have yet: (name, dtype,
    trainable); SavedTables has a trigger per table."""
    if layer.revived_as == SAVED_TABLES:
        triggers = tuple((f"update_trigger_{i}", "float", True) for i in range(len(layer.tables)))
    else:
        triggers = (("update_trigger", "float", True),)
    return (*triggers, ("iterations", "int64", False))


def layer_weights(layers: list[TableLayer]) -> list[tuple]:
    """(layer node id, weight name, dtype, trainable, checkpoint key, value) of the weights each
    layer revived as DynamicEmbedding adds: tf_keras' loader requires every weight of a layer
    revived from config to be in the checkpoint. Both start at 0, as a fresh optimizer does."""
    out = []
    for layer in layers:
        if layer.config is None:
            continue
        # Beside the layer's tables: a table saved as <layer path>/<child>/.ATTRIBUTES/VARIABLE_VALUE
        # gives the layer's path (stable across processes, unlike layer names).
        key, child = layer.tables[0].checkpoint_key or "", layer.children[0] if layer.children else ""
        tail = f"{child}/{_ATTRIBUTE_KEY}"
        base = key[: -len(tail)] if child and key.endswith(tail) else f"graphopt/node_{layer.node_id}/"
        for name, dtype, trainable in _layer_weights(layer):
            value = np.zeros((), np.float32 if dtype == "float" else np.int64)
            out.append((layer.node_id, name, dtype, trainable, f"{base}{name}/{_ATTRIBUTE_KEY}", value))
    return out


_ATTRIBUTE_KEY = ".ATTRIBUTES/VARIABLE_VALUE"


def revived_configs(layers: list[TableLayer]) -> dict[int, tuple[str, dict]]:
    return {layer.node_id: (layer.revived_as, layer.config) for layer in layers if layer.config is not None}
