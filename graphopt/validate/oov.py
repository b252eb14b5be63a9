"""Out-of-vocabulary probing: what each model does with an id outside the original table.

A stock Gather on CPU raises for such an id, Keras wraps negative ids to the end of the
table, GPU kernels return zeros, and an EmbeddingVariable returns its default row. None of
these is wrong in itself, so the probe reports behaviour side by side and never fails the
validation. The behaviour is named by comparing outputs with those of in-range ids: equal to
the id modulo the table size is wrap-around, equal to the nearest end is a clamp.
"""

import numpy as np

from graphopt.validate.inputs import FOLDED_IDS
from graphopt.validate.loaders import describe_failure, load_failures
from graphopt.validate.report import OovProbe


def probe_ids(id_range):
    """One past the end, far past the end, and one below the start (-1 for a 0-based table)."""
    return [id_range.high, id_range.high + id_range.size, id_range.low - 1]


def _outcome(model, signature, feeds):
    try:
        return None, model.run(signature, feeds)
    except load_failures() as exc:
        return describe_failure(exc), None


def _same(a, b):
    if a is None or b is None or a.keys() != b.keys():
        return False
    return all(
        np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=np.asarray(a[k]).dtype.kind in "fc")
        for k in a
    )


def _with_id(feeds, name, value):
    out = dict(feeds)
    out[name] = np.full_like(feeds[name], value)
    return out


def describe_behaviour(model, signature, feeds, name, oov_id, id_range, unmatched):
    """What ``model`` does when input ``name`` holds ``oov_id``: a phrase, and its outputs (or None)."""
    error, outputs = _outcome(model, signature, _with_id(feeds, name, oov_id))
    if error:
        return f"error: {error}", None
    wrap_id = id_range.low + (oov_id - id_range.low) % id_range.size
    clamp_id = min(max(oov_id, id_range.low), id_range.high - 1)
    _, wrapped = _outcome(model, signature, _with_id(feeds, name, wrap_id))
    _, clamped = _outcome(model, signature, _with_id(feeds, name, clamp_id))
    if _same(wrapped, clamped):
        if _same(outputs, wrapped):
            return f"returns what ids {wrap_id} and {clamp_id} return (they give equal outputs here)", outputs
    elif _same(outputs, wrapped):
        return f"wrap-around: returns what id {wrap_id} returns", outputs
    elif _same(outputs, clamped):
        return f"clamp: returns what id {clamp_id} returns", outputs
    return unmatched, outputs


def probe_oov(original, rewritten, spec, base_feeds, id_ranges, rewritten_default):
    """OovProbes for every integer input of ``spec`` whose valid range is known.

    ``base_feeds`` is a valid one-row batch; ``rewritten_default`` names what the rewritten
    model returns for an unknown key when that matches no valid id (its default row).
    """
    probes = []
    for name, id_range in id_ranges.items():
        if id_range.source == "default" or id_range == FOLDED_IDS:  # no id is outside a folded input
            continue  # without the table size there is no "outside"
        for oov_id in probe_ids(id_range):
            original_text, a = describe_behaviour(
                original,
                spec.name,
                base_feeds,
                name,
                oov_id,
                id_range,
                "values that no valid id gives (zeros, or another fill)",
            )
            rewritten_text, b = describe_behaviour(
                rewritten, spec.name, base_feeds, name, oov_id, id_range, rewritten_default
            )
            same = original_text == rewritten_text or (a is not None and _same(a, b))
            probes.append(
                OovProbe(
                    spec.name, name, int(oov_id), id_range.describe(), original_text, rewritten_text, same
                )
            )
    return probes
