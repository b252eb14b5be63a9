"""``validate_models``: the pair read and analysed once, structural checks of it, then both models
run side by side, then the report."""

import contextlib
import dataclasses
import os
import tempfile

import numpy as np

from graphopt import model_io
from graphopt.errors import DataError, GraphoptError, ModelError
from graphopt.graph import io, meta_graphs
from graphopt.validate import compression
from graphopt.validate.batching import batch_dependence
from graphopt.validate.batching import describe as describe_batch_dependence
from graphopt.validate.compare import OutputComparison, Tolerance
from graphopt.validate.consumers import input_uses
from graphopt.validate.inputs import (
    HASHED_WORD_PREFIX,
    MAX_LARGE_BATCH,
    WORDS_PER_BUCKET,
    generate_cases,
    is_batched,
    one_row_feeds,
    read_data_cases,
    resolve_id_ranges,
    table_id_ranges,
)
from graphopt.validate.loaders import (
    DEFAULT_TAGS,
    LOADERS,
    check_saved_model_dir,
    describe_failure,
    load_failures,
    load_model,
)
from graphopt.validate.oov import probe_oov
from graphopt.validate.pair import ModelPair
from graphopt.validate.report import SignatureRun, ValidationReport
from graphopt.validate.structure import run_structural_checks
from graphopt.validate.vocabulary import UNKNOWN_WORDS, string_vocabulary

DEFAULT_BATCHES = 4
DEFAULT_BATCH_SIZE = 64


