"""An honest validator: break a model on purpose, and validate must fail, pointing at the cause.

Each test damages a copy the way a buggy rewrite could and checks both the verdict and that
the failure lines name what was broken.
"""

import re

import saved_models

from graphopt.validate import validate_models


def _failures(report):
    assert not report.passed, report.format()
    assert report.format().splitlines()[-1].startswith("FAILED:")
    return "\n".join(report.failures())


def test_one_changed_table_value_is_caught_in_checkpoint_and_outputs(keras_model, copy_of):
    broken = copy_of(keras_model)
    keys = saved_models.checkpoint_keys_of_shape(broken, [saved_models.ITEMS, saved_models.DIM])
    saved_models.change_checkpoint_value(broken, keys, (37, 2))
    report = validate_models(keras_model, broken, oov=False)
    text = _failures(report)
    for key in keys:
        assert f"checkpoint tensor {key!r}: 1 of 200 elements differ (first at [37, 2]" in text
    # Row 37 is read by the large batch whatever the random batches drew, so every run sees it.
    assert all(not r.passed for r in report.runs)
    embedding = next(o for o in report.runs[0].outputs if o.name == "output_1")
    assert abs(embedding.max_abs_diff - 0.5) < 1e-6 and embedding.worst.index[1] == 2


def test_one_changed_value_in_a_tf1_checkpoint(tf1_model, copy_of):
    broken = copy_of(tf1_model)
    saved_models.change_checkpoint_value(broken, ["item_table"], (0, 0), delta=1e-6)
    text = _failures(validate_models(tf1_model, broken, oov=False))
    assert "checkpoint tensor 'item_table': 1 of 200 elements differ (first at [0, 0]" in text
    assert "tf2 serving_default output 'out'" in text and "session serving_default output 'out'" in text


def test_a_node_removed_from_a_function_body(keras_model, copy_of):
    broken = copy_of(keras_model)
    removed = saved_models.remove_function_node(broken, "GatherV2")
    report = validate_models(keras_model, broken)
    text = _failures(report)
    # Keras numbers its node names per process, so the consumer's name is not fixed: match around it.
    assert re.search(
        rf"node-inputs: function {re.escape(repr(removed['function']))}, node '[^']+' \(\w+\): "
        rf"input '{re.escape(removed['node'])}:output:0' names no node of the body",
        text,
    ), text
    assert "restore: loading in a Session (restore op, then init op) failed" in text
    assert "tf2 loader: the rewritten model does not load" in text


def test_a_renamed_signature_output(keras_model, copy_of):
    broken = copy_of(keras_model)
    saved_models.rename_signature_output(broken, "serving_default", "output_0", "score")
    text = _failures(validate_models(keras_model, broken, loader="session", oov=False))
    assert (
        "signatures: signature 'serving_default': output 'output_0' is missing from the rewritten model "
        "(the rewritten model has 'score' instead)"
    ) in text
    assert (
        "session serving_default (original: tf2) output 'output_0': "
        "missing from the rewritten model's outputs" in text
    )


def test_a_gather_wired_to_the_wrong_table(module_model, copy_of):
    broken = copy_of(module_model)
    saved_models.rewire_gather(broken)
    report = validate_models(module_model, broken, oov=False)
    text = _failures(report)
    assert "tf2 serving_default output 'score'" in text
    # The other output reads the untouched table and stays exact: the report narrows it down.
    for run in report.runs:
        assert {o.name: o.passed for o in run.outputs} == {"item_vector": True, "score": False}


def test_an_op_no_library_registers(module_model, copy_of):
    broken = copy_of(module_model)
    saved_models.replace_op(broken, "ResourceGather", "GraphoptEvNoSuchOp")
    text = _failures(validate_models(module_model, broken, oov=False))
    assert "ops-registered: op 'GraphoptEvNoSuchOp' (used by function '__inference_score_" in text
    assert "is not registered: the model would fail to load" in text


def test_a_tolerance_lets_a_small_difference_through_and_says_what_was_needed(tf1_model, copy_of):
    broken = copy_of(tf1_model)
    saved_models.change_checkpoint_value(broken, ["item_table"], (3, 1), delta=1e-3)
    report = validate_models(tf1_model, broken, loader="tf2", oov=False)
    needed = report.runs[0].outputs[0].max_abs_diff
    assert 0 < needed < 1e-2
    loose = validate_models(tf1_model, broken, loader="tf2", oov=False, atol=needed)
    assert loose.runs[0].passed and "atol=" in loose.format()
    assert not loose.passed  # the checkpoint check stays exact: a table row is not an output


def test_a_session_run_against_a_tf2_original_says_whose_difference_it_is(module_model, copy_of):
    """The session loader of the rewritten model runs against the original's tf2 load; a failure
    there is checked against the original under the session loader, to say whether the loader or
    the rewrite moved the outputs."""
    broken = copy_of(module_model)
    keys = saved_models.checkpoint_keys_of_shape(broken, [saved_models.ITEMS, saved_models.DIM])
    saved_models.change_checkpoint_value(broken, keys, (3, 1), delta=1e-3)
    report = validate_models(module_model, broken, loader="session", oov=False, batches=1)
    (run,) = [r for r in report.runs if r.signature == "serving_default"]
    assert (run.loader, run.reference) == ("session", "tf2") and not run.passed
    assert "session serving_default (original: tf2)" in _failures(report)
    # This original computes the same under both loaders: the difference is the rewrite's.
    assert all(c["mismatches"] == 0 for c in run.baseline["original_under_both_loaders"])
    assert any(c["mismatches"] for c in run.baseline["rewritten_vs_original_same_loader"])
    assert any("the difference is the rewrite's" in n for n in run.notes)
