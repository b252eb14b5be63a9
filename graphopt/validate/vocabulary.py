"""The string vocabularies a model looks its string inputs up in, for generating string inputs.

Keras ``StringLookup`` and feature columns' vocabulary lists fill a hash table from a string
constant (``LookupTableImportV2`` / ``InitializeTableV2``); the constant often reaches the
initializer through a call argument, so it is followed back through the callers.
"""

from graphopt.graph import nodes
from graphopt.graph.model import ModelGraph

TABLE_INIT_OPS = ("LookupTableImportV2", "InitializeTableV2", "LookupTableImport", "InitializeTable")
# Unknown words still go in: both models must treat them alike too (the OOV bucket).
UNKNOWN_WORDS = ("graphopt-unknown-word",)
_MAX_CALL_DEPTH = 4


def string_constant(model, body, ref, depth=0):
    """The string values behind ``ref`` in ``body``, followed through Identity and call args."""
    node = body.node(ref.node)
    if node is None:  # a function argument: look at what each caller passes
        if depth >= _MAX_CALL_DEPTH or ref.node not in body.args:
            return None
        position = body.args.index(ref.node)
        for edge in model.callers_of(body.name):
            caller_body = model.body(edge.body)
            caller = caller_body.node(edge.caller)
            inputs = caller_body.data_inputs(caller)
            if edge.first_input + position < len(inputs):
                found = string_constant(model, caller_body, inputs[edge.first_input + position], depth + 1)
                if found is not None:
                    return found
        return None
    if node.op == "Identity":
        return string_constant(model, body, body.data_inputs(node)[0], depth)
    if node.op == "Const" and nodes.attr_value(node, "dtype") == nodes.dtype_enum("string"):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in nodes.const_value(node).ravel()]
    return None


def string_vocabulary(meta_graph):
    """Every word of the model's string lookup tables, in first-seen order."""
    model = ModelGraph(meta_graph)
    words = {}
    for body in model.bodies.values():
        for node in body.nodes():
            if node.op in TABLE_INIT_OPS:
                keys = body.data_inputs(node)[1]
                for word in string_constant(model, body, keys) or ():
                    words.setdefault(word, None)
    return tuple(words)
