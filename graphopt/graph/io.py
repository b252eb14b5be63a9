"""Model I/O: reading SavedModels and TF1 meta graphs, writing them and TensorBoard event files.

The rest of ``graphopt.graph`` edits what is read here: ``nodes`` (NodeDefs and attrs),
``meta_graph`` (collections, signatures, saver, function library), ``object_graph``, ``model``
(the graph model). Checkpoint bundles are read and written by ``graphopt.checkpoint``.
"""

import dataclasses
import os
import shutil
from typing import Any

from google.protobuf import message, text_format

from graphopt.errors import ModelError

SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
VARIABLES_DIR = "variables"
VARIABLES_PREFIX = "variables"


def _tf():
    # TensorFlow is imported when a model is read, not with the module: `graphopt --help` stays fast.
    import tensorflow as tf

    return tf


def is_meta_graph(value) -> bool:
    """Whether ``value`` is a MetaGraphDef (rather than a path to a model)."""
    return hasattr(value, "graph_def") and hasattr(value, "meta_info_def")


def _protos():
    from tensorflow.core.framework import graph_pb2
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    return graph_pb2, meta_graph_pb2, saved_model_pb2


@dataclasses.dataclass
class ModelSource:
    """A model read from disk: its meta graph and where its variables live."""

    path: str
    kind: str  # "saved_model" or "meta_graph"
    meta_graph: Any  # MetaGraphDef
    checkpoint_prefix: str | None
    saved_model: Any = None  # the whole SavedModel proto (kind == "saved_model")
    meta_graph_index: int = 0
    text: bool = False  # meta graph was a .pbtxt

    @property
    def tags(self):
        return list(self.meta_graph.meta_info_def.tags)


def _parse(proto, data, path, text):
    try:
        if text:
            text_format.Parse(data.decode("utf-8"), proto)
        else:
            proto.ParseFromString(data)
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError, RuntimeWarning) as exc:
        raise ModelError(
            f"{path} is truncated or corrupted "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "export the model again"
        ) from None
    return proto


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ModelError(
            f"cannot read {path} ({exc.strerror}); pass a readable SavedModel directory or .meta/.pbtxt file"
        ) from None


