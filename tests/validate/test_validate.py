"""validate_models on unchanged copies of each model form: everything passes, and the report says so."""

import json

import numpy as np
import pytest
import saved_models

from graphopt.errors import DataError, GraphoptError, ModelError
from graphopt.validate import validate_models


@pytest.mark.parametrize(
    "form, tables",
    [
        ("keras_model", {"movieId": ("movie_embedding/embeddings_1", saved_models.ITEMS)}),
        ("module_model", {"item": ("items", saved_models.ITEMS), "user": ("users", saved_models.USERS)}),
        ("tf1_model", {"ids": ("item_table", saved_models.ITEMS)}),
    ],
)
@pytest.mark.exact
def test_an_unchanged_copy_passes_on_both_loaders(request, copy_of, form, tables):
    original = request.getfixturevalue(form)
    report = validate_models(original, copy_of(original))
    assert report.passed, report.format()
    # Id ranges come from the tables each input feeds (inspect_model), not from the caller.
    ranges = report.inputs["serving_default"].id_ranges
    assert {k: (r.source, r.high) for k, r in ranges.items()} == {
        k: (f"table {name}", rows) for k, (name, rows) in tables.items()
    }
    assert {r.loader for r in report.runs} == {"tf2", "session"}
    assert [c.name for c in report.checks] == [
        "node-inputs",
        "ops-registered",
        "signatures",
        "restore",
        "checkpoint",
    ]
    for run in report.runs:
        assert [n for n, _ in run.cases] == [
            "random-0",
            "random-1",
            "random-2",
            "random-3",
            "batch-1",
            "large",
            "empty",
        ]
        assert all(o.elements > 0 and o.mismatches == 0 for o in run.outputs)
    text = report.format()
    assert "tolerance: exact" in text and text.splitlines()[-1].startswith("PASSED: 5/5 structural checks")


def test_oov_report_names_each_models_behaviour(keras_model, module_model, copy_of):
    report = validate_models(keras_model, copy_of(keras_model), loader="session", batches=1)
    probes = {p.id: p for p in report.oov}
    assert set(probes) == {50, 100, -1}  # one signature probed: "serve" takes the same inputs
    assert probes[50].original.startswith("error: InvalidArgumentError: indices[0,0] = 50 is not in [0, 50)")
    # Keras wraps negative ids before its Gather.
    assert probes[-1].original == "wrap-around: returns what id 49 returns" and probes[-1].same
    assert report.passed  # behaviour differences never fail validation


def test_json_report_carries_everything(tf1_model, copy_of):
    report = validate_models(tf1_model, copy_of(tf1_model), id_ranges={"ids": 50}, loader="tf2", batches=1)
    data = json.loads(report.to_json())
    assert data["passed"] is True and data["loaders"] == ["tf2"]
    assert data["tolerance"] == {"atol": 0.0, "rtol": 0.0, "exact": True, "rule": report.tolerance.describe()}
    out = data["numerics"][0]["outputs"][0]
    assert out["name"] == "out" and out["mismatches"] == 0 and out["min_atol_to_pass"] == 0.0
    assert data["inputs"]["serving_default"]["id_ranges"]["ids"] == {"low": 0, "high": 50, "source": "given"}
    assert data["inputs"]["serving_default"]["inputs"]["ids"].startswith("int64[?]: ids in [0, 50) (given)")
    assert {c["name"] for c in data["structure"]} >= {"signatures", "checkpoint"}
    assert len(data["behaviour_differences"]) == 3 and data["failures"] == []


def test_data_file_inputs(tf1_model, copy_of, tmp_path):
    data = tmp_path / "rows.npz"
    np.savez(data, ids=np.arange(50), weights=np.linspace(-1, 1, 50))
    report = validate_models(
        tf1_model, copy_of(tf1_model), data=str(data), batch_size=16, loader="tf2", oov=False
    )
    assert report.passed
    assert [r for _, r in report.runs[0].cases] == [16, 16, 16, 2]


def test_bad_arguments_raise_graphopt_errors(tf1_model, tmp_path):
    with pytest.raises(ModelError, match="no such directory"):
        validate_models(tf1_model, str(tmp_path / "nothing"))
    with pytest.raises(GraphoptError, match="tolerances must be >= 0"):
        validate_models(tf1_model, tf1_model, atol=-1)
    with pytest.raises(GraphoptError, match="unknown loader"):
        validate_models(tf1_model, tf1_model, loader="serving")
    with pytest.raises(
        GraphoptError, match="signature\\(s\\) nope not in the original model; it has serving_default"
    ):
        validate_models(tf1_model, tf1_model, signatures=["nope"], loader="tf2")


def test_original_failing_on_every_input_is_bad_input(tf1_model):
    with pytest.raises(DataError, match="raises on every non-empty input case.*--id-range"):
        validate_models(tf1_model, tf1_model, id_ranges={"ids": (100, 200)}, loader="tf2", batches=1)


def test_string_inputs_draw_from_the_models_lookup_vocabulary(keras_model, copy_of):
    report = validate_models(
        keras_model, copy_of(keras_model), loader="tf2", batches=1, oov=False, signatures=["serving_default"]
    )
    assert "genre" in report.inputs["serving_default"].inputs
    assert (
        "words from a 3-word vocabulary and 1 unknown word"
        in report.inputs["serving_default"].inputs["genre"]
    )


@pytest.mark.exact
def test_a_tf2_export_is_the_reference_for_every_loader(module_model, copy_of, monkeypatch):
    """Each loader of the rewritten model runs against tf.saved_model.load of a TF2 original (how
    its users load it), loaded once; never against the original's own session load or a TF1 view."""
    from graphopt.validate import validation

    loads = []
    real = validation.load_model

    def spy(path, loader, tags=("serve",)):
        loads.append((path, loader))
        return real(path, loader, tags)

    monkeypatch.setattr(validation, "load_model", spy)
    rewritten = copy_of(module_model)
    report = validate_models(module_model, rewritten, oov=False, batches=1)
    assert report.passed, report.format()
    assert loads == [(module_model, "tf2"), (rewritten, "tf2"), (rewritten, "session")]
    assert {(r.loader, r.reference) for r in report.runs} == {("tf2", "tf2"), ("session", "tf2")}
    assert {r["original_loader"] for r in report.to_dict()["numerics"]} == {"tf2"}
    assert "against the original's tf2 load" in report.format()


def test_a_tf1_original_is_run_through_the_same_loader(tf1_model, copy_of):
    report = validate_models(tf1_model, copy_of(tf1_model), oov=False, batches=1)
    assert report.passed, report.format()
    assert {(r.loader, r.reference) for r in report.runs} == {("tf2", "tf2"), ("session", "session")}
