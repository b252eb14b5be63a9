"""The string vocabularies a model looks its string inputs up in, for generating string inputs.

Keras ``StringLookup`` and feature columns' vocabulary lists fill a hash table from a string
constant (``LookupTableImportV2`` / ``InitializeTableV2``); the constant often reaches the
initializer through a call argument, so it is followed back through the callers. A vocabulary
given as a file (``StringLookup(vocabulary="vocab.txt")``, ``categorical_column_with_vocabulary_file``,
``tf.lookup.TextFileInitializer``) fills it with ``InitializeTableFromTextFileV2`` from an asset:
the path reaches the initializer as a placeholder the loader feeds (the meta graph's asset file
defs name its file in ``assets/``), or as a constant path (tf_keras feature columns), and the
words are read from that file.
"""

import os

from graphopt.graph import meta_graphs, nodes
from graphopt.graph.model import ModelGraph, TensorRef

TABLE_INIT_OPS = ("LookupTableImportV2", "InitializeTableV2", "LookupTableImport", "InitializeTable")
TEXT_FILE_INIT_OPS = ("InitializeTableFromTextFileV2", "InitializeTableFromTextFile")
# InitializeTableFromTextFile's key_index: the whole line, or its line number (not a word).
WHOLE_LINE, LINE_NUMBER = -2, -1
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
        return [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for v in nodes.const_value(node).ravel()
        ]
    return None


def asset_vocabulary(model, body, node, model_dir):
    """The keys an ``InitializeTableFromTextFile*`` node reads from its vocabulary file, or None when
    that file is not found (or its keys are line numbers, not words)."""
    key_index = nodes.attr_value(node, "key_index")
    if key_index == LINE_NUMBER or model_dir is None:
        return None
    assets, top = meta_graphs.asset_files(model.meta_graph), model.bodies[""]
    paths = []
    for source in sorted(_path_sources(model, body, body.data_inputs(node)[1])):
        if source in assets:
            paths.append(os.path.join(model_dir, "assets", assets[source]))
        elif top.node(source).op == "Const":
            # tf_keras feature columns keep the path the model was built from as a constant, and
            # the model reads that file wherever it is loaded.
            paths += [p for p in string_constant(model, top, TensorRef(source)) or () if os.path.isfile(p)]
    if not paths:
        return None
    delimiter = nodes.attr_value(node, "delimiter") or b"\t"
    delimiter = delimiter.decode() if isinstance(delimiter, bytes) else delimiter
    vocab_size = nodes.attr_value(node, "vocab_size")
    try:
        with open(paths[0], encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None  # the model does not load either; the loader says so
    if vocab_size is not None and vocab_size >= 0:
        lines = lines[:vocab_size]
    if key_index == WHOLE_LINE:
        return lines
    rows = (line.split(delimiter) for line in lines)
    return [fields[key_index] for fields in rows if len(fields) > key_index]


def _path_sources(model, body, ref):
    """The top-level placeholders and constants a file path comes from. A TF2 export keeps the asset
    path in a variable (``AssignVariableOp(handle, asset_path_initializer)``) that the initializer
    function reads, so a variable is followed to the values assigned to it."""
    top = model.bodies[""]
    sources, seen = set(), set()
    stack = [(body.name, ref)]
    while stack:
        name, at = stack.pop()
        for place in model.trace_back(name, at, ("Placeholder", "Const", "VarHandleOp")):
            if place.body != "" or place.ref.node in seen:
                continue
            seen.add(place.ref.node)
            if top.node(place.ref.node).op != "VarHandleOp":
                sources.add(place.ref.node)
                continue
            for assign in top.nodes():
                inputs = top.data_inputs(assign) if assign.op == "AssignVariableOp" else []
                if len(inputs) > 1 and inputs[0].node == place.ref.node:
                    stack.append(("", inputs[1]))
    return sources


def table_keys(model, body, node, model_dir=None):
    """The string keys a table initializer ``node`` fills its table with, or None when not known."""
    if node.op in TEXT_FILE_INIT_OPS:
        return asset_vocabulary(model, body, node, model_dir)
    inputs = body.data_inputs(node)
    return string_constant(model, body, inputs[1]) if len(inputs) > 1 else None


def string_vocabulary(model: ModelGraph, model_dir=None):
    """Every word of the model's string lookup tables (those read from asset files when ``model_dir``
    is given), in first-seen order."""
    words: dict[str, None] = {}
    for body in model.bodies.values():
        for node in body.nodes():
            if node.op in TABLE_INIT_OPS + TEXT_FILE_INIT_OPS:
                for word in table_keys(model, body, node, model_dir) or ():
                    words.setdefault(word, None)
    return tuple(words)
