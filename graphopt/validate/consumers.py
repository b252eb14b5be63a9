"""What a model does with each signature input, read from the ops that consume it.

Generated inputs must be inputs the original accepts. The ops an input reaches say what that is:
segment ids (``SparseSegment*`` / ``Segment*``) must be sorted; a SparseTensor passed as its
``indices`` / ``values`` / ``dense_shape`` components needs sorted, unique coordinates inside its
dense shape, and as many values as coordinates; a string input is looked up in the hash tables
it reaches (each input its own words), or hashed into ``num_buckets`` buckets.
"""

import dataclasses

from graphopt.graph.model import ModelGraph, TensorRef
from graphopt.validate.vocabulary import TABLE_INIT_OPS, string_constant

# Op -> index of its segment-ids input.
SEGMENT_OPS = {"SparseSegmentSum": 2, "SparseSegmentMean": 2, "SparseSegmentSqrtN": 2,
               "SparseSegmentSumWithNumSegments": 2, "SparseSegmentMeanWithNumSegments": 2,
               "SparseSegmentSqrtNWithNumSegments": 2, "SegmentSum": 1, "SegmentMean": 1, "SegmentMax": 1,
               "SegmentMin": 1, "SegmentProd": 1}
# Op -> index of its dense-shape input.
DENSE_SHAPE_OPS = {"SparseFillEmptyRows": 2, "SparseReshape": 1, "SparseToDense": 1, "SparseReorder": 2,
                   "SparseTensorDenseMatMul": 2, "SerializeSparse": 2}
TABLE_OPS = ("HashTableV2", "HashTable", "MutableHashTableV2", "MutableHashTableOfTensorsV2",
             "MutableDenseHashTableV2", "Placeholder")
FIND_OPS = ("LookupTableFindV2", "LookupTableFind")
HASH_OPS = ("StringToHashBucketFast", "StringToHashBucketStrong", "StringToHashBucket")


@dataclasses.dataclass
class InputUse:
    """How the model consumes one signature input."""

    role: str = ""  # "sorted" (segment ids or sparse indices), "dense-shape", or "" (free values)
    words: tuple = ()  # the words of the lookup tables the input reaches, in first-seen order
    hash_buckets: int = 0  # the largest num_buckets of the hash ops the input reaches


def _placeholders(model, body, ref, stop_ops=("Placeholder",)):
    return {p.ref.node for p in model.trace_back(body.name, ref, stop_ops) if p.body == ""}


def input_uses(meta_graph) -> dict:
    """{signature: {input key: InputUse}} for every signature of ``meta_graph``."""
    model = ModelGraph(meta_graph)
    uses = {}  # placeholder node -> InputUse
    table_words = {}  # top-level table node -> words
    finds = []  # (body, find node)
    for body in model.bodies.values():
        for node in body.nodes():
            inputs = body.data_inputs(node)
            if node.op in SEGMENT_OPS and len(inputs) > SEGMENT_OPS[node.op]:
                for p in _placeholders(model, body, inputs[SEGMENT_OPS[node.op]]):
                    uses.setdefault(p, InputUse()).role = "sorted"
            elif node.op in DENSE_SHAPE_OPS and len(inputs) > DENSE_SHAPE_OPS[node.op]:
                for p in _placeholders(model, body, inputs[DENSE_SHAPE_OPS[node.op]]):
                    uses.setdefault(p, InputUse()).role = "dense-shape"
            elif node.op in TABLE_INIT_OPS and len(inputs) > 1:
                words = string_constant(model, body, inputs[1]) or ()
                for table in _placeholders(model, body, inputs[0], TABLE_OPS):
                    known = table_words.setdefault(table, {})
                    known.update(dict.fromkeys(words))
            elif node.op in FIND_OPS:
                finds.append((body, node))
            elif node.op in HASH_OPS:
                buckets = node.attr["num_buckets"].i
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
    for name, sig in meta_graph.signature_def.items():
        out[name] = {key: uses[TensorRef.parse(info.name).node] for key, info in sig.inputs.items()
                     if info.name and TensorRef.parse(info.name).node in uses}
        # A SparseTensor's dense shape is often read by no op (embedding_lookup_sparse only needs
        # its indices and values): an integer input of static shape [k] beside sorted [?, k]
        # coordinates is their dense shape.
        ranks = {_dims(info)[1] for key, info in sig.inputs.items()
                 if getattr(out[name].get(key), "role", "") == "sorted" and len(_dims(info)) == 2}
        for key, info in sig.inputs.items():
            dims = _dims(info)
            if key not in out[name] and len(dims) == 1 and dims[0] in ranks and info.dtype in _INT_TYPES:
                out[name][key] = InputUse(role="dense-shape")
    return out


_INT_TYPES = (3, 9)  # DT_INT32, DT_INT64


def _dims(info):
    shape = info.tensor_shape
    return [] if shape.unknown_rank else [d.size for d in shape.dim]
