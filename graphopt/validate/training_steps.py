"""The training check: N training steps of an original TF1 training graph and of its rewrite, compared.

Both graphs are imported from their meta graphs, restored from their checkpoints and run their
``train_op`` (the collection's) on the same batches; afterwards the loss of every step, and each
converted table's rows and slots, are compared bit for bit: the original's dense variable and
slot variables against the EmbeddingVariable's export. Rows the batches touched (find-or-insert
counted them) and untouched rows are reported apart, because lazy Adam moves only the former.
"""

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from graphopt import model_io
from graphopt.errors import ModelError
from graphopt.ev import contract


@dataclasses.dataclass
class RowComparison:
    """One array (a table's values or one slot) of the original against the rewrite."""

    what: str  # "values" or "slot <name>"
    rows: int
    differing_rows: int
    max_abs_diff: float
    max_ulps: int  # the largest distance in float32 units in the last place (0: bit-identical)

    @property
    def identical(self) -> bool:
        return self.differing_rows == 0

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TableTraining:
    """A table after the steps: touched and untouched rows, values and slots."""

    name: str
    optimizer: str
    touched: list[RowComparison]
    untouched: list[RowComparison]
    # The rewrite's untouched rows against their values before the steps: the lazy rule says
    # they do not move (identical), whatever the original's optimizer does with them.
    lazy: list[RowComparison]

    @property
    def identical(self) -> bool:
        return all(c.identical for c in self.touched + self.untouched)

    def to_dict(self):
        return {
            "name": self.name,
            "optimizer": self.optimizer,
            "identical": self.identical,
            "touched": [c.to_dict() for c in self.touched],
            "untouched": [c.to_dict() for c in self.untouched],
            "lazy": [c.to_dict() for c in self.lazy],
        }


@dataclasses.dataclass
class TrainingComparison:
    """``steps`` training steps of both graphs."""

    steps: int
    losses_original: list[float]
    losses_rewritten: list[float]
    tables: list[TableTraining]

    @property
    def losses_identical(self) -> bool:
        return np.array_equal(
            np.asarray(self.losses_original, np.float32).view(np.uint32),
            np.asarray(self.losses_rewritten, np.float32).view(np.uint32),
        )

    @property
    def identical(self) -> bool:
        return self.losses_identical and all(t.identical for t in self.tables)

    def to_dict(self):
        return {
            "steps": self.steps,
            "identical": self.identical,
            "losses_identical": self.losses_identical,
            "losses_original": self.losses_original,
            "losses_rewritten": self.losses_rewritten,
            "tables": [t.to_dict() for t in self.tables],
        }


def _tf():
    import tensorflow as tf

    return tf


def _trained_tables(rewritten_dir) -> list[dict]:
    path = os.path.join(rewritten_dir, contract.MANIFEST)
    try:
        with open(path) as f:
            tables = json.load(f)["tables"]
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(
            f"{path} cannot be read ({e}); give the output directory of graphopt rewrite"
        ) from None
    return [t for t in tables if "training" in t]


class _Session:
    """A TF1 training graph imported, restored and ready to step."""

    def __init__(self, path, loss):
        from graphopt.ops.library import load_library

        load_library()  # the rewrite's GraphoptEv* ops, before its meta graph is imported
        tf = _tf()
        v1 = tf.compat.v1
        source = model_io.read_model(path)
        if source.kind == "saved_model":
            raise ModelError(
                f"{path} is a SavedModel; the training check takes a TF1 checkpoint's meta graph"
            )
        self.graph = tf.Graph()
        with self.graph.as_default():
            saver = v1.train.import_meta_graph(source.meta_graph, clear_devices=True)
            train_ops = v1.get_collection(v1.GraphKeys.TRAIN_OP)
            if not train_ops:
                raise ModelError(
                    f"{path} has no train op in its train_op collection; add it with "
                    "tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.TRAIN_OP, train_op)"
                )
            self.train_op = train_ops[0]
            try:
                self.loss = self.graph.get_tensor_by_name(loss if ":" in loss else loss + ":0")
            except (KeyError, ValueError):
                raise ModelError(f"{path} has no loss tensor {loss!r}; name it with --loss") from None
            self.session = v1.Session(graph=self.graph)
            saver.restore(self.session, source.checkpoint_prefix)
            self.session.run(v1.tables_initializer())

    def feed(self, batch):
        out = {}
        for name, value in batch.items():
            try:
                out[self.graph.get_tensor_by_name(name if ":" in name else name + ":0")] = value
            except (KeyError, ValueError):
                raise ModelError(f"the training graph has no input {name!r}") from None
        return out

    def step(self, batch) -> float:
        _, loss = self.session.run([self.train_op, self.loss], self.feed(batch))
        return float(loss)

    def read_dense(self, handle_name) -> np.ndarray:
        tf = _tf()
        with self.graph.as_default():
            handle = self.graph.get_tensor_by_name(handle_name + ":0")
            return self.session.run(tf.raw_ops.ReadVariableOp(resource=handle, dtype=tf.float32))

    def export_table(self, handle_name, dim, num_slots):
        from graphopt.ops.library import load_library

        with self.graph.as_default():
            handle = self.graph.get_tensor_by_name(handle_name + ":0")
            out = load_library().graphopt_ev_export_with_slots(handle, dim=dim, num_slots=num_slots)
            return self.session.run(out)

    def close(self):
        self.session.close()


