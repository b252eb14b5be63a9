"""The loop that runs a target's passes, with the integrity check of debug mode.

A pass (graphopt.rewrite.passes.Pass) has a ``match`` step (find what to change, no edits) and
an ``apply`` step (edit, say whether the graph changed). A target (``rewrite/targets/<target>/``)
lists its passes in order; the engine runs the list it is given.
"""

from graphopt.errors import GraphoptError
from graphopt.rewrite.passes import PassResult
from graphopt.rewrite.plan import RewriteContext

__all__ = ["PassResult", "RewriteIntegrityError", "run_passes"]


class RewriteIntegrityError(GraphoptError):
    """A pass left the graph inconsistent (a bug in graphopt; the input model is untouched)."""


def run_passes(ctx: RewriteContext, passes, debug: bool = False) -> list[PassResult]:
    """Runs the passes in order.

    In debug mode, after each pass: the graph model's own checks, and what every pass run so
    far established (``Pass.check``); the first violation raises RewriteIntegrityError.
    """
    results, ran = [], []
    for p in passes:
        results.append(p.run(ctx))
        ran.append(p)
        if debug:
            problems = ctx.model.check() + [line for q in ran for line in q.check(ctx)]
            if problems:
                raise RewriteIntegrityError(
                    f"pass {p.name} broke the graph: {problems[0]} (and {len(problems) - 1} more); "
                    "please report this with the model"
                )
    return results
