"""Exporting a model with DynamicEmbedding layers for serving, its tables named for deltas.

``model.export`` names each table by its position in the export (``_misc_assets/3``), a name no
other export of the model shares. ``export_model`` exports the model as ``model.export`` does and
writes ``graphopt_tables.json`` beside it: each table's checkpoint key and identity (the Keras path
of the embedding variable, ``movieId_embedding/embeddings``), which ``graphopt rewrite`` records
for the same table of the original Keras export. ``graphopt delta`` then matches the trained
model's tables to the served rewrite's by identity, without ``--table``.
"""

import json
import os

from graphopt.ev import contract
from graphopt.online.tables import table_specs
from graphopt.online.writer import embedding_variables


def export_model(model, path, row_dtype="float32"):
    """``model.export(path, format="tf_saved_model")`` with the tables file beside it (row_dtype:
    compressed serving rows, as ``compressed_tables``)."""
    from keras.export import ExportArchive
    from keras.src.export.export_utils import get_input_signature

    from graphopt.keras.identity import all_layers, table_identity
    from graphopt.keras.layer import DynamicEmbedding, compressed_tables

    with compressed_tables(model, row_dtype):
        # What model.export does (keras.src.export.saved_model.export_saved_model), keeping the
        # archive: its root is where the checkpoint's object paths start.
        archive = ExportArchive()
        archive.track_and_add_endpoint("serve", model, get_input_signature(model))
        archive.write_out(path, verbose=False)
        identity = {
            id(layer.table): table_identity(layer)
            for layer in all_layers(model)
            if isinstance(layer, DynamicEmbedding)
        }
        root = getattr(archive, "_tf_trackable", None)
        found = embedding_variables(root) if root is not None else {}
    saved = {spec.name: spec.checkpoint_key for spec in table_specs(path)}
    tables = [
        {"checkpoint_key": saved[name], contract.TABLE_IDENTITY: identity[id(ev)]}
        for name, ev in sorted(found.items())
        if name in saved and id(ev) in identity
    ]
    if tables:
        with open(os.path.join(path, contract.TABLES_FILE), "w") as f:
            json.dump({"tables": tables}, f, indent=1)
    return tables