def _compare(what, a, b) -> RowComparison:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if not len(a):
        return RowComparison(what, 0, 0, 0.0, 0)
    differ = np.any(a.view(np.uint32) != b.view(np.uint32), axis=1)
    diff = float(np.max(np.abs(a.astype(np.float64) - b)))
    return RowComparison(
        what, len(a), int(differ.sum()), diff, int(np.max(np.abs(_ordered(a) - _ordered(b))))
    )


def _ordered(x) -> np.ndarray:
    """float32 bit patterns as integers in the floats' order (adjacent floats differ by 1)."""
    bits = x.view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def compare_training(
    original, rewritten, batches: Sequence[dict[str, np.ndarray]], steps: int = 1, loss: str = "loss"
) -> TrainingComparison:
    """Runs ``steps`` training steps (cycling through ``batches``) of the original TF1 training
    graph (``original``: its meta graph file) and of its rewrite (``rewritten``: graphopt rewrite's
    output directory or meta graph), and compares losses, rows and slots."""
    rewritten_dir = rewritten if os.path.isdir(rewritten) else os.path.dirname(rewritten)
    tables = _trained_tables(rewritten_dir)
    if not tables:
        raise ModelError(
            f"{rewritten} converted no trained table; the training check needs a TF1 "
            "training graph whose optimizer updates a table"
        )
    if not batches or steps < 1:
        raise ModelError("the training check needs at least one batch and one step")
    before, after = _Session(original, loss), _Session(rewritten, loss)
    try:
        # Rows and slots as restored (both graphs start from the same values).
        start = {
            t["name"]: {
                "values": before.read_dense(t["handles"][0]),
                **{f"slot {n}": before.read_dense(h) for n, h in t["training"]["slots"].items()},
            }
            for t in tables
        }
        losses: list[list[float]] = [[], []]
        for i in range(steps):
            batch = batches[i % len(batches)]
            losses[0].append(before.step(batch))
            losses[1].append(after.step(batch))
        results = []
        for t in tables:
            training = t["training"]
            rows, dim = t["shape"]
            slots = training["slots"]
            dense = before.read_dense(t["handles"][0])
            dense_slots = {name: before.read_dense(handle) for name, handle in slots.items()}
            keys, values, freqs, _, slot_values = after.export_table(t["handles"][0], dim, len(slots))[:5]
            ev_slots = dict(zip(slots, slot_values, strict=True))
            if len(keys) != rows or np.any(np.sort(keys) != np.arange(rows)):
                raise ModelError(
                    f"table {t['name']}: the rewrite holds {len(keys)} keys, not ids 0..{rows - 1}; "
                    "the training check keeps ids inside the original vocabulary"
                )
            order = np.argsort(keys)
            keys, values, freqs = keys[order], values[order], freqs[order]
            touched = freqs > 0
            parts: dict[str, list[RowComparison]] = {"touched": [], "untouched": [], "lazy": []}
            ev = {"values": values, **{f"slot {n}": ev_slots[n][order] for n in slots}}
            dense_all = {"values": dense, **{f"slot {n}": dense_slots[n] for n in slots}}
            for what in ev:
                parts["touched"].append(_compare(what, dense_all[what][keys[touched]], ev[what][touched]))
                parts["untouched"].append(_compare(what, dense_all[what][keys[~touched]], ev[what][~touched]))
                parts["lazy"].append(
                    _compare(what, start[t["name"]][what][keys[~touched]], ev[what][~touched])
                )
            results.append(TableTraining(t["name"], training["optimizer"], **parts))
        return TrainingComparison(steps, losses[0], losses[1], results)
    finally:
        before.close()
        after.close()


