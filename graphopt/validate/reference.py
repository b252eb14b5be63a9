"""Validating a migrated model against outputs recorded elsewhere, and its tables against the source's.

A TFRA model runs in TensorFlow <= 2.16 with TFRA's ops, its migration in 2.21 with graphopt's: the
two cannot load in one process. The original's outputs therefore come from a file, an ``.npz``
written in the source environment (tools/tfra/build_fixtures.py writes one per model):

    inputs/<signature>/<input>/<batch>    the arrays fed
    outputs/<signature>/<output>/<batch>  what the original returned
    _environment                          (optional) JSON: the versions it was recorded with

``validate_reference`` runs the migrated model (SavedModel: both loaders; TF1 .meta: a Session
with its Saver) on each batch and compares output by output. With the original model, it also
compares every table's rows, as the migrated model holds them after its restore (exported from the
live table), with the original checkpoint's, key by key, bit for bit, and each optimizer slot
(``K-slot-<name>``) with the source's slot table: a wrong key or row planted anywhere between the
source checkpoint and the served table fails it.
"""

import dataclasses
import json
import os

import numpy as np

from graphopt.errors import DataError, ModelError


def _tf():
    import tensorflow as tf

    return tf


@dataclasses.dataclass
class Check:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'} {self.name}: {self.detail}"


@dataclasses.dataclass
class ReferenceReport:
    rewritten: str
    reference: str
    environment: dict
    checks: list[Check] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def format(self) -> str:
        env = ", ".join(f"{k} {v}" for k, v in self.environment.items()) or "unknown environment"
        if self.reference:
            lines = [f"{self.rewritten} against {self.reference} (recorded with {env})"]
        else:
            lines = [f"{self.rewritten}: tables against the original's checkpoint (no recorded outputs)"]
        lines += [c.line() for c in self.checks]
        lines.append("validation " + ("passed" if self.passed else "failed"))
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "rewritten": self.rewritten,
                "reference": self.reference,
                "environment": self.environment,
                "passed": self.passed,
                "checks": [dataclasses.asdict(c) for c in self.checks],
            },
            indent=1,
        )


