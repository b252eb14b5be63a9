"""What a model does with each signature input, read from the ops that consume it.

Generated inputs must be inputs the original accepts. The ops an input reaches say what that is:
segment ids (``SparseSegment*`` / ``Segment*``) must be sorted; a SparseTensor passed as its
``indices`` / ``values`` / ``dense_shape`` components needs sorted, unique coordinates inside its
dense shape, and as many values as coordinates; a RaggedTensor passed as its ``values`` /
``row_splits`` needs splits that start at 0, never decrease and end at the number of values; a
string input is looked up in the hash tables
it reaches (each input its own words), or hashed into ``num_buckets`` buckets.
"""

import dataclasses

from graphopt.graph import meta_graphs, nodes
from graphopt.graph.model import ModelGraph, TensorRef
from graphopt.validate.vocabulary import TABLE_INIT_OPS, TEXT_FILE_INIT_OPS, table_keys

# Op -> index of its segment-ids input.
SEGMENT_OPS = {
    "SparseSegmentSum": 2,
    "SparseSegmentMean": 2,
    "SparseSegmentSqrtN": 2,
    "SparseSegmentSumWithNumSegments": 2,
    "SparseSegmentMeanWithNumSegments": 2,
    "SparseSegmentSqrtNWithNumSegments": 2,
    "SegmentSum": 1,
    "SegmentMean": 1,
    "SegmentMax": 1,
    "SegmentMin": 1,
    "SegmentProd": 1,
}
# Op -> index of its dense-shape input.
DENSE_SHAPE_OPS = {
    "SparseFillEmptyRows": 2,
    "SparseReshape": 1,
    "SparseToDense": 1,
    "SparseReorder": 2,
    "SparseTensorDenseMatMul": 2,
    "SerializeSparse": 2,
}
# Op -> the attr counting its leading row-splits inputs (one per ragged dimension).
RAGGED_SPLITS_OPS = {
    "RaggedTensorToSparse": "RAGGED_RANK",
    "RaggedTensorToVariant": "RAGGED_RANK",
    "RaggedGather": "PARAMS_RAGGED_RANK",
}
# Ragged ops built in Python (tf.RaggedTensor.from_row_splits, value_rowids, ragged reductions) leave
# no op of their own: only these name scopes mark the nodes that read a RaggedTensor's row splits.
RAGGED_SPLITS_SCOPES = ("RowPartitionFromRowSplits/", "RaggedSplitsToSegmentIds/")
TABLE_OPS = (
    "HashTableV2",
    "HashTable",
    "MutableHashTableV2",
    "MutableHashTableOfTensorsV2",
    "MutableDenseHashTableV2",
    "Placeholder",
)
FIND_OPS = ("LookupTableFindV2", "LookupTableFind")
HASH_OPS = ("StringToHashBucketFast", "StringToHashBucketStrong", "StringToHashBucket")
# Ops that hand a signature input on unchanged in value (or a slice of it): segment ids and dense
# shapes computed from an input (Where, Shape, ...) say nothing about the input itself.
PASS_THROUGH = {
    "Identity",
    "Cast",
    "StridedSlice",
    "Reshape",
    "ExpandDims",
    "Squeeze",
    "StatefulPartitionedCall",
    "PartitionedCall",
}


class _AnyOpBut:
    """The stop set of a walk back that passes only through PASS_THROUGH ops."""

    def __contains__(self, op):
        return op not in PASS_THROUGH


@dataclasses.dataclass
class InputUse:
    """How the model consumes one signature input."""

    # "sorted" (segment ids or sparse indices), "dense-shape", "row-splits", or "" (free values)
    role: str = ""
    words: tuple = ()  # the words of the lookup tables the input reaches, in first-seen order
    hash_buckets: int = 0  # the largest num_buckets of the hash ops the input reaches


def _placeholders(model, body, ref, stop_ops=("Placeholder",)):
    return {p.ref.node for p in model.trace_back(body.name, ref, stop_ops) if p.body == ""}


def _passed_on(model, body, ref):
    """The top-level placeholders whose values reach ``ref`` unchanged."""
    return {
        p.ref.node
        for p in model.trace_back(body.name, ref, _AnyOpBut())
        if p.body == "" and model.graph.node(p.ref.node).op == "Placeholder"
    }


