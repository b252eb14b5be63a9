"""validate's memory budget: what ``--batch-size`` and ``--batches`` will cost, known before anything
is allocated, from the original's signatures alone.

Every input case is built before the models run (the same cases go to every loader), so the
inputs of all batches are held at once; each batch is then run on two models, whose outputs and
intermediate tensors grow with its rows. The estimate is, per signature:

    batches x batch_size x (input bytes a row)                      the cases held
  + batch_size x (2 x output bytes a row + WORK_BYTES_PER_ROW)      one batch through both models

with unknown dimensions counted as 1 and a string as STRING_BYTES. WORK_BYTES_PER_ROW stands for
the layers between inputs and outputs, which the signature does not show (the course's model
holds about 2 KiB a row in its MLP; the allowance is eight times that).
"""

import math

from graphopt.errors import ArgumentError
from graphopt.validate.loaders import numpy_dtype, signature_specs

DEFAULT_BUDGET_GIB = 4.0
STRING_BYTES = 64
WORK_BYTES_PER_ROW = 16 << 10


def _row_bytes(specs) -> int:
    total = 0
    for spec in specs.values():
        dims = [] if spec.shape is None else [d or 1 for d in spec.shape[1:]]
        size = STRING_BYTES if spec.dtype == "string" else numpy_dtype(spec.dtype).itemsize
        total += size * math.prod(dims)
    return total


def estimate(meta_graph, batches: int, batch_size: int) -> tuple[int, str]:
    """(bytes, signature): the costliest signature's estimate for ``batches`` of ``batch_size``."""
    worst = (0, "")
    for name, sig in signature_specs(meta_graph).items():
        held = max(batches, 1) * batch_size * _row_bytes(sig.inputs)
        running = batch_size * (2 * _row_bytes(sig.outputs) + WORK_BYTES_PER_ROW)
        worst = max(worst, (held + running, name))
    return worst


def check(meta_graph, batches: int, batch_size: int, budget_gib: float = DEFAULT_BUDGET_GIB):
    """ArgumentError (one line: the estimate, the budget, what to give instead) when over budget."""
    if not (budget_gib > 0 and math.isfinite(budget_gib)):
        raise ArgumentError(f"memory budget {budget_gib} GiB: give a positive number of GiB")
    budget = int(budget_gib * (1 << 30))
    need, signature = estimate(meta_graph, batches, batch_size)
    if need <= budget:
        return need
    per_row = max(need // batch_size, 1)
    rows = max(budget // per_row, 1)
    raise ArgumentError(
        f"--batch-size {batch_size} x --batches {max(batches, 1)} needs about {need / (1 << 30):.3g} GiB "
        f"(signature {signature!r}: inputs held and one batch through both models), over validate's "
        f"memory budget of {budget_gib:g} GiB; give a smaller --batch-size (about {rows} rows fit) "
        "or fewer --batches, or raise --memory-budget"
    )
