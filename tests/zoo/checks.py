"""The checks every zoo model goes through (tests/models/test_zoo.py asserts them, bench/zoo.py
tabulates them): each returns a ``Check`` (passed, what was seen).

- ``tables_found``: every table the model's own layers hold is a table detection finds (matched by
  value: the checkpoint tensor detection names holds the layer's weights);
- ``rewrite_exact``: ``graphopt rewrite`` (``--target ev`` or ``stock``) and ``graphopt validate``
  (both loaders, generated inputs, exact);
- ``load_exact``: an independent ``tf.saved_model.load`` of both, the model's own batch, bit-identical;
- ``oov``: the batch with ids outside every vocabulary: where the original answers, the same
  answer; where it refuses (an id past a dense table's rows), the rewritten answers finite rows;
- ``collisionless``: ``--collisionless`` migrates every table behind a hash or a vocabulary
  lookup, and the migrated model validates exactly;
- ``fit_after_reload``: the way the library reloads to train (``keras.models.load_model`` of the
  converted ``.keras``, ``tf_keras.models.load_model`` of the rewritten SavedModel), compiled with
  SGD (the tables converted with SGD too: dense and sparse SGD agree, where Adam's dense update
  also moves the rows a batch does not look up) and fit on the same batch as the original
  reloaded the same way: the predictions afterwards agree within a tenth of what training the
  tables moved them (frozen tables fail), and fit on new ids runs.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np

from tests.zoo import builders as zoo

FIT_STEPS = 3
FIT_LR = zoo.FIT_LR


@dataclasses.dataclass
class Check:
    passed: bool
    detail: str = ""
    # tf_keras reloads: the rewritten model's predictions on the feed and the OOV batch before any
    # fit, and the regularization loss (sum of model.losses) of the original and the rewritten
    reload: dict | None = None

    def __bool__(self):
        return self.passed


def _saved_model(folder):
    return os.path.join(folder, "saved_model")


def tables_found(folder) -> tuple[Check, int, int]:
    """(check, found, expected): each layer table matched by value to a detected table."""
    import tensorflow as tf

    from graphopt import model_io
    from graphopt.analysis.tables import detect
    from graphopt.graph.model import ModelGraph

    source = model_io.read_model(_saved_model(folder))
    tables = detect(ModelGraph(source.meta_graph)).tables
    reader = tf.train.load_checkpoint(source.checkpoint_prefix)
    stored = [reader.get_tensor(t.checkpoint_key) for t in tables if t.checkpoint_key]
    want = zoo.load_arrays(folder, "tables")
    missing = [
        n for n, v in want.items() if not any(s.shape == v.shape and np.array_equal(s, v) for s in stored)
    ]
    found = len(want) - len(missing)
    detail = f"{found}/{len(want)} layer tables among the {len(tables)} detected"
    if missing:
        detail += f"; not found: {', '.join(missing)}"
    return Check(not missing, detail), found, len(want)


def rewrite_exact(folder, out, target="ev", collisionless=False):
    """(check, RewriteReport): rewrite, then validate exactly."""
    from graphopt.errors import GraphoptError
    from graphopt.rewrite import rewrite_model
    from graphopt.validate import validate_models

    try:
        report = rewrite_model(_saved_model(folder), out, target=target, collisionless=collisionless)
    except GraphoptError as exc:
        return Check(False, f"rewrite refused: {exc}"), None
    if not report.wrote:
        return Check(False, report.why_nothing or report.message), report
    validation = validate_models(_saved_model(folder), out, batches=2, batch_size=16)
    if not validation.passed:
        return Check(False, validation.format().strip().splitlines()[-1]), report
    return Check(True, f"{len(report.plan.tables)} table(s), validate exact"), report


def run_signature(path, feed):
    import tensorflow as tf

    import graphopt  # noqa: F401  (the ops a rewritten model needs)

    fn = tf.saved_model.load(path).signatures["serving_default"]
    spec = fn.structured_input_signature[1]
    args = {k: tf.constant(v, dtype=spec[k].dtype) for k, v in feed.items()}
    return {k: v.numpy() for k, v in fn(**args).items()}


def _outputs(path, feed):
    """The serving signature's outputs, or the error's first line."""
    import tensorflow as tf

    try:
        return run_signature(path, feed)
    except (tf.errors.OpError, ValueError) as exc:
        return str(exc).strip().splitlines()[0][:200]


def load_exact(folder, out) -> Check:
    feed = zoo.load_arrays(folder, "feed")
    a, b = run_signature(_saved_model(folder), feed), run_signature(out, feed)
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    if differ:
        worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in differ)
        return Check(False, f"outputs {differ} differ (max |diff| {worst:.3g})")
    return Check(True, f"{len(a)} output(s) bit-identical on {len(next(iter(feed.values())))} rows")


def oov(folder, out) -> Check:
    feed = zoo.load_arrays(folder, "oov")
    a, b = _outputs(_saved_model(folder), feed), _outputs(out, feed)
    if isinstance(b, str):
        return Check(False, f"the rewritten model refuses ids outside the vocabulary: {b}")
    if isinstance(a, str):
        finite = all(np.all(np.isfinite(v)) for v in b.values())
        return Check(finite, f"original refuses them ({a[:80]}); rewritten answers default rows")
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    return Check(not differ, f"outputs {differ} differ" if differ else "same answer as the original")


def hashed_tables(report, entry) -> list[str]:
    """Tables of a rewrite plan fed by a hashed or looked-up input of the zoo entry."""
    hashed = set(entry["hashed"])
    return [t.name for t in report.plan.tables if {s.split(":", 1)[1] for s in t.signature_inputs} & hashed]


def collisionless(folder, out) -> tuple[Check, int, int]:
    """(check, migrated, hashed) for a model whose ids are hashed or looked up."""
    entry = zoo.load_entry(folder)
    check, report = rewrite_exact(folder, out, collisionless=True)
    if report is None or not report.wrote:
        return check, 0, len(entry["hashed"])
    hashed = hashed_tables(report, entry)
    migrated = [m.table.name for m in report.plan.migrations if m.possible and m.table.name in hashed]
    left = [m.line for m in report.plan.migrations if m.table.name in hashed and not m.possible]
    detail = f"{len(migrated)}/{len(hashed)} hashed tables migrated; {check.detail}"
    if left:
        detail += f"; {left[0]}"
    return Check(bool(check) and len(migrated) == len(hashed) > 0, detail), len(migrated), len(hashed)


# ---------------------------------------------------------------------------------------------
# Fit after reload


def _fit_and_predict(model, feed, labels, compile_fn):
    compile_fn(model)
    model.fit(feed, labels, batch_size=len(labels), epochs=FIT_STEPS, verbose=0, shuffle=False)
    pred = model.predict(feed, verbose=0)
    return np.concatenate(
        [
            np.asarray(p).reshape(len(labels[0]) if isinstance(labels, list) else len(labels), -1)
            for p in (pred if isinstance(pred, list) else [pred])
        ],
        axis=1,
    )


def freeze_tables(model) -> int:
    """Makes the model's table layers untrainable (the baseline a frozen table would give)."""
    n = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if any(c.__name__ in ("Embedding", "MultiHotEmbedding") for c in type(layer).__mro__):
            layer.trainable = False
            n += 1
    return n