def _row_splits_inputs(node, inputs):
    """The inputs of ``node`` that are a RaggedTensor's row splits."""
    if node.op in RAGGED_SPLITS_OPS:
        return inputs[: nodes.attr_value(node, RAGGED_SPLITS_OPS[node.op]) or 0]
    if node.op == "RaggedTensorToTensor":
        kinds = [
            k.decode() if isinstance(k, bytes) else k
            for k in nodes.attr_value(node, "row_partition_types") or ()
        ]
        return [ref for ref, kind in zip(inputs[3:], kinds, strict=False) if kind == "ROW_SPLITS"]
    if any(scope in node.name for scope in RAGGED_SPLITS_SCOPES):
        return inputs
    return []


def input_uses(model: ModelGraph, model_dir=None) -> dict:
    """{signature: {input key: InputUse}} for every signature of ``model``; ``model_dir``, the
    SavedModel directory, lets tables initialized from vocabulary files in its assets be read."""
    meta_graph = model.meta_graph
    uses: dict = {}  # placeholder node -> InputUse
    table_words: dict = {}  # top-level table node -> words
    finds = []  # (body, find node)
    for body in model.bodies.values():
        for node in body.nodes():
            inputs = body.data_inputs(node)
            for ref in _row_splits_inputs(node, inputs):
                for p in _passed_on(model, body, ref):
                    uses.setdefault(p, InputUse()).role = "row-splits"
            if node.op in SEGMENT_OPS and len(inputs) > SEGMENT_OPS[node.op]:
                for p in _passed_on(model, body, inputs[SEGMENT_OPS[node.op]]):
                    uses.setdefault(p, InputUse()).role = "sorted"
            elif node.op in DENSE_SHAPE_OPS and len(inputs) > DENSE_SHAPE_OPS[node.op]:
                for p in _passed_on(model, body, inputs[DENSE_SHAPE_OPS[node.op]]):
                    uses.setdefault(p, InputUse()).role = "dense-shape"
            elif node.op in TABLE_INIT_OPS + TEXT_FILE_INIT_OPS and len(inputs) > 1:
                words = table_keys(model, body, node, model_dir) or ()
                for table in _placeholders(model, body, inputs[0], TABLE_OPS):
                    known = table_words.setdefault(table, {})
                    known.update(dict.fromkeys(words))
            elif node.op in FIND_OPS:
                finds.append((body, node))
            elif node.op in HASH_OPS:
                buckets = nodes.attr_value(node, "num_buckets") or 0
                for p in _placeholders(model, body, inputs[0]):
                    use = uses.setdefault(p, InputUse())
                    use.hash_buckets = max(use.hash_buckets, buckets)
    for body, node in finds:
        inputs = body.data_inputs(node)
        words = {}
        for table in _placeholders(model, body, inputs[0], TABLE_OPS):
            words.update(table_words.get(table, {}))
        for p in _placeholders(model, body, inputs[1]):
            use = uses.setdefault(p, InputUse())
            use.words = tuple(dict.fromkeys(use.words + tuple(words)))
    out = {}
    specs = meta_graphs.signature_input_specs(meta_graph)
    for name, sig in meta_graphs.signature_tensors(meta_graph).items():
        placeholders = {
            key: TensorRef.parse(t).node for key, t in sig["inputs"].items() if key in specs[name]
        }
        out[name] = {key: uses[node] for key, node in placeholders.items() if node in uses}
        # A SparseTensor's dense shape is often read by no op (embedding_lookup_sparse only needs
        # its indices and values): an integer input of static shape [k] beside sorted [?, k]
        # coordinates is their dense shape.
        ranks = {
            shape[1]
            for key, (_, shape) in specs[name].items()
            if getattr(out[name].get(key), "role", "") == "sorted" and shape and len(shape) == 2
        }
        for key, (dtype, shape) in specs[name].items():
            if (
                key not in out[name]
                and shape
                and len(shape) == 1
                and shape[0] in ranks
                and dtype in ("int32", "int64")
            ):
                out[name][key] = InputUse(role="dense-shape")
    return out
