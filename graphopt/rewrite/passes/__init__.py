"""Rewrite passes: the interface every pass implements, shared passes, one folder per target.

A pass module is named after its pass and opens with the pattern it rewrites. A pass has a
``name`` (the manifest's and the report's), ``match(ctx)`` that finds what to change without
editing, and ``apply(ctx, matches)`` that edits ``ctx.model`` in place and says whether it
changed anything. ``ctx`` is the ``RewriteContext``: the graph model, the plan and the manifest.
A target (``graphopt.rewrite.targets.<name>``) lists its passes in its ``TARGET``.
"""

import dataclasses


@dataclasses.dataclass
class PassResult:
    """What one pass did."""

    name: str
    changed: bool
    matches: int


class Pass:
    """One rewrite pass: ``match`` finds, ``apply`` edits, ``report`` says what was done."""

    name = ""

    def match(self, ctx) -> list:
        """What this pass would change in ``ctx.model``; no edits."""
        raise NotImplementedError

    def apply(self, ctx, matches) -> bool:
        """Edits ``ctx.model`` for ``matches`` (from ``match``); whether the graph changed."""
        raise NotImplementedError

    def check(self, ctx) -> list[str]:
        """What this pass established that must still hold (debug mode checks it after this pass
        and every later one): one line per violation."""
        return []

    def report(self, matches, changed) -> PassResult:
        return PassResult(self.name, changed, len(matches))

    def run(self, ctx) -> PassResult:
        matches = self.match(ctx)
        changed = bool(matches) and bool(self.apply(ctx, matches))
        ctx.model.invalidate()
        return self.report(matches, changed)
