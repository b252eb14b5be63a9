"""The explicit, ordered list of rewrite passes and the loop that runs them.

A pass is a small class with a ``match`` step (find what to change, no edits) and an ``apply``
step (edit, return a PassResult saying whether the graph changed). New passes (stock-ops
output, training graphs, GPU placement) are new modules in ``passes/`` and one line here.
"""

import dataclasses
from typing import List

from graphopt.errors import GraphoptError
from graphopt.rewrite.passes.cleanup import RemoveDeadNodes
from graphopt.rewrite.passes.collections import DropTableVariables
from graphopt.rewrite.passes.dead_reads import RemoveTableReads
from graphopt.rewrite.passes.handles import ReplaceVariableHandles
from graphopt.rewrite.passes.initializers import RewriteInitializers
from graphopt.rewrite.passes.lookups import ReplaceLookups
from graphopt.rewrite.passes.saver import RewireRestore, RewireSave
from graphopt.rewrite.passes.stock_lookups import StockLookups
from graphopt.rewrite.passes.stock_saver import StockRestore, StockSave
from graphopt.rewrite.plan import RewriteContext
from graphopt.rewrite.stock_nodes import StockTables


class RewriteIntegrityError(GraphoptError):
    """A pass left the graph inconsistent (a bug in graphopt; the input model is untouched)."""


@dataclasses.dataclass
class PassResult:
    """What one pass did."""

    name: str
    changed: bool
    matches: int


def default_passes() -> List:
    """The serving rewrite, in order: lookups first, then the Saver, initializers, handles, cleanup."""
    return [
        ReplaceLookups(),
        RewireSave(),
        RewireRestore(),
        RewriteInitializers(),
        RemoveTableReads(),
        ReplaceVariableHandles(),
        DropTableVariables(),
        RemoveDeadNodes(),
    ]


def stock_passes(tables: StockTables = None) -> List:
    """The stock-ops rewrite (``--target stock``): rows stay dense, keys go through built-in hash tables."""
    tables = tables or StockTables()
    return [StockLookups(tables), StockSave(tables), StockRestore(tables), RemoveDeadNodes()]


def run_passes(ctx: RewriteContext, passes=None, debug: bool = False) -> List[PassResult]:
    """Runs the passes in order; in debug mode checks the graph's integrity after each one."""
    results = []
    for p in passes if passes is not None else default_passes():
        matches = p.match(ctx)
        changed = bool(matches) and p.apply(ctx, matches)
        ctx.model.invalidate()
        results.append(PassResult(p.name, changed, len(matches)))
        if debug:
            problems = ctx.model.check()
            if problems:
                raise RewriteIntegrityError(
                    f"pass {p.name} broke the graph: {problems[0]} (and {len(problems) - 1} more); "
                    "please report this with the model")
    return results
