"""run_passes in debug mode: the checks after each pass catch what a broken pass leaves."""

import pytest

from graphopt import model_io
from graphopt.analysis.tables import detect
from graphopt.graph import nodes
from graphopt.graph.model import ModelGraph
from graphopt.rewrite.pipeline import RewriteIntegrityError, run_passes
from graphopt.rewrite.plan import RewriteContext, RewritePlan
from graphopt.rewrite.targets import default_passes
from graphopt.rewrite.targets.ev.replace_lookups import ReplaceLookups
from tests.rewrite import cases


class SkipsLastSite(ReplaceLookups):
    """A planted bug: one gather of the table is left as it was."""

    def match(self, ctx):
        return super().match(ctx)[:-1]


def _context(case):
    model = ModelGraph(nodes.clone(model_io.read_model(case.path).meta_graph))
    return RewriteContext(model, RewritePlan.select(detect(model).tables))


def test_a_gather_of_a_shared_table_left_unreplaced_is_caught(built_case, ev_ops):
    case = built_case(cases.keras_two_inputs)  # one table, gathered by two inputs
    ctx = _context(case)
    assert len(ReplaceLookups().match(ctx)) == 2
    with pytest.raises(
        RewriteIntegrityError,
        match=r"pass replace-lookups broke the graph: .* still reads "
        r"rows of table .*, which the rewrite replaced",
    ):
        run_passes(ctx, [SkipsLastSite()] + default_passes()[1:], debug=True)


@pytest.mark.parametrize("builder", [cases.keras_two_inputs, cases.tf1_partitioned_mod])
def test_the_real_passes_pass_every_check(built_case, ev_ops, builder):
    ctx = _context(built_case(builder))
    results = run_passes(ctx, default_passes(), debug=True)
    assert [r.name for r in results][0] == "replace-lookups" and results[0].changed
    assert ReplaceLookups().check(ctx) == []


def test_without_debug_the_planted_bug_goes_unnoticed(built_case, ev_ops):
    # What the check is for: the rewrite itself completes and leaves the gather in place.
    ctx = _context(built_case(cases.keras_two_inputs))
    run_passes(ctx, [SkipsLastSite()] + default_passes()[1:], debug=False)
    assert len(ReplaceLookups().check(ctx)) == 1
