"""validate's memory budget: a batch size that would not fit is refused before anything is built."""

import resource

import pytest
from click.testing import CliRunner

from graphopt.cli import main
from graphopt.errors import ArgumentError
from graphopt.validate import budget, validate_models


def test_a_huge_batch_is_refused_in_one_line_before_any_allocation(keras_model, copy_of, monkeypatch):
    from graphopt.validate import validation

    def no_load(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the budget check")

    monkeypatch.setattr(validation, "load_model", no_load)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ArgumentError, match=r"--batch-size 1000000000 x --batches 4 needs about .* GiB"):
        validate_models(keras_model, copy_of(keras_model), batch_size=10**9)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 << 10  # KiB: < 200 MiB
    result = CliRunner().invoke(main, ["validate", keras_model, keras_model, "--batch-size", "1000000000"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("graphopt: error: --batch-size 1000000000") and "rows fit" in line


def test_the_estimate_counts_held_batches_and_a_budget_can_be_raised(keras_model, copy_of):
    from graphopt import model_io

    meta = model_io.read_model(keras_model).meta_graph
    one, _ = budget.estimate(meta, 1, 1000)
    four, _ = budget.estimate(meta, 4, 1000)
    assert one > 1000 * budget.WORK_BYTES_PER_ROW and four > one  # four batches are held at once
    with pytest.raises(ArgumentError, match="memory budget of 0.001 GiB"):
        budget.check(meta, 4, 1000, budget_gib=0.001)
    report = validate_models(
        keras_model, copy_of(keras_model), batches=1, batch_size=64, oov=False, memory_budget_gib=0.01
    )
    assert report.passed, report.format()
