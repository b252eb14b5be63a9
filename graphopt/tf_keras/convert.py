"""Turn every ``tf_keras.layers.Embedding`` of a tf_keras model into graphopt.tf_keras.DynamicEmbedding.

The tf_keras counterpart of graphopt.keras.convert, for tf_keras ``.keras`` and ``.h5`` files:
row i of an Embedding becomes key i of the table, the other layers are cloned with their
weights, and a compiled model comes back compiled the same way, its tables training with its
optimizer. The optimizer starts afresh (slots at their initial values, step 0), as it does when
tf_keras loads a SavedModel. The result is saved as a tf_keras ``.keras`` file: ``.h5`` keeps only
``layer.weights``, which a dynamic table is not.
"""

import json
import os
import zipfile

import tf_keras

from graphopt.errors import ModelError
from graphopt.keras.convert import ConversionReport, check_convertible, check_file_paths, convert_and_save
from graphopt.keras.layer import optimizer_config
from graphopt.tf_keras.layer import DynamicEmbedding


def is_tf_keras_file(path) -> bool:
    """An ``.h5`` model, or a ``.keras`` zip saved by tf_keras (Keras 2.x in its metadata.json)."""
    if str(path).endswith((".h5", ".hdf5")):
        return True
    if not (os.path.isfile(path) and zipfile.is_zipfile(path)):
        return False
    with zipfile.ZipFile(path) as archive:
        if "metadata.json" not in archive.namelist():
            return False
        version = json.loads(archive.read("metadata.json")).get("keras_version", "")
    return str(version).startswith("2.")


def convert(model, optimizer=None, min_count=0, max_rows=0, evict_policy="lru", report=None):
    """A copy of functional or Sequential tf_keras ``model`` with DynamicEmbeddings for its
    Embeddings; options as graphopt.keras.convert."""
    report = report if report is not None else ConversionReport()
    check_convertible(model, tf_keras, "graphopt.tf_keras")
    compiled = getattr(model, "optimizer", None) is not None and bool(getattr(model, "compiled_loss", None))
    try:
        table_optimizer = optimizer_config(optimizer if optimizer is not None else model.optimizer, tf_keras)
    except ValueError as exc:
        raise ModelError(f"{exc} (or pass convert(..., optimizer=...))") from None
    originals = {}

    def clone(layer):
        if type(layer) is tf_keras.layers.Embedding:
            originals[layer.name] = layer
            return DynamicEmbedding(
                layer.output_dim,
                optimizer=table_optimizer,
                embeddings_initializer=layer.embeddings_initializer,
                mask_zero=layer.mask_zero,
                min_count=min_count,
                max_rows=max_rows,
                evict_policy=evict_policy,
                name=layer.name,
            )
        if not type(layer).__module__.startswith("tf_keras."):
            report.custom_layers.append((layer.name, type(layer).__name__))
        return layer.__class__.from_config(layer.get_config())

    new_model = tf_keras.models.clone_model(model, clone_function=clone)
    for layer in new_model.layers:
        if isinstance(layer, DynamicEmbedding):
            rows = originals[layer.name].embeddings.numpy()
            layer.table.import_(list(range(rows.shape[0])), rows)
            report.tables.append((layer.name, rows.shape[0], layer.output_dim, ()))
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    if compiled:
        config = model.get_compile_config()
        config["jit_compile"] = False
        if config.get("optimizer") is not None:  # a fresh optimizer, the tables' counterpart
            config["optimizer"] = tf_keras.optimizers.serialize(model.optimizer)
        new_model.compile_from_config(config)
    return new_model


def convert_file(path, out, overwrite=False, **options) -> ConversionReport:
    """Converts tf_keras model file ``path`` (``.keras`` or ``.h5``) and saves the result to ``out``
    (a ``.keras`` path); the output appears only when complete, ``path`` is only read."""
    check_file_paths(path, out, overwrite, "a tf_keras file rewrite (an .h5 cannot hold a dynamic table)")
    try:
        model = tf_keras.models.load_model(path, compile=True)
    except Exception as exc:  # a missing custom class, a damaged file: the user's to fix
        raise ModelError(
            f"cannot load {path} with tf_keras: {str(exc).splitlines()[0]}; import or register its "
            "custom classes (graphopt rewrite --import MODULE) and try again"
        ) from None
    return convert_and_save(model, convert, out, overwrite, path, **options)
