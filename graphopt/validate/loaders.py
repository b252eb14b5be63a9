"""Loading a SavedModel the two ways it gets served, behind one small interface.

``tf2`` is ``tf.saved_model.load`` and its signature functions (what Python serving code and
TF2 tooling do); ``session`` is ``tf.compat.v1.saved_model.loader.load`` into a Session — the
path TensorFlow Serving takes: import the meta graph, run the SaverDef's restore op, then the
init op, then feed and fetch the signature's tensor names. A rewrite has to survive both.
"""

import contextlib
import dataclasses
import logging
import os

import numpy as np

from graphopt.errors import ModelError
from graphopt.graph.meta_graphs import signature_tensor_infos

LOADERS = ("tf2", "session")
DEFAULT_TAGS = ("serve",)


@dataclasses.dataclass(frozen=True)
class TensorSpecInfo:
    """One signature tensor: dtype by TensorFlow name ("int64", "string"); shape with None for
    unknown dimensions, or None when even the rank is unknown."""

    name: str
    dtype: str
    shape: tuple | None

    def describe(self):
        return f"{self.dtype}{format_shape(self.shape)}"


@dataclasses.dataclass(frozen=True)
class SignatureSpec:
    name: str
    inputs: dict
    outputs: dict


def format_shape(shape):
    if shape is None:
        return "[?...]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _tf():
    import tensorflow as tf

    return tf


def load_failures():
    """The exceptions TensorFlow raises for a model it cannot load or run.

    A validator must report these as findings about the model, not crash on them; anything
    else is a bug in graphopt and is left to propagate.
    """
    tf = _tf()
    return (tf.errors.OpError, ValueError, KeyError, TypeError, OSError, RuntimeError)


def register_graphopt_ops():
    """Make the EmbeddingVariable ops known to TensorFlow before a rewritten model is read (once
    per process; OpLibraryError when the library is missing or stale)."""
    from graphopt.ops.library import load_library

    load_library()


@contextlib.contextmanager
def _quiet_tensorflow():
    """The v1 loader logs a deprecation warning per call; it would bury the report."""
    logger = _tf().get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def describe_failure(exc):
    """One line naming the exception and its cause, without TensorFlow's traceback block."""
    text = getattr(exc, "message", None) or str(exc)
    banner = (
        "Graph execution error",
        "Detected at node",
        "<stack traces unavailable>",
        "[[",
        "Original stack trace",
        "Traceback",
    )
    in_frame = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(banner):
            continue
        if line.startswith('File "'):
            in_frame = True  # the next non-empty line is that frame's source code
            continue
        if in_frame:
            in_frame = False
            continue
        # "Op type not registered 'X' in binary running on HOST. Make sure ...": keep the first clause.
        line = line.split(" in binary running on ")[0]
        return f"{type(exc).__name__}: {line}"
    return type(exc).__name__


def check_saved_model_dir(path):
    if not os.path.isdir(path):
        raise ModelError(f"{path}: no such directory; give a SavedModel directory")
    if not any(os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")):
        raise ModelError(f"{path}: no saved_model.pb in it; give a SavedModel directory")


class Tf2Model:
    """A SavedModel loaded with ``tf.saved_model.load``; signatures called as functions."""

    loader = "tf2"

    def __init__(self, path, tags=DEFAULT_TAGS):
        tf = _tf()
        self.path = path
        with _quiet_tensorflow():
            self._obj = tf.saved_model.load(path, tags=list(tags))
        # A model without an object graph comes back through load_v1_in_v2, which also lists
        # the __saved_model_init_op plumbing as a signature.
        self._functions = {k: f for k, f in self._obj.signatures.items() if not k.startswith("__")}
        self.signatures = {}
        for name, fn in self._functions.items():
            _, kwargs = fn.structured_input_signature
            inputs = {k: _spec_from_tensor_spec(k, s) for k, s in sorted(kwargs.items())}
            outputs = {k: _spec_from_tensor_spec(k, s) for k, s in sorted(fn.structured_outputs.items())}
            self.signatures[name] = SignatureSpec(name, inputs, outputs)

    def run(self, signature, feeds):
        tf = _tf()
        fn = self._functions[signature]
        spec = self.signatures[signature]
        args = {k: tf.constant(v, dtype=tf.as_dtype(spec.inputs[k].dtype)) for k, v in feeds.items()}
        return {k: v.numpy() for k, v in fn(**args).items()}

    def close(self):
        self._obj = None
        self._functions = {}


class SessionModel:
    """A SavedModel loaded the TF Serving way: meta graph import, saver restore, init op."""

    loader = "session"

    def __init__(self, path, tags=DEFAULT_TAGS):
        tf = _tf()
        self.path = path
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        try:
            with _quiet_tensorflow():
                meta_graph = tf.compat.v1.saved_model.loader.load(self.session, list(tags), path)
        except BaseException:
            self.session.close()
            raise
        self.meta_graph = meta_graph
        self.signatures = signature_specs(meta_graph)
        self._tensor_names = {
            name: (
                {k: info[0] for k, info in sig["inputs"].items()},
                {k: info[0] for k, info in sig["outputs"].items()},
            )
            for name, sig in signature_tensor_infos(meta_graph).items()
        }

    def run(self, signature, feeds):
        in_names, out_names = self._tensor_names[signature]
        feed_dict = {in_names[k]: v for k, v in feeds.items()}
        return self.session.run(dict(out_names), feed_dict=feed_dict)

    def close(self):
        self.session.close()


def _spec_from_tensor_spec(name, spec):
    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return TensorSpecInfo(name, spec.dtype.name, shape)


def spec_from_tensor_info(name, info):
    """A TensorSpecInfo from a (tensor name, dtype enum, shape) triple of signature_tensor_infos."""
    _, dtype, shape = info
    return TensorSpecInfo(name, _tf().as_dtype(dtype).name, shape)


def signature_specs(meta_graph):
    """The serving signatures of a MetaGraphDef as SignatureSpecs."""
    return {
        name: SignatureSpec(
            name,
            {k: spec_from_tensor_info(k, v) for k, v in sorted(sig["inputs"].items())},
            {k: spec_from_tensor_info(k, v) for k, v in sorted(sig["outputs"].items())},
        )
        for name, sig in sorted(signature_tensor_infos(meta_graph).items())
        # __saved_model_init_op and the like are loader plumbing, not serving signatures.
        if not name.startswith("__")
    }


def load_model(path, loader, tags=DEFAULT_TAGS):
    """Load ``path`` with one loader; a model TensorFlow cannot load raises ModelError."""
    check_saved_model_dir(path)
    register_graphopt_ops()
    cls = {"tf2": Tf2Model, "session": SessionModel}[loader]
    try:
        return cls(path, tags)
    except load_failures() as exc:
        raise ModelError(f"{path}: the {loader} loader cannot load it: {describe_failure(exc)}") from exc


def numpy_dtype(dtype_name):
    """The numpy dtype to build feeds with for a TensorFlow dtype name."""
    if dtype_name == "string":
        return np.dtype(object)
    return np.dtype(_tf().as_dtype(dtype_name).as_numpy_dtype)