def _compare_fits(load_original, rewritten, feed, oov_feed, labels, compile_fn) -> dict:
    """Fits the original and the rewritten model alike; passes when the rewritten one ends where
    the original does, within a tenth of what training the tables moved the original (so frozen
    tables fail), and fit on new ids runs."""
    a = _fit_and_predict(load_original(), feed, labels, compile_fn)
    b = _fit_and_predict(rewritten, feed, labels, compile_fn)
    frozen = load_original()
    freeze_tables(frozen)
    c = _fit_and_predict(frozen, feed, labels, compile_fn)
    diff, moved = float(np.max(np.abs(a - b))), float(np.max(np.abs(a - c)))
    passed = diff <= 0.1 * moved and moved > 0
    try:
        rewritten.fit(oov_feed, labels, batch_size=len(next(iter(oov_feed.values()))), epochs=1, verbose=0)
        new_ids = "fit on new ids runs"
    except Exception as exc:  # noqa: BLE001  (any failure is the finding)
        passed, new_ids = False, f"fit on new ids fails: {str(exc).strip().splitlines()[0][:160]}"
    detail = (
        f"after {FIT_STEPS} steps max |diff| {diff:.3g} vs the original "
        f"(frozen tables: {moved:.3g}); {new_ids}"
    )
    return {"passed": passed, "detail": detail}


