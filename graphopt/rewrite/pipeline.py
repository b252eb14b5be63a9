"""The loop that runs a target's passes, with the integrity check of debug mode.

A pass (graphopt.rewrite.passes.Pass) has a ``match`` step (find what to change, no edits) and
an ``apply`` step (edit, say whether the graph changed). A target (``passes/<target>/``) lists
its passes in order; ``default_passes`` are those of the EmbeddingVariable target.
"""

from graphopt.errors import GraphoptError
from graphopt.rewrite.passes import PassResult
from graphopt.rewrite.plan import RewriteContext

__all__ = ["PassResult", "RewriteIntegrityError", "default_passes", "run_passes"]


class RewriteIntegrityError(GraphoptError):
    """A pass left the graph inconsistent (a bug in graphopt; the input model is untouched)."""


def default_passes() -> list:
    """The serving rewrite onto EmbeddingVariables, in order."""
    from graphopt.rewrite.targets import TARGETS

    return TARGETS["ev"].passes()


def run_passes(ctx: RewriteContext, passes=None, debug: bool = False) -> list[PassResult]:
    """Runs the passes in order.

    In debug mode, after each pass: the graph model's own checks, and what every pass run so
    far established (``Pass.check``); the first violation raises RewriteIntegrityError.
    """
    results, ran = [], []
    for p in passes if passes is not None else default_passes():
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