def read_model_graph(path, tags=None, check_integrity=True) -> ModelSource:
    """Reads the graph of a SavedModel directory, or of a TF1 meta graph (.meta / .pbtxt), and
    finds its checkpoint (``graphopt.model_io.read_model`` also looks at the checkpoint's files).

    Refuses (ModelError) a damaged model: a graph file that does not parse, a missing checkpoint;
    with ``check_integrity`` also saved_model.pb no longer matching the checksum its
    fingerprint.pb recorded at export, and a graph whose nodes read nodes that do not exist (a
    flipped bit in a name)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"{path} does not exist; pass a SavedModel directory or a .meta/.pbtxt file")
    if os.path.isdir(path):
        for name, text in ((SAVED_MODEL_PB, False), (SAVED_MODEL_PBTXT, True)):
            if os.path.isfile(os.path.join(path, name)):
                return _read_saved_model(path, os.path.join(path, name), text, tags, check_integrity)
            if os.path.lexists(os.path.join(path, name)):
                raise ModelError(f"{os.path.join(path, name)} is not a file; export the model again")
        metas = sorted(f for f in os.listdir(path) if f.endswith(".meta"))
        if len(metas) == 1:
            return read_model_graph(os.path.join(path, metas[0]), tags, check_integrity)
        raise ModelError(
            f"{path} holds no saved_model.pb and no single .meta file; "
            "pass a SavedModel directory or a TF1 .meta/.pbtxt file"
        )
    if path.endswith((".meta", ".pbtxt", ".pbtext")):
        return _read_meta_graph_file(path, check_integrity)
    raise ModelError(f"{path} is not a model; pass a SavedModel directory or a TF1 .meta/.pbtxt file")


def _read_saved_model(root, pb_path, text, tags, check_integrity):
    _, _, saved_model_pb2 = _protos()
    sm = _parse(saved_model_pb2.SavedModel(), _read_bytes(pb_path), pb_path, text)
    if not sm.meta_graphs:
        raise ModelError(f"{pb_path} holds no meta graph; export the model again")
    if check_integrity and not text:
        _check_fingerprint(root, pb_path)  # TensorFlow's fingerprinting needs a meta graph (else it crashes)
    available = [sorted(mg.meta_info_def.tags) for mg in sm.meta_graphs]
    if tags is None:
        index = next((i for i, t in enumerate(available) if t == ["serve"]), 0)
    else:
        want = sorted(tags)
        if want not in available:
            raise ModelError(
                f"{root} has no meta graph tagged {','.join(want)}; available tag sets: "
                + "; ".join(",".join(t) for t in available)
            )
        index = available.index(want)
    prefix = os.path.join(root, VARIABLES_DIR, VARIABLES_PREFIX)
    mg = sm.meta_graphs[index]
    if mg.saver_def.restore_op_name and not os.path.exists(prefix + ".index"):
        raise ModelError(f"{prefix}.index is missing; copy the whole SavedModel directory")
    prefix = prefix if os.path.exists(prefix + ".index") else None
    if check_integrity:
        _check_graph(mg, pb_path)
    return ModelSource(root, "saved_model", mg, prefix, saved_model=sm, meta_graph_index=index, text=text)


def _check_fingerprint(root, pb_path):
    """saved_model.pb carries no checksum of its own; a TF2 export's fingerprint.pb records one
    (saved_model_checksum). A bit flipped inside a string or a number still parses, so compare."""
    path = os.path.join(root, "fingerprint.pb")
    if not os.path.isfile(path):
        return
    from tensorflow.core.protobuf import fingerprint_pb2
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    try:
        recorded = fingerprint_pb2.FingerprintDef.FromString(_read_bytes(path)).saved_model_checksum
        actual = fingerprint_pb2.FingerprintDef.FromString(
            fingerprinting.CreateFingerprintDef(root)
        ).saved_model_checksum
    except (message.DecodeError, fingerprinting.FingerprintException, RuntimeError, ValueError):
        return  # a damaged fingerprint.pb says nothing about saved_model.pb, which parsed
    if recorded and recorded != actual:
        raise ModelError(
            f"{pb_path} does not match the checksum in {path}: it was changed or corrupted after "
            "export; export the model again (or delete fingerprint.pb if you changed it on purpose)"
        )


def _check_graph(meta_graph, path):
    from graphopt.graph.model import ModelGraph

    problems = ModelGraph(meta_graph).check()
    if problems:
        raise ModelError(f"{path} is corrupted ({problems[0]}); export the model again")


def _read_meta_graph_file(path, check_integrity=True):
    _, meta_graph_pb2, _ = _protos()
    text = not path.endswith(".meta")
    mg = _parse(meta_graph_pb2.MetaGraphDef(), _read_bytes(path), path, text)
    if not mg.graph_def.node:
        raise ModelError(f"{path} holds an empty graph; pass the .meta file the Saver wrote")
    prefix = os.path.splitext(path)[0]
    if not os.path.exists(prefix + ".index"):
        tf = _tf()
        latest = tf.train.latest_checkpoint(os.path.dirname(path) or ".")
        if latest is None or not os.path.exists(latest + ".index"):
            raise ModelError(
                f"no checkpoint beside {path} (looked for {prefix}.index); "
                "keep the .meta next to its checkpoint"
            )
        prefix = latest
    if check_integrity:
        _check_graph(mg, path)
    return ModelSource(path, "meta_graph", mg, prefix, text=text)


# ---------------------------------------------------------------------------------------------
# Writing models


def write_saved_model(source: ModelSource, meta_graph, out_dir, keep_object_graph=False):
    """Writes ``meta_graph`` as a SavedModel into ``out_dir`` with the source's assets.

    Unless ``keep_object_graph`` (the object graph was rewritten too), the object graph is dropped
    and the output is a TF1-format SavedModel."""
    _, _, saved_model_pb2 = _protos()
    sm = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    if source.saved_model is not None:
        sm.saved_model_schema_version = source.saved_model.saved_model_schema_version or 1
    mg = sm.meta_graphs.add()
    mg.CopyFrom(meta_graph)
    # Without the object graph, tf.saved_model.load goes through its TF1 path (Saver restore,
    # then the init op), which is the path that knows nothing about Python objects we replaced.
    if not keep_object_graph:
        mg.ClearField("object_graph_def")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, SAVED_MODEL_PB), "wb") as f:
        f.write(sm.SerializeToString())
    if source.kind == "saved_model":
        for sub in ("assets", "assets.extra"):
            src = os.path.join(source.path, sub)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(out_dir, sub))


def write_meta_graph(meta_graph, path, as_text=False):
    """Writes a MetaGraphDef as binary (.meta) or text (.pbtxt)."""
    with open(path, "wb") as f:
        if as_text:
            f.write(text_format.MessageToString(meta_graph).encode())
        else:
            f.write(meta_graph.SerializeToString())


def write_checkpoint_state(directory, prefix_basename):
    """Writes the `checkpoint` file that tf.train.latest_checkpoint reads."""
    with open(os.path.join(directory, "checkpoint"), "w") as f:
        f.write(
            f'model_checkpoint_path: "{prefix_basename}"\nall_model_checkpoint_paths: "{prefix_basename}"\n'
        )


def write_graph_events(logdir, meta_graph, run_name):
    """Writes the meta graph's graph as an event file under LOGDIR/run_name for TensorBoard."""
    tf = _tf()
    path = os.path.join(logdir, run_name)
    os.makedirs(path, exist_ok=True)
    writer = tf.summary.create_file_writer(path)
    with writer.as_default():
        tf.summary.graph(meta_graph.graph_def)
    writer.close()
    return path


def serialize(proto) -> bytes:
    """The wire bytes of a proto (e.g. a checkpoint's object graph, stored as a string tensor)."""
    return proto.SerializeToString()
