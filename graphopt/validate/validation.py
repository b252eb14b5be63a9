"""``validate_models``: the pair read and analysed once, structural checks of it, then both models
run side by side, then the report."""

import dataclasses
import os

import numpy as np

from graphopt import model_io
from graphopt.errors import DataError, GraphoptError, ModelError
from graphopt.graph import meta_graphs
from graphopt.validate import budget, compression
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
    memory_budget_gib=budget.DEFAULT_BUDGET_GIB,
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
    ``memory_budget_gib`` bounds what ``batches`` x ``batch_size`` may cost
    (graphopt.validate.budget), checked from the signatures before any input is built or model loaded.
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
    # With --data and no --batches every batch of the file is read: the file bounds those.
    budget.check(original_source.meta_graph, batches or 1, batch_size, memory_budget_gib)
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
    # The original is run the way its users load it: a TF2 export (it has an object graph)
    # through tf.saved_model.load, whatever loader the rewritten model is run with; a TF1-format
    # original through each loader in turn (its users load it either way).
    reference = "tf2" if meta_graphs.has_object_graph(original_source.meta_graph) else None
    if reference:
        report.notes.append(
            "the original is a TF2 export: each loader of the rewritten model is compared with "
            "tf.saved_model.load of the original (how its users load it)"
        )
    rewritten_default = (
        "the default row (values that no valid id gives)"
        if pair.ev_ops
        else "values that no valid id gives (zeros, or another fill)"
    )
    inputs = {}  # signature -> SignatureInputs: the same inputs for every loader
    probed = {}  # input specs -> the signature already probed with them
    originals: dict = {}  # loader -> the original loaded with it, loaded once

    def original_with(name):
        if name not in originals:
            originals[name] = load_model(original, name, tags)
        return originals[name]

    def run_loader(name):
        original_model = original_with(reference or name)
        try:
            rewritten_model = load_model(rewritten, name, tags)
        except ModelError as exc:
            report.problems.append(f"{name} loader: the rewritten model does not load: {exc}")
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
                if run.reference != run.loader and run.outputs and not run.passed:
                    _explain_loader_difference(
                        run, original_with(name), original_model, rewritten_model, chosen
                    )
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
            rewritten_model.close()

    try:
        for name in loaders:
            run_loader(name)
    finally:
        for model in originals.values():
            model.close()
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


def _explain_loader_difference(run, same_loader, reference, rewritten, chosen):
    """A failed run of the rewritten model under loader L against the original under another
    loader: says whether the original itself moves the same way under L (TensorFlow's L path,
    not the rewrite), comparing the original under both loaders and the two models under L."""
    exact = Tolerance()
    spec = reference.signatures[run.signature]
    across = [OutputComparison(k, exact) for k in spec.outputs]
    same = [OutputComparison(k, exact) for k in spec.outputs]
    for case in chosen.cases:
        error_r, out_r = _outcome(reference, run.signature, case.feeds)
        error_s, out_s = _outcome(same_loader, run.signature, case.feeds)
        error_w, out_w = _outcome(rewritten, run.signature, case.feeds)
        if error_r or error_s or error_w:
            continue
        for a, b in zip(across, same, strict=True):
            if a.name in out_s:
                a.add(case.name, out_r[a.name], out_s[a.name])
            if b.name in out_w and b.name in out_s:
                b.add(case.name, out_s[b.name], out_w[b.name])
    moved = [a for a in across if a.mismatches]
    run.baseline = {
        "original_under_both_loaders": [a.to_dict() for a in across],
        "rewritten_vs_original_same_loader": [b.to_dict() for b in same],
    }
    if not moved:
        run.notes.append(
            f"the original gives the same outputs under the {run.loader} and {run.reference} loaders: "
            "the difference is the rewrite's"
        )
        return
    worst = max(moved, key=lambda a: a.max_abs_diff)
    head = (
        f"the original itself, loaded with the {run.loader} loader, differs from its {run.reference} load "
        f"({_differs(worst)})"
    )
    if all(b.passed and b.elements for b in same):
        run.notes.append(
            f"{head}; under the {run.loader} loader the rewritten model is identical to the original: "
            f"the difference is TensorFlow's {run.loader} path, which serves the original so too"
        )
    else:
        off = max(same, key=lambda b: b.max_abs_diff)
        run.notes.append(
            f"{head}; under the {run.loader} loader the rewritten model also differs from the original "
            f"({_differs(off)})"
        )


def _verify_variables(source):
    """Every tensor of the SavedModel's checkpoint passes its CRC32C check (ModelError otherwise)."""
    from graphopt.checkpoint.conversion import verify_checkpoint

    if source.checkpoint_prefix is not None:
        verify_checkpoint(source.checkpoint_prefix)


def _differs(comparison):
    c = comparison
    return f"{c.name}: {c.mismatches} of {c.elements} elements, max abs diff {c.max_abs_diff:.6g}"


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
    run = SignatureRun(rewritten.loader, sig, [(c.name, c.rows) for c in cases], [], reference=loader)
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
