"""How much a model's answers depend on the batch they are computed in (``validate --batching``).

A serving batcher (``graphopt serve --enable-batching``, TF Serving's batching) runs a request's
examples inside a larger batch; a kernel may compute a row differently at another batch size
(matrix products block and vectorize by the batch dimension), so the answer to a request can
move in its last bits. This measures it on one model: each example of a case run alone against
the same example computed inside the whole case.
"""

import numpy as np


def batch_dependence(model, signature, case):
    """{output: (largest |alone - in batch|, largest of that relative to |in batch|)} over the rows
    of ``case`` (an InputCase), or None when the case cannot be cut into single rows."""
    rows = case.rows
    if not rows or any(np.ndim(v) == 0 or len(v) != rows for v in case.feeds.values()):
        return None
    whole = model.run(signature, case.feeds)
    worst = {}
    for i in range(rows):
        alone = model.run(signature, {k: v[i : i + 1] for k, v in case.feeds.items()})
        for name, value in alone.items():
            batched = np.asarray(whole[name])
            if batched.ndim == 0 or len(batched) != rows or np.asarray(value).dtype == object:
                continue
            inside = batched[i : i + 1].astype(np.float64)
            diff = np.abs(np.asarray(value, np.float64) - inside)
            if not diff.size:
                continue
            relative = diff / np.maximum(np.abs(inside), np.finfo(np.float64).tiny)
            old = worst.get(name, (0.0, 0.0))
            worst[name] = (max(old[0], float(diff.max())), max(old[1], float(relative.max())))
    return worst


def describe(loader, signature, rows, worst):
    """The report's note for one measurement."""
    if worst is None:
        return (
            f"batch dependence ({loader} loader, {signature}): not measured, "
            "its inputs have no common batch dimension"
        )
    detail = (
        ", ".join(f"{name} {a:.3g} (relative {r:.3g})" for name, (a, r) in sorted(worst.items()))
        or "no numeric output"
    )
    verdict = "bit-identical" if all(a == 0 for a, _ in worst.values()) else "differs"
    return (
        f"batch dependence of the rewritten model ({loader} loader, {signature}): each of {rows} examples "
        f"run alone vs inside the batch of {rows}: max |diff| {detail} ({verdict}); a batching server's "
        "answers may move by this much"
    )