def _labels(feed, outputs):
    n = len(next(iter(feed.values())))
    y = np.random.RandomState(1).randint(0, 2, (n, 1)).astype("float32")
    return [y] * outputs if outputs > 1 else y


def keras_fit_after_reload(folder, out_keras) -> Check:
    """Keras 3: ``graphopt rewrite model.keras``, reload both with keras.models.load_model, fit."""
    import keras

    import graphopt.keras  # noqa: F401  (DynamicEmbedding is registered for load_model)
    from graphopt.errors import GraphoptError
    from graphopt.keras.convert import convert_file

    zoo.register_custom_layers()
    src = os.path.join(folder, "model.keras")
    try:
        convert_file(src, out_keras, overwrite=True, optimizer=keras.optimizers.SGD(FIT_LR))
    except GraphoptError as exc:
        return Check(False, f"rewrite of the .keras file refused: {exc}")
    feed, oov_feed = zoo.load_arrays(folder, "feed"), zoo.load_arrays(folder, "oov")
    rewritten = keras.models.load_model(out_keras)

    def compile_fn(m):
        m.compile(keras.optimizers.SGD(FIT_LR), "binary_crossentropy")

    keras.utils.set_random_seed(0)
    result = _compare_fits(
        lambda: keras.models.load_model(src), rewritten, feed, oov_feed, _labels(feed, 1), compile_fn
    )
    return Check(result["passed"], result["detail"])


_TF_KERAS_CHILD = r"""
import json, os, sys
import numpy as np
import tf_keras
import graphopt
from tests.zoo import builders as zoo, checks as zoo_checks
custom = {}
try:
    from deepctr.layers import custom_objects as custom
except ImportError:
    pass
results = {}
for folder, out in json.loads(sys.argv[1]):
    feed, oov_feed = zoo.load_arrays(folder, "feed"), zoo.load_arrays(folder, "oov")
    try:
        load = lambda: tf_keras.models.load_model(os.path.join(folder, "saved_model"), custom_objects=custom)
        rewritten = tf_keras.models.load_model(out, custom_objects=custom)
        outputs = len(rewritten.outputs)
        compile_fn = lambda m: m.compile(tf_keras.optimizers.SGD(zoo_checks.FIT_LR), "binary_crossentropy")
        tf_keras.utils.set_random_seed(0)
        # Before any fit: what the reload predicts (seen and unseen ids) and its regularization loss.
        original = load()
        before = {
            "predict": [rewritten.predict(f, verbose=0).tolist() for f in (feed, oov_feed)]
            if outputs == 1 else None,
            "losses": [float(sum(float(x) for x in m.losses)) for m in (original, rewritten)],
        }
        results[folder] = zoo_checks._compare_fits(
            load, rewritten, feed, oov_feed, zoo_checks._labels(feed, outputs), compile_fn
        )
        results[folder]["reload"] = before
    except Exception as exc:
        results[folder] = {"passed": False, "detail": f"{type(exc).__name__}: {str(exc).strip()[:200]}"}
print("ZOO-RESULTS " + json.dumps(results))
"""


def tf_keras_fit_after_reload(pairs) -> dict[str, Check]:
    """tf_keras models: ``tf_keras.models.load_model`` of the original and the rewritten
    SavedModel, fit on the same batch (in a subprocess with ``TF_USE_LEGACY_KERAS=1``, as the
    libraries need). ``pairs``: [(zoo folder, rewritten SavedModel)]; {folder: Check}."""
    env = zoo.child_environment(legacy=True)
    proc = subprocess.run(
        [sys.executable, "-c", _TF_KERAS_CHILD, json.dumps(pairs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ZOO-RESULTS ")), None)
    if line is None:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {f: Check(False, f"the tf_keras reload process failed: {why}") for f, _ in pairs}
    results = json.loads(line[len("ZOO-RESULTS ") :])
    return {f: Check(r["passed"], r["detail"], r.get("reload")) for f, r in results.items()}