def validate_models(
    original,
    rewritten,
    signatures=None,
    batches=DEFAULT_BATCHES,
    batch_size=DEFAULT_BATCH_SIZE,
    data=None,
    atol=None,
    rtol=None,
    loader="both",
    id_ranges=None,
    vocabularies=None,
    seed=0,
    tags=DEFAULT_TAGS,
    oov=True,
    data_readers=(),
    batching=False,
):
    """Check ``rewritten`` against ``original``; returns a ValidationReport (see ``.passed``).

    A problem with the rewritten model is a finding in the report; a problem with the
    arguments or the original model raises GraphoptError.

    ``id_ranges`` maps integer input names to a row count or a ``(low, high)`` pair: the ids
    generated for that input stay inside it, and ids outside it are probed for the
    out-of-vocabulary report. ``vocabularies`` maps string inputs to the words to draw.
    ``data_readers`` (graphopt.validate.inputs.DataReader) read ``data`` files of formats of their
    own, e.g. the course's samples (graphopt.course.data.samples_reader).
    ``batching`` adds a note per signature and loader: how far the rewritten model's answer to
    an example alone differs from its answer inside the first batch (graphopt.validate.batching).

    ``atol`` / ``rtol`` None: exact, or for a compressed rewrite (``rewrite --row-dtype``) the row
    dtype's default (graphopt.validate.compression.DEFAULT_ATOL); a compressed rewrite's rows are
    checked against their error bound, and with ``data`` that has a binary ``label`` column the
    ROC AUC change of each one-score-per-row output is reported.
    """
    compressed = compression.compressed_tables(rewritten) if os.path.isdir(rewritten) else []
    row_dtype = compression.row_dtype_of(compressed)
    if atol is None and rtol is None and row_dtype is not None:
        atol = compression.DEFAULT_ATOL[row_dtype]
    tolerance = _tolerance(atol or 0.0, rtol or 0.0)
    if loader not in (*LOADERS, "both"):
        raise GraphoptError(f"unknown loader {loader!r}; use tf2, session or both")
    if batches < 0 or batch_size < 1:
        raise GraphoptError(
            f"batches={batches}, batch_size={batch_size}: give batches >= 0 and batch size >= 1"
        )
    loaders = list(LOADERS) if loader == "both" else [loader]
    # A path that is not a SavedModel at all is a usage mistake; a SavedModel that is broken
    # inside is what validation exists to report.
    check_saved_model_dir(original)
    check_saved_model_dir(rewritten)
    report = ValidationReport(original, rewritten, tolerance, loaders)
    original_source = model_io.read_model(original, tags)
    _verify_variables(original_source)  # a damaged original is bad input, not a finding
    try:
        # The rewritten graph is compared, not trusted: an edit there is for the checks to find.
        rewritten_source = model_io.read_model(rewritten, tags, check_integrity=False)
        _verify_variables(rewritten_source)
    except ModelError as exc:
        report.problems.append(f"the rewritten model cannot be read: {exc}")
        return report
    pair = ModelPair(original_source, rewritten_source, tuple(tags)).analyse()
    pair.compressed = {t["checkpoint_key"]: t["row_dtype"] for t in compressed}
    if pair.tables_unknown is not None:
        report.notes.append(
            f"the original's embedding tables could not be read ({pair.tables_unknown}); "
            "integer inputs use given or default id ranges"
        )
    report.checks = run_structural_checks(pair)
    labels = None
    if compressed:
        check, figures = compression.check_rows(original, rewritten, compressed)
        report.checks.append(check)
        report.compression = {"row_dtype": row_dtype, "tables": [f.to_dict() for f in figures], "auc": []}
        labels = compression.data_labels(data)
    learned = table_id_ranges(pair.tables, pair.folded)
    model_words = string_vocabulary(pair.original_graph, original)
    all_uses = input_uses(pair.original_graph, original)
    original_meta, rewritten_meta = original_source.meta_graph, rewritten_source.meta_graph
    # A TF1-format rewrite of a TF2-native original (stock target, partitioned tables) loads through
    # TensorFlow's TF1 path, where Grappler optimizes differently from the object-graph path; the
    # tf2 loader then reads the original through the same TF1 path, so the comparison is like with like.
    v1_original = (
        meta_graphs.has_object_graph(original_meta)
        and not meta_graphs.has_object_graph(rewritten_meta)
        and "tf2" in loaders
    )
    if v1_original:
        report.notes.append(
            "tf2 loader: the rewritten model has no object graph, so tf.saved_model.load reads it through "
            "TensorFlow's TF1 path; the original was loaded without its object graph too (the same path), "
            "because Grappler optimizes the two paths differently and the last bit of a float may move"
        )
    rewritten_default = (
        "the default row (values that no valid id gives)"
        if pair.ev_ops
        else "values that no valid id gives (zeros, or another fill)"
    )
    inputs = {}  # signature -> SignatureInputs: the same inputs for every loader
    probed = {}  # input specs -> the signature already probed with them

    def run_loader(name, original_path):
        original_model = load_model(original_path, name, tags)
        try:
            rewritten_model = load_model(rewritten, name, tags)
        except ModelError as exc:
            report.problems.append(f"{name} loader: the rewritten model does not load: {exc}")
            original_model.close()
            return
        try:
            for sig in _signature_names(original_model, signatures):
                spec = original_model.signatures[sig]
                uses = all_uses.get(sig, {})
                if sig not in inputs:
                    inputs[sig] = _signature_inputs(
                        spec,
                        data,
                        batches,
                        batch_size,
                        resolve_id_ranges(spec, id_ranges, learned.get(sig), uses),
                        _words(spec, vocabularies, model_words, uses),
                        seed,
                        uses,
                        readers=data_readers,
                    )
                    report.inputs[sig] = inputs[sig].plan
                chosen = inputs[sig]
                run = run_signature(
                    original_model, rewritten_model, spec, chosen.cases, tolerance, keep=labels is not None
                )
                report.runs.append(run)
                if labels is not None:
                    report.compression["auc"] += _auc_changes(run, labels)
                if batching and sig in rewritten_model.signatures and is_batched(spec, uses) and chosen.cases:
                    case = chosen.cases[0]
                    worst = batch_dependence(rewritten_model, sig, case)
                    report.notes.append(describe_batch_dependence(name, sig, case.rows, worst))
                key = tuple(sorted(spec.inputs.items()))
                if oov and key not in probed and sig in rewritten_model.signatures and is_batched(spec, uses):
                    # Signatures taking the same inputs (Keras exports "serve" and
                    # "serving_default") would repeat the same probes.
                    probed[key] = sig
                    one_row = one_row_feeds(spec, chosen.ranges, chosen.words, seed, uses)
                    report.oov += probe_oov(
                        original_model, rewritten_model, spec, one_row, chosen.ranges, rewritten_default
                    )
        finally:
            original_model.close()
            rewritten_model.close()

    with contextlib.ExitStack() as stack:
        v1_view = stack.enter_context(_without_object_graph(original_source)) if v1_original else None
        for name in loaders:
            run_loader(name, v1_view if name == "tf2" and v1_view else original)
    return report


def _auc_changes(run, labels):
    """ROC AUC of the original and the rewrite for each output with one score per data row."""
    out = []
    for o in run.outputs:
        if not o.kept:
            continue
        a = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x, _ in o.kept])
        b = np.concatenate([np.asarray(y, np.float64).reshape(len(y), -1) for _, y in o.kept])
        o.kept = []
        if a.shape != b.shape or a.shape[1] != 1 or a.shape[0] > len(labels):
            continue
        y = labels[: a.shape[0]]
        auc_a, auc_b = compression.roc_auc(y, a), compression.roc_auc(y, b)
        if auc_a is None or auc_b is None:
            continue
        out.append(
            {
                "loader": run.loader,
                "signature": run.signature,
                "output": o.name,
                "rows": int(a.shape[0]),
                "original_auc": auc_a,
                "rewritten_auc": auc_b,
                "delta_auc": auc_b - auc_a,
            }
        )
    return out


def _verify_variables(source):
    """Every tensor of the SavedModel's checkpoint passes its CRC32C check (ModelError otherwise)."""
    from graphopt.checkpoint.conversion import verify_checkpoint

    if source.checkpoint_prefix is not None:
        verify_checkpoint(source.checkpoint_prefix)


