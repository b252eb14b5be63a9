"""tf_keras' ``keras_metadata.pb``: the per-object JSON tf_keras revives its layers from.

Written back with a rewritten SavedModel so that ``tf_keras.models.load_model`` works. A layer
that owns a converted table must not be revived from its original config: that would rebuild it
(an ``Embedding`` creates a fresh ``tf.Variable``) and restore the EmbeddingVariable's checkpoint
entry into a plain variable. Such a layer either gets a new class and config (an ``Embedding``
becomes ``graphopt>DynamicEmbedding``, whose table restores the converted entry and trains) or
loses its config, and tf_keras revives it from the SavedModel itself: its weights are the loaded
objects (the EmbeddingVariables) and its call is the saved per-layer function, whose gathers the
rewrite replaced.
"""

import json
import os
from collections.abc import Iterable

from graphopt.errors import ModelError

FILENAME = "keras_metadata.pb"


def _proto():
    from tf_keras.protobuf import saved_metadata_pb2

    return saved_metadata_pb2


def layers_owning(meta_graph, object_ids: Iterable[int]) -> list[int]:
    """Ids of the object-graph nodes that hold one of ``object_ids`` as a direct child."""
    wanted = set(object_ids)
    return [
        i
        for i, node in enumerate(meta_graph.object_graph_def.nodes)
        if any(c.node_id in wanted for c in node.children)
    ]


def _read(source_path):
    """The source's SavedMetadata, or None when it has none (not a tf_keras model)."""
    src = os.path.join(source_path, FILENAME)
    if not os.path.isfile(src):
        return None
    metadata = _proto().SavedMetadata()
    try:
        with open(src, "rb") as f:
            metadata.ParseFromString(f.read())
    except Exception as exc:  # DecodeError: a damaged file is the user's to fix
        raise ModelError(f"{src} is not a tf_keras metadata file ({exc}); save the model again") from exc
    return metadata


def layer_names(source_path, layer_ids: Iterable[int]) -> list[str]:
    """Names tf_keras gives the layers ``layer_ids`` (object-graph node ids); [] without metadata."""
    metadata, ids = _read(source_path), set(layer_ids)
    if metadata is None:
        return []
    return [json.loads(n.metadata).get("name", n.node_path) for n in metadata.nodes if n.node_id in ids]


def node_fields(source_path) -> dict[int, dict] | None:
    """{object-graph node id: that node's metadata (the JSON tf_keras wrote)}; None without
    metadata (not a tf_keras model)."""
    metadata = _read(source_path)
    if metadata is None:
        return None
    return {n.node_id: json.loads(n.metadata) for n in metadata.nodes}


def write_without_configs(
    source_path, out_dir, layer_ids: Iterable[int], revived: dict[int, tuple[str, dict]] | None = None
) -> list[str]:
    """Copies ``keras_metadata.pb`` from ``source_path`` into ``out_dir``, dropping the config of
    the layers ``layer_ids`` (object-graph node ids), except those in ``revived`` ({node id:
    (class name, config)}), which get that class and config instead; returns the names of the
    layers left without a config.

    Nothing is written when the source has no metadata (not a tf_keras model).
    """
    metadata, ids, names, revived = _read(source_path), set(layer_ids), [], revived or {}
    if metadata is None:
        return []
    for node in metadata.nodes:
        if node.node_id in revived:
            fields = json.loads(node.metadata)
            fields["class_name"], fields["config"] = revived[node.node_id]
            fields["expects_training_arg"] = True
            node.metadata = json.dumps(fields)
        elif node.node_id in ids:
            fields = json.loads(node.metadata)
            fields.pop("config", None)
            names.append(fields.get("name", node.node_path))
            node.metadata = json.dumps(fields)
    with open(os.path.join(out_dir, FILENAME), "wb") as f:
        f.write(metadata.SerializeToString())
    return names