def generated_batch(original, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random batch for every placeholder the train op reads: an integer input that feeds a
    table's lookup draws ids inside the table (the smallest, where it feeds several), other
    integers 0/1, floats uniform in [0, 1) (labels included), strings short tokens (mostly out
    of a vocabulary: give real ones with --data)."""
    from graphopt.analysis.tables import detect
    from graphopt.graph import nodes
    from graphopt.graph.model import ModelGraph, TensorRef

    model = ModelGraph(model_io.read_model(original).meta_graph)
    rows: dict[str, int] = {}
    for table in detect(model).tables:
        for site in table.sites:
            for place in model.trace_back(site.body, TensorRef.parse(site.ids)):
                rows[place.ref.node] = min(rows.get(place.ref.node, table.rows), table.rows)
    rng = np.random.default_rng(seed)
    out = {}
    for node in model.graph.nodes():
        if node.op != "Placeholder":
            continue
        name = nodes.dtype_name(nodes.attr_value(node, "dtype"))
        dtype = np.dtype(object) if name == "string" else np.dtype(name)
        shape = [
            batch_size if d is None or d < 0 else d for d in (nodes.attr_value(node, "shape") or [batch_size])
        ]
        if dtype.kind in "iu":
            out[node.name] = rng.integers(0, rows.get(node.name, 2), shape).astype(dtype)
        elif dtype.kind == "f":
            out[node.name] = rng.random(shape).astype(dtype)
        elif dtype.kind == "O":
            out[node.name] = np.array(
                [f"t{i}" for i in rng.integers(0, 10, int(np.prod(shape)))], dtype=object
            ).reshape(shape)
        elif dtype.kind == "b":
            out[node.name] = rng.integers(0, 2, shape).astype(bool)
    return out


def passed(result: TrainingComparison, atol: float = 0.0) -> bool:
    """Losses and touched rows within ``atol`` (0: bit-identical); rows outside the batches
    unchanged in the rewrite (the lazy rule) and, except for Adam, equal to the original's."""

    def close(c: RowComparison) -> bool:
        return c.identical if atol == 0 else c.max_abs_diff <= atol

    losses = np.abs(np.asarray(result.losses_original) - np.asarray(result.losses_rewritten))
    ok = result.losses_identical if atol == 0 else bool(np.all(losses <= atol))
    for t in result.tables:
        ok &= all(close(c) for c in t.touched) and all(c.identical for c in t.lazy)
        if t.optimizer != "adam":
            ok &= all(close(c) for c in t.untouched)
    return bool(ok)


def format_result(result: TrainingComparison) -> str:
    loss_diff = max(abs(a - b) for a, b in zip(result.losses_original, result.losses_rewritten, strict=True))
    lines = [
        f"{result.steps} training step(s): losses "
        + ("bit-identical" if result.losses_identical else f"differ by up to {loss_diff:.3g}")
    ]
    for t in result.tables:
        parts = []
        for label in ("touched", "untouched", "lazy"):
            comparisons = getattr(t, label)
            rows = comparisons[0].rows if comparisons else 0
            bad = [c for c in comparisons if not c.identical]
            what = (
                "identical"
                if not bad
                else ", ".join(
                    f"{c.what}: {c.differing_rows} row(s) differ, "
                    f"max |diff| {c.max_abs_diff:.3g} ({c.max_ulps} ulp)"
                    for c in bad
                )
            )
            name = {
                "touched": "touched rows",
                "untouched": "untouched rows vs original",
                "lazy": "untouched rows vs start",
            }[label]
            parts.append(f"    {name} ({rows}): {what}")
        lines.append(f"  {t.name} ({t.optimizer})")
        lines += parts
    return "\n".join(lines)
