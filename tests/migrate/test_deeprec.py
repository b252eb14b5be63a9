"""DeepRec EV models (NodeDefs from DeepRec's op definitions, checkpoints in its layout) migrate and
serve the same rows; filter_freq / steps_to_live map to admission / TTL; a planted wrong key or row
is caught by validate."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from graphopt.checkpoint.conversion import convert_checkpoint
from graphopt.rewrite.targets.ev.migrate import migrate_model
from graphopt.validate.reference import MetaGraphModel, validate_reference
from tests.migrate import deeprec_graphs as dg

KEYS = np.array([3, 10, 1 << 40, 77, -5], np.int64)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("deeprec")
    tables = {"emb": dg.table(KEYS), "emb/Adagrad": dg.table(KEYS[:3], 1)}
    meta = dg.build(str(root / "single"), tables, slot=True, filter_freq=3, steps_to_live=500)
    report = migrate_model(meta, str(root / "single_out"), debug=True)
    return meta, str(root / "single_out" / "model.meta"), tables, report


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory):
    root = tmp_path_factory.mktemp("deeprec")
    tables = {
        "part/part_0": dg.table(KEYS[KEYS % 2 == 0], 2),
        "part/part_1": dg.table(KEYS[KEYS % 2 == 1], 3),
    }
    meta = dg.build(str(root / "part"), tables, partitioned=True)
    migrate_model(meta, str(root / "part_out"), debug=True)
    return meta, str(root / "part_out" / "model.meta"), tables


def _serve(path, ids):
    model = MetaGraphModel(path)
    try:
        return model.run("serving_default", {"ids": np.asarray(ids, np.int64)})["emb"]
    finally:
        model.close()


def test_single_ev_serves_the_checkpoint_rows(single):
    meta, out, tables, report = single
    keys, values, _, _ = tables["emb"]
    got = _serve(out, np.concatenate([keys, [12345]]))
    assert np.array_equal(got[:-1], values) and np.array_equal(got[-1], np.zeros(4, np.float32))
    assert report.analysis.system == "deeprec" and [t.name for t in report.analysis.served] == ["emb"]


def test_filter_freq_and_steps_to_live_map_to_admission_and_ttl(single):
    meta, out, tables, report = single
    (table,) = report.analysis.served
    assert (table.min_count, table.ttl) == (3, 500)
    manifest = json.load(open(os.path.join(os.path.dirname(out), "graphopt_manifest.json")))
    assert any("ttl=500" in n for n in manifest["notes"]) and any(
        "min_count=3" in n for n in manifest["notes"]
    )
    from graphopt.graph.model import ModelGraph
    from graphopt.model_io import read_model

    handle = ModelGraph(read_model(out).meta_graph).body("").node("emb")
    assert handle.op == "GraphoptEvHandleOp" and handle.attr["min_count"].i == 3


def test_freqs_versions_and_slot_carried(single):
    meta, out, tables, _ = single
    reader = tf.train.load_checkpoint(os.path.join(os.path.dirname(out), "model"))
    keys, _, freqs, versions = tables["emb"]
    assert np.array_equal(reader.get_tensor("emb-freqs"), freqs)
    assert np.array_equal(reader.get_tensor("emb-versions"), versions)
    acc = reader.get_tensor("emb-slot-accumulator")
    assert np.array_equal(acc[:3], tables["emb/Adagrad"][1]) and np.all(
        acc[3:] == 0.0
    )  # the slot's default row
    report = validate_reference(out, None, original=meta)
    assert report.passed, report.format()
    assert {c.name for c in report.checks if "freqs" in c.name} == {
        "table emb freqs and versions (checkpoint)",
        "table emb freqs and versions (served table)",
    }


def test_inspect_names_deeprec_and_its_ops(single):
    from click.testing import CliRunner

    from graphopt.cli import main

    meta = single[0]
    out = CliRunner().invoke(main, ["inspect", meta], catch_exceptions=False).output
    assert out.startswith("source system: DeepRec EmbeddingVariable (deeprec)")
    for line in (
        "KvResourceGather at graph/emb/gather -> GraphoptEvFind",
        "KvResourceImportV2 at graph/save/emb/import -> RestoreV2 + GraphoptEvImport",
        "KvResourceSparseApplyAdagrad at graph/train/apply -> dropped",
        "table emb/Adagrad: slot accumulator of emb",
    ):
        assert line in out, out


def test_partitioned_ev_serves_the_same_rows(partitioned):
    meta, out, tables = partitioned
    want = {int(k): v for t in tables.values() for k, v in zip(t[0], t[1], strict=True)}
    got = _serve(out, KEYS)
    assert all(np.array_equal(got[i], want[int(k)]) for i, k in enumerate(KEYS))
    report = validate_reference(out, None, original=meta)
    served = [c for c in report.checks if "rows (served table)" in c.name]
    assert report.passed and len(served) == 2, report.format()


@pytest.mark.parametrize("plant", ["row", "key"])
def test_planted_wrong_key_or_row_is_caught(single, tmp_path, plant):
    meta, out, tables, _ = single
    src = os.path.join(os.path.dirname(out), "model")
    keys, values, _, _ = tables["emb"]
    if plant == "row":
        values = values.copy()
        values[2, 1] += 1e-3
    else:
        keys = keys.copy()
        keys[1] = 999
    dst_dir = tmp_path / "planted"
    import shutil

    shutil.copytree(os.path.dirname(out), dst_dir, ignore=shutil.ignore_patterns("model.*"))
    shutil.copy(out, dst_dir / "model.meta")
    convert_checkpoint(src, str(dst_dir / "model"), [], added={"emb-keys": keys, "emb-values": values})
    report = validate_reference(str(dst_dir / "model.meta"), None, original=meta)
    assert not report.passed
    failed = [c for c in report.checks if not c.passed]
    assert {c.name for c in failed if c.name.startswith("table")} == {
        f"table emb {'rows' if plant == 'row' else 'keys'} ({w})" for w in ("checkpoint", "served table")
    }
    assert ("first at key 1099511627776" if plant == "row" else "not in the original: [999]") in failed[
        0
    ].detail
