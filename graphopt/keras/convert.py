"""Turn every ``keras.layers.Embedding`` of a Keras 3 model into a DynamicEmbedding.

Row i of an Embedding becomes key i of the table; where the model's optimizer has state for
the embedding (a compiled, trained model, or a ``.keras`` file saved with its optimizer), that
state becomes the rows' slots, and the optimizer's iteration count the table's step. The other
layers are cloned with their weights, and the compiled model's dense optimizer state is
carried over variable by variable, so training continues where it stopped.
"""

import dataclasses
import json
import os
import zipfile

import keras

from graphopt.errors import GraphoptError, ModelError
from graphopt.keras.layer import DynamicEmbedding, optimizer_config
from graphopt.output import check_output_dir, staged_output

# Keras optimizer class -> {table slot: the optimizer's list of per-variable slot variables}.
_SLOT_LISTS = {
    "Adagrad": {"accumulator": "_accumulators"},
    "Adam": {"m": "_momentums", "v": "_velocities"},
    "Ftrl": {"accumulator": "_accumulators", "linear": "_linears"},
    "SGD": {},
}


@dataclasses.dataclass
class ConversionReport:
    tables: list = dataclasses.field(default_factory=list)  # (layer name, rows, dim, slots carried)
    custom_layers: list = dataclasses.field(default_factory=list)  # (layer name, class) left as they are

    def format(self) -> str:
        lines = [f"converted {len(self.tables)} Embedding layer(s) to DynamicEmbedding"]
        for name, rows, dim, slots in self.tables:
            carried = f", slots {', '.join(slots)} carried" if slots else ""
            lines.append(f"  {name} [{rows}, {dim}] -> EmbeddingVariable{carried}")
        return "\n".join(lines)

    def warnings(self) -> list:
        return [
            f"warning: layer {name} ({cls}) is not a keras.layers.Embedding; copied unchanged, "
            "any table it holds stays static"
            for name, cls in self.custom_layers
        ]


def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def _is_keras_class(layer) -> bool:
    return type(layer).__module__.startswith("keras.")


def convert(model, optimizer=None, min_count=0, max_rows=0, evict_policy="lru", report=None):
    """A copy of functional or Sequential ``model`` with DynamicEmbeddings for its Embeddings.

    ``optimizer``: the tables' optimizer (default: the model's compiled optimizer; slots are
    carried only from it). ``min_count``, ``max_rows``, ``evict_policy``: admission and row cap
    of every table. ``report``: a ConversionReport to fill. A compiled model comes back
    compiled the same way (``jit_compile=False``: the table ops have no XLA kernels).
    """
    report = report if report is not None else ConversionReport()
    if not isinstance(model, keras.Model) or not (
        isinstance(model, keras.Sequential) or type(model).__name__ == "Functional"
    ):
        raise ModelError(
            f"convert() takes functional or Sequential Keras models, got {type(model).__name__}; "
            "build the subclassed model's embeddings with graphopt.keras.DynamicEmbedding instead"
        )
    compiled = getattr(model, "compiled", False) and model.optimizer is not None
    source_optimizer = model.optimizer if compiled and optimizer is None else None
    try:
        table_optimizer = optimizer_config(optimizer if optimizer is not None else source_optimizer)
    except ValueError as exc:
        raise ModelError(f"{exc} (or pass convert(..., optimizer=...))") from None
    originals = {}

    def clone(layer):
        if type(layer) is keras.layers.Embedding:
            new = DynamicEmbedding(
                layer.output_dim,
                optimizer=table_optimizer,
                embeddings_initializer=layer.embeddings_initializer,
                mask_zero=layer.mask_zero,
                min_count=min_count,
                max_rows=max_rows,
                evict_policy=evict_policy,
                name=layer.name,
            )
            originals[layer.name] = layer
            return new
        if not _is_keras_class(layer):
            report.custom_layers.append((layer.name, type(layer).__name__))
        return layer.__class__.from_config(layer.get_config())

    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    old_layers = {layer.name: layer for layer in _layers(model)}
    for layer in _layers(new_model):
        old = old_layers.get(layer.name)
        if isinstance(layer, DynamicEmbedding):
            slots = _load_rows(layer, originals[layer.name], source_optimizer)
            report.tables.append((layer.name, originals[layer.name].input_dim, layer.output_dim, slots))
        elif old is not None and not isinstance(layer, keras.Model) and old.weights:
            layer.set_weights(old.get_weights())
    if compiled:
        config = model.get_compile_config()
        config["jit_compile"] = False
        new_model.compile_from_config(config)
        _carry_optimizer_state(model.optimizer, new_model)
    return new_model