@contextlib.contextmanager
def _without_object_graph(source):
    """A view of SavedModel ``source`` without its object graph (saved_model.pb written again
    without it, assets copied, variables linked), in a temporary directory removed afterwards."""
    original = source.path
    with tempfile.TemporaryDirectory(prefix="graphopt-validate-") as tmp:
        view = os.path.join(tmp, "original-v1")
        io.write_saved_model(source, source.meta_graph, view, keep_object_graph=False)
        if os.path.isdir(os.path.join(original, "variables")):
            os.symlink(os.path.abspath(os.path.join(original, "variables")), os.path.join(view, "variables"))
        yield view


def _tolerance(atol, rtol):
    try:
        atol, rtol = float(atol), float(rtol)
    except (TypeError, ValueError):
        raise GraphoptError(f"atol={atol!r}, rtol={rtol!r}: give numbers") from None
    if not (atol >= 0 and rtol >= 0):
        raise GraphoptError(f"atol={atol}, rtol={rtol}: tolerances must be >= 0 (0 means exact)")
    return Tolerance(atol, rtol)


def _signature_names(model, wanted):
    if not wanted:
        return sorted(model.signatures)
    unknown = [s for s in wanted if s not in model.signatures]
    if unknown:
        raise GraphoptError(
            f"signature(s) {', '.join(unknown)} not in the original model; "
            f"it has {', '.join(sorted(model.signatures))}"
        )
    return list(dict.fromkeys(wanted))


def _words(spec, given, model_words, uses=None):
    """The words to draw for each string input: given ones, else the words of the lookup tables
    that input reaches (all the model's when that cannot be traced), plus an unknown word, plus
    for a hashed input enough distinct words to reach most of its buckets."""
    given, uses = given or {}, uses or {}
    words = {}
    for name, s in spec.inputs.items():
        use = uses.get(name)
        if name in given:
            words[name] = tuple(given[name])
        elif s.dtype == "string" and (model_words or use is not None):
            own = use.words if use is not None and use.words else model_words
            hashed = min(WORDS_PER_BUCKET * use.hash_buckets, MAX_LARGE_BATCH) if use is not None else 0
            words[name] = own + UNKNOWN_WORDS + tuple(f"{HASHED_WORD_PREFIX}{i}" for i in range(hashed))
    return words


@dataclasses.dataclass
class SignatureInputs:
    cases: list
    plan: object  # InputPlan
    ranges: dict  # input -> IdRange
    words: dict  # string input -> words


def _signature_inputs(spec, data, batches, batch_size, ranges, words, seed, uses=None, readers=()):
    if data:
        cases, plan = read_data_cases(
            data, spec, batches=batches or None, batch_size=batch_size, uses=uses, readers=readers
        )
    else:
        cases, plan = generate_cases(spec, ranges, words, batches, batch_size, seed, uses)
    return SignatureInputs(cases, plan, ranges, words)


def _outcome(model, signature, feeds):
    try:
        return None, model.run(signature, feeds)
    except load_failures() as exc:
        return describe_failure(exc), None


def run_signature(original, rewritten, spec, cases, tolerance, keep=False):
    """Run one signature on both models, case by case, comparing every output."""
    loader, sig = original.loader, spec.name
    run = SignatureRun(loader, sig, [(c.name, c.rows) for c in cases], [])
    if sig not in rewritten.signatures:
        run.problems.append(f"signature {sig!r} is missing from the rewritten model")
        return run
    rewritten_spec = rewritten.signatures[sig]
    missing = [k for k in spec.inputs if k not in rewritten_spec.inputs]
    if missing:
        run.problems.append(f"the rewritten signature has no input(s) {', '.join(missing)}")
        return run
    run.outputs = [OutputComparison(k, tolerance, keep=keep) for k in spec.outputs]
    for extra in sorted(set(rewritten_spec.outputs) - set(spec.outputs)):
        run.problems.append(f"output {extra!r} is new in the rewritten model")
    original_failures = 0
    for case in cases:
        error_a, out_a = _outcome(original, sig, case.feeds)
        error_b, out_b = _outcome(rewritten, sig, case.feeds)
        original_failures += error_a is not None and case.rows != 0
        if error_a and error_b:
            run.notes.append(f"case {case.name}: both models raise ({error_a})")
        elif error_a:
            run.problems.append(
                f"case {case.name}: the original raises ({error_a}) but the rewritten model returns outputs"
            )
        elif error_b:
            run.problems.append(f"case {case.name}: the rewritten model raises: {error_b}")
        else:
            for comparison in run.outputs:
                if comparison.name in out_b:
                    comparison.add(case.name, out_a[comparison.name], out_b[comparison.name])
                else:
                    comparison.missing("rewritten")
    filled = [c for c in cases if c.rows != 0]
    if filled and original_failures == len(filled):
        raise DataError(
            f"the original model raises on every non-empty input case of signature {sig!r} "
            f"({loader} loader), "
            f"e.g. {_outcome(original, sig, filled[0].feeds)[0]}; give the valid id ranges "
            "(--id-range INPUT=ROWS) or real inputs (--data)"
        )
    return run
