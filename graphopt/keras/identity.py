"""The identity of a DynamicEmbedding layer's table: a name that stays the same across exports.

``model.export`` names each table by its position in the export (``_misc_assets/3``), a name no
other export of the model shares. The identity is the Keras path of the embedding variable
(``movieId_embedding/embeddings``), which ``graphopt rewrite`` records for the same table of the
original Keras export; ``graphopt.online.export_model`` writes it beside an export.
"""


def table_identity(layer) -> str:
    """The identity of a DynamicEmbedding layer's table: the path its Keras Embedding's weight had
    (``<layer path>/embeddings``), the name a Keras export gives that variable."""
    return f"{getattr(layer, 'path', None) or layer.name}/embeddings"


def all_layers(model):
    """Every layer of ``model``, nested ones included, each once."""
    seen, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        if any(layer is s for s in seen):
            continue
        seen.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return seen