def _load_rows(layer, embedding, optimizer):
    """Row i -> key i; the optimizer's slots of the embedding when it has them. Returns the slot
    names carried."""
    rows = embedding.embeddings.numpy()
    keys = list(range(rows.shape[0]))
    slots = {}
    if optimizer is not None and optimizer.built and layer.table.slot_names:
        index = optimizer._get_variable_index(embedding.embeddings)
        lists = _SLOT_LISTS[type(optimizer).__name__]
        slots = {name: getattr(optimizer, attr)[index].numpy() for name, attr in lists.items()}
    if optimizer is not None and optimizer.built:
        layer.iterations.assign(int(optimizer.iterations.numpy()))
    layer.table.import_(keys, rows, slots=slots or None)
    return tuple(slots)


def _carry_optimizer_state(old, new_model):
    """Copies the old optimizer's variables (iterations, the dense layers' slots) into the
    new model's optimizer, matched by name: the cloned layers keep their names."""
    if not old.built:
        return
    new = new_model.optimizer
    new.build(new_model.trainable_variables)
    by_path = {v.path: v for v in old.variables}
    for variable in new.variables:
        source = by_path.get(variable.path)
        if source is not None and tuple(source.shape) == tuple(variable.shape):
            variable.assign(source)


def _unknown_classes(config) -> list:
    """Class names in a .keras config.json that Keras cannot resolve in this process."""
    unknown = set()

    def walk(node):
        if isinstance(node, dict):
            if "class_name" in node and "config" in node:
                module = node.get("module") or ""
                registered = node.get("registered_name") or node["class_name"]
                if not module.startswith("keras") and keras.saving.get_registered_object(registered) is None:
                    unknown.add(f"{node['class_name']} (module {module or '?'})")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return sorted(unknown)


def load_keras_file(path):
    """``keras.saving.load_model`` of a ``.keras`` file, with one-line errors for bad input."""
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a .keras file (a zip with config.json); pass a Keras 3 model file")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise ModelError(f"{path} holds no config.json, so it is not a .keras model file")
        config = json.loads(archive.read("config.json"))
    try:
        return keras.saving.load_model(path, compile=True, safe_mode=True)
    except Exception as exc:
        unknown = _unknown_classes(config)
        if unknown:
            raise ModelError(
                f"{path} uses classes graphopt cannot load: {', '.join(unknown)}; register them with "
                "keras.saving.register_keras_serializable in an imported module and call "
                "graphopt.keras.convert(model) from Python"
            ) from None
        raise ModelError(f"cannot load {path}: {str(exc).splitlines()[0]}") from None


def is_keras_file(path) -> bool:
    return str(path).endswith(".keras") or (os.path.isfile(path) and zipfile.is_zipfile(path))


def nothing_converted(path, report: ConversionReport) -> str:
    """Why a conversion that converted no layer writes nothing (one line)."""
    custom = ", ".join(f"{n} ({c})" for n, c in report.custom_layers)
    return (
        f"{path} has no Embedding layer to convert"
        + (f"; custom layers left as they are: {custom}" if custom else "")
        + "; nothing written"
    )


def convert_file(path, out, overwrite=False, **options) -> ConversionReport:
    """Converts the ``.keras`` file ``path`` and saves the result to ``out`` (a ``.keras`` path).

    The output appears only when complete; ``path`` is only read.
    """
    if not str(out).endswith(".keras"):
        raise GraphoptError(
            f"the output of a .keras rewrite is a .keras file; got {out}, use e.g. -o model_ev.keras"
        )
    check_output_dir(out, overwrite)  # before the minutes of loading and converting
    if os.path.abspath(out) == os.path.abspath(path):
        raise GraphoptError(
            f"the output {out} is the input; choose another path (the input is never modified)"
        )
    model = load_keras_file(path)
    report = ConversionReport()
    converted = convert(model, report=report, **options)
    if not report.tables:
        raise GraphoptError(nothing_converted(path, report))
    with staged_output(out, overwrite=overwrite) as staged:
        scratch = os.path.join(os.path.dirname(staged), "model.keras")
        converted.save(scratch)
        os.rename(scratch, staged)
    return report
