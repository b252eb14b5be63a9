"""validate on models that graphopt rewrote: a clean rewrite passes, each broken one fails at its cause.

Running the rewritten models needs the op library; the suite needs it built (``make test`` builds
it), so nothing here skips: a missing library fails these tests instead of hiding them.
"""

import pytest
import saved_models

from graphopt.validate import validate_models


def _failures(report):
    assert not report.passed, report.format()
    return "\n".join(report.failures())


@pytest.mark.parametrize("form", ["rewritten_keras", "rewritten_module", "rewritten_tf1"])
def test_a_clean_rewrite_passes_exactly_through_the_session_loader(request, form):
    rewritten = request.getfixturevalue(form)
    original = request.getfixturevalue(form.replace("rewritten_", "") + "_model")
    report = validate_models(original, rewritten, loader="session")
    assert report.passed, report.format()
    assert {c.name for c in report.checks} >= {"checkpoint", "lookup-wiring"}
    # Out-of-vocabulary ids: the original's Gather raises, the EmbeddingVariable returns its default row.
    past_end = [p for p in report.oov if p.id >= 50]
    assert past_end and all(
        p.original.startswith("error:") and "default row" in p.rewritten for p in past_end
    )


def test_structure_of_a_clean_rewrite(module_model, rewritten_module):
    report = validate_models(module_model, rewritten_module, loader="session", batches=1, oov=False)
    checks = {c.name: c for c in report.checks}
    for name in ("node-inputs", "signatures", "checkpoint", "lookup-wiring"):
        assert checks[name].passed, checks[name].findings
    assert checks["checkpoint"].summary == "0 tensors identical, 2 embedding tables holding all 90 rows"
    assert checks["lookup-wiring"].summary == "2 lookups of 2 converted tables"
    assert checks["ops-registered"].passed


def test_one_changed_value_in_an_embedding_variable(module_model, rewritten_module, copy_of):
    broken = copy_of(rewritten_module)
    saved_models.change_checkpoint_value(broken, ["items/.ATTRIBUTES/VARIABLE_VALUE-values"], (37, 2))
    text = _failures(validate_models(module_model, broken, loader="session", oov=False))
    assert (
        "checkpoint: EmbeddingVariable 'items/.ATTRIBUTES/VARIABLE_VALUE': 1 rows differ from the table "
        "(first: id 37, column 2"
    ) in text
    # The session loader's run is compared with the original's own (tf2) load.
    assert "session serving_default (original: tf2) output 'item_vector'" in text
    # The live table, exported from the restored Session, shows the same damage.
    assert (
        "restore: after the Session restore, EmbeddingVariable 'items': 1 rows differ from the table "
        "(first: id 37, column 2"
    ) in text


def test_a_dropped_key(tf1_model, rewritten_tf1, copy_of):
    broken = copy_of(rewritten_tf1)
    saved_models.drop_table_key(broken, "item_table", 17)
    report = validate_models(tf1_model, broken, loader="session", oov=False)
    text = _failures(report)
    assert (
        "checkpoint: EmbeddingVariable 'item_table': 1 of the table's 50 ids are missing (first: 17)" in text
    )
    # The summary counts every table's rows, the damaged one's too.
    (checkpoint,) = [c for c in report.checks if c.name == "checkpoint"]
    assert checkpoint.summary.endswith("0 of 1 embedding table (50 rows) holding exactly their rows")
    # id 17 now gets the default row: the large batch reads it
    assert "session serving_default output 'out'" in text
    assert (
        "restore: after the Session restore, EmbeddingVariable 'item_table': 1 of the table's 50 ids "
        "are missing (first: 17)"
    ) in text


def test_a_lookup_wired_to_the_wrong_table(module_model, rewritten_module, copy_of):
    broken = copy_of(rewritten_module)
    found = saved_models.rewire_gather(broken, op="GraphoptEvFind")
    text = _failures(validate_models(module_model, broken, loader="session", oov=False))
    assert (
        f"lookup-wiring: lookup {found['function']}:{found['node']} read table 'users' in the original; "
        "in the rewritten model it reads 'items'"
    ) in text


def test_a_find_removed_from_a_function_body(keras_model, rewritten_keras, copy_of):
    broken = copy_of(rewritten_keras)
    removed = saved_models.remove_function_node(broken, "GraphoptEvFind")
    text = _failures(validate_models(keras_model, broken, loader="session", oov=False))
    assert f"input '{removed['node']}:values:0' names no node of the body" in text
    assert (
        f"lookup-wiring: lookup {removed['function']}:{removed['node']} of table "
        "'movie_embedding/embeddings_1' is gone in the rewritten model"
    ) in text


def test_a_renamed_output_of_a_rewritten_model(tf1_model, rewritten_tf1, copy_of):
    broken = copy_of(rewritten_tf1)
    saved_models.rename_signature_output(broken, "serving_default", "out", "prediction")
    text = _failures(validate_models(tf1_model, broken, loader="session", oov=False))
    assert (
        "signatures: signature 'serving_default': output 'out' is missing from the rewritten model "
        "(the rewritten model has 'prediction' instead)"
    ) in text