def read_reference(path):
    """({signature: [(inputs, outputs)] by batch}, environment) of a reference .npz."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"--reference-outputs {path} cannot be read ({exc}); give the .npz the recording helper wrote"
        ) from None
    env = {}
    if "_environment" in arrays:
        try:
            env = json.loads(str(arrays.pop("_environment")))
        except ValueError:
            env = {}
    batches: dict = {}
    for key, value in arrays.items():
        parts = key.split("/")
        if len(parts) != 4 or parts[0] not in ("inputs", "outputs") or not parts[3].isdigit():
            raise DataError(
                f"--reference-outputs {path}: array {key!r} is not inputs/<signature>/<name>/<batch> "
                "or outputs/<signature>/<name>/<batch>; record it with the helper (docs/migration.md)"
            )
        kind, sig, name, i = parts
        per = batches.setdefault(sig, {}).setdefault(int(i), ({}, {}))
        per[0 if kind == "inputs" else 1][name] = value
    if not batches or not all(o for sig in batches.values() for _, o in sig.values()):
        raise DataError(f"--reference-outputs {path} holds no recorded outputs; record them with the helper")
    return {sig: [b[i] for i in sorted(b)] for sig, b in batches.items()}, env


class MetaGraphModel:
    """A TF1 .meta + checkpoint in a Session: import, Saver restore, signatures of the meta graph."""

    loader = "session"

    def __init__(self, path):
        from graphopt.graph.meta_graphs import signature_tensor_infos
        from graphopt.model_io import read_model
        from graphopt.validate.loaders import register_graphopt_ops

        register_graphopt_ops()
        tf = _tf()
        source = read_model(path)
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        from graphopt.validate.loaders import describe_failure, load_failures

        try:
            with self.graph.as_default():
                saver = tf.compat.v1.train.import_meta_graph(source.meta_graph)
                saver.restore(self.session, source.checkpoint_prefix)
        except load_failures() as exc:
            self.session.close()
            raise ModelError(f"{path}: a Session cannot load it: {describe_failure(exc)}") from exc
        self._names = {
            name: ({k: i[0] for k, i in s["inputs"].items()}, {k: i[0] for k, i in s["outputs"].items()})
            for name, s in signature_tensor_infos(source.meta_graph).items()
        }

    def run(self, signature, feeds):
        if signature not in self._names:
            raise ModelError(
                f"the migrated model has no signature {signature!r}; it has {sorted(self._names)}"
            )
        ins, outs = self._names[signature]
        return self.session.run(dict(outs), {ins[k]: v for k, v in feeds.items()})

    def close(self):
        self.session.close()


def _models(path, loader):
    from graphopt.validate.loaders import load_model

    if not os.path.isdir(path):
        return [MetaGraphModel(path)]
    names = ("tf2", "session") if loader == "both" else (loader,)
    return [load_model(path, name) for name in names]


def _compare(want, got, atol, rtol):
    if want.shape != got.shape or want.dtype != got.dtype:
        return False, f"{got.dtype}{list(got.shape)} where the original gave {want.dtype}{list(want.shape)}"
    if np.array_equal(want, got):
        return True, "bit-identical"
    diff = float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64))))
    # None: the option was not given (validate's per-row-dtype defaults do not apply to a
    # reference file, which records outputs, not rows); it means 0.
    atol, rtol = atol or 0.0, rtol or 0.0
    ok = bool(np.allclose(got, want, atol=atol, rtol=rtol)) if (atol or rtol) else False
    return ok, f"max |diff| {diff:.3g}" + (f" (atol {atol:g}, rtol {rtol:g})" if ok else "")


def _session_tables(model, handles):
    """{handle node: (keys, values)} exported from the live tables of a loaded model."""
    from graphopt.ops.library import load_library

    lib = load_library()
    graph, session = getattr(model, "graph", None), getattr(model, "session", None)
    if graph is None:
        return {}
    out = {}
    with graph.as_default():
        for name in handles:
            try:
                op = graph.get_operation_by_name(name)
            except KeyError:
                continue
            dim = op.get_attr("dim")
            out[name] = tuple(lib.graphopt_ev_export(op.outputs[0], dim=dim))
    return dict(zip(out, session.run(list(out.values())), strict=True)) if out else {}


def _sorted_rows(keys, values):
    order = np.argsort(keys, kind="stable")
    return keys[order], values[order]


def table_checks(original, rewritten_model, rewritten_prefix) -> list[Check]:
    """The original's tables against the migrated model's, key by key (rows and slots)."""
    from graphopt.analysis.sources import analyze
    from graphopt.graph.model import ModelGraph
    from graphopt.model_io import read_model

    tf = _tf()
    source = read_model(original)
    analysis = analyze(ModelGraph(source.meta_graph))
    if analysis.system is None:
        raise ModelError(f"{original} holds no TFRA or DeepRec table; pass the model the migration read")
    src = tf.train.load_checkpoint(source.checkpoint_prefix)
    dst = tf.train.load_checkpoint(rewritten_prefix)
    live = _session_tables(rewritten_model, [t.name for t in analysis.served])
    checks = []
    for table in analysis.served:
        k = table.checkpoint_key
        source_keys = src.get_tensor(f"{k}-keys")
        if table.key_dtype == "string":  # migrated with --collisionless: keyed by collisionless keys
            from graphopt.ops.fallback import collisionless_key

            source_keys = collisionless_key(source_keys).numpy()
        want_k, want_v = _sorted_rows(source_keys, src.get_tensor(f"{k}-values"))
        counts = table.system == "deeprec"  # DeepRec EVs carry freqs and versions; check them too
        if counts:
            want_f, want_ver = (
                _sorted_rows(src.get_tensor(f"{k}-keys"), src.get_tensor(f"{k}-{c}"))[1]
                for c in ("freqs", "versions")
            )
        stored = tuple(dst.get_tensor(f"{k}-{c}") for c in ("keys", "values", "freqs", "versions"))
        places = [("checkpoint", *stored)]
        if table.name in live:
            places.append(("served table", *live[table.name]))
        for where, keys, values, freqs, versions in places:
            got_k, got_v = _sorted_rows(keys, values)
            if got_k.shape != want_k.shape or not np.array_equal(got_k, want_k):
                extra = np.setdiff1d(got_k, want_k)[:3].tolist()
                missing = np.setdiff1d(want_k, got_k)[:3].tolist()
                detail = (
                    f"{len(got_k)} keys, the original {len(want_k)}; "
                    f"not in the original: {extra}, missing: {missing}"
                )
                checks.append(Check(f"table {table.name} keys ({where})", False, detail))
                continue
            bad = np.flatnonzero(~np.all(got_v == want_v, axis=1))
            detail = (
                f"{len(got_k)} rows bit-identical"
                if not len(bad)
                else f"{len(bad)} of {len(got_k)} rows differ, first at key {int(got_k[bad[0]])}"
            )
            checks.append(Check(f"table {table.name} rows ({where})", not len(bad), detail))
            if counts:
                order = np.argsort(keys, kind="stable")
                same = np.array_equal(freqs[order], want_f) and np.array_equal(versions[order], want_ver)
                detail = "equal to the original's" if same else "differ from the original's"
                checks.append(Check(f"table {table.name} freqs and versions ({where})", same, detail))
        for slot in table.slots:
            from graphopt.checkpoint.migrate import aligned_slot, slot_init

            name = f"{k}-slot-{slot.slot_name}"
            main_keys = dst.get_tensor(f"{k}-keys")
            want = aligned_slot(
                main_keys,
                src.get_tensor(f"{slot.checkpoint_key}-keys"),
                src.get_tensor(f"{slot.checkpoint_key}-values"),
                slot_init(slot),
                table.dim,
            )
            try:
                got = dst.get_tensor(name)
            except (tf.errors.OpError, ValueError):
                checks.append(Check(f"slot {name}", False, "missing from the migrated checkpoint"))
                continue
            same = got.shape == want.shape and np.array_equal(got, want)
            checks.append(
                Check(
                    f"slot {name}",
                    same,
                    "bit-identical to " + slot.name if same else "differs from " + slot.name,
                )
            )
    return checks


def validate_reference(
    rewritten, reference=None, original=None, loader="both", atol=0.0, rtol=0.0
) -> ReferenceReport:
    """Checks the migrated model ``rewritten`` against the outputs recorded in ``reference`` (and,
    with ``original``, its tables against the original's)."""
    batches, env = read_reference(reference) if reference is not None else ({}, {})
    report = ReferenceReport(os.fspath(rewritten), os.fspath(reference) if reference else "", env)
    models = _models(os.fspath(rewritten), loader)
    try:
        for model in models:
            for sig, recorded in sorted(batches.items()):
                for i, (feeds, want) in enumerate(recorded):
                    try:
                        got = model.run(sig, feeds)
                    except _tf().errors.OpError as exc:
                        msg = str(exc).strip().splitlines()[0]
                        report.checks.append(Check(f"{model.loader} {sig} batch {i}", False, msg))
                        continue
                    for name, value in sorted(want.items()):
                        if name not in got:
                            report.checks.append(
                                Check(f"{model.loader} {sig}/{name} batch {i}", False, "no such output")
                            )
                            continue
                        ok, detail = _compare(value, np.asarray(got[name]), atol, rtol)
                        report.checks.append(Check(f"{model.loader} {sig}/{name} batch {i}", ok, detail))
        if original is not None:
            from graphopt.model_io import read_model

            prefix = read_model(os.fspath(rewritten)).checkpoint_prefix
            session_model = next((m for m in models if hasattr(m, "session")), None)
            report.checks += table_checks(os.fspath(original), session_model, prefix)
    finally:
        for m in models:
            m.close()
    return report
