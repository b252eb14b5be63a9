"""Inputs that are not free, row-aligned values: derived from the ops that consume them."""

import numpy as np
import pytest
import saved_models
import tensorflow as tf
from click.testing import CliRunner

from graphopt import model_io
from graphopt.cli import main
from graphopt.errors import DataError
from graphopt.graph.model import ModelGraph
from graphopt.rewrite import rewrite_model
from graphopt.validate import validate_models
from graphopt.validate.consumers import input_uses
from graphopt.validate.inputs import generate_cases
from graphopt.validate.loaders import signature_specs
from graphopt.validate.validation import _words
from tests.rewrite import cases

VOCAB_A = ("red", "green", "blue")
VOCAB_B = ("cat", "dog", "owl", "eel")
BUCKETS = 1000


@pytest.fixture(scope="module")
def sparse_pair(tmp_path_factory):
    """A tf.Module taking a SparseTensor as indices/values/dense_shape into embedding_lookup_sparse."""
    root = tmp_path_factory.mktemp("sparse")
    original = cases.module_lookup_sparse(str(root / "m")).path
    assert rewrite_model(original, str(root / "ev")).wrote
    return original, str(root / "ev")


def test_sparse_tensor_components_are_generated_as_the_ops_need_them(sparse_pair):
    # Before, random indices made the original raise "segment ids are not increasing".
    report = validate_models(*sparse_pair, loader="session", oov=False)
    assert report.passed, report.format()
    (run,) = report.runs
    assert [name for name, _ in run.cases] == [
        "random-0",
        "random-1",
        "random-2",
        "random-3",
        "batch-1",
        "large",
        "empty",
    ]
    plan = report.inputs["serving_default"].inputs
    assert plan["indices"].endswith("SparseTensor indices: unique coordinates in row-major order")
    assert plan["dense_shape"].endswith(
        "SparseTensor dense shape: one past the largest index in each dimension"
    )
    assert "the large batch reads all 20" in plan["values"]


def test_generated_sparse_indices_are_sorted_unique_and_inside_the_dense_shape(sparse_pair):
    meta = model_io.read_model(sparse_pair[0]).meta_graph
    spec = signature_specs(meta)["serving_default"]
    generated, _ = generate_cases(spec, {"values": 20}, uses=input_uses(ModelGraph(meta))["serving_default"])
    for case in generated:
        indices, shape = case.feeds["indices"], case.feeds["dense_shape"]
        assert len(case.feeds["values"]) == len(indices)
        flat = [tuple(i) for i in indices.tolist()]
        assert flat == sorted(set(flat))
        assert (indices < shape).all() and (shape >= 1).all()


def test_npz_of_one_batch_as_the_signature_takes_it(sparse_pair, tmp_path):
    path = str(tmp_path / "batch.npz")
    np.savez(
        path,
        indices=np.array([[0, 0], [0, 1], [2, 0]], np.int64),
        values=np.array([3, 19, 0], np.int64),
        dense_shape=np.array([3, 2], np.int64),
    )  # 3 coordinates, 3 values, a [2] shape: not row-aligned
    report = validate_models(*sparse_pair, data=path, loader="session", oov=False)
    assert report.passed, report.format()
    assert [name for name, _ in report.runs[0].cases] == ["data-0"]
    np.savez(
        path,
        indices=np.array([0, 1, 2], np.int64),
        values=np.array([3, 19], np.int64),
        dense_shape=np.array([3, 2], np.int64),
    )
    with pytest.raises(
        DataError, match="array 'indices' has shape \\[3\\], the signature wants int64\\[\\?, 2\\]"
    ):
        validate_models(*sparse_pair, data=path, loader="session", oov=False)


@pytest.fixture(scope="module")
def string_model(tmp_path_factory):
    """Two string inputs, each looked up in its own table, and one hashed into 1000 buckets."""

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(VOCAB_A), tf.range(3, dtype=tf.int64)),
                default_value=-1,
            )
            self.b = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(VOCAB_B), tf.range(4, dtype=tf.int64)),
                default_value=-1,
            )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=n) for n in ("a", "b", "h")])
        def __call__(self, a, b, h):
            return {
                "out": self.a.lookup(a) * 10 + self.b.lookup(b) + tf.strings.to_hash_bucket_fast(h, BUCKETS)
            }

    net = Net()
    path = str(tmp_path_factory.mktemp("strings") / "m")
    tf.saved_model.save(net, path, signatures={"serving_default": net.__call__})
    return path


def test_each_string_input_gets_the_words_of_its_own_table(string_model):
    meta = model_io.read_model(string_model).meta_graph
    uses = input_uses(ModelGraph(meta))["serving_default"]
    assert set(uses["a"].words) == set(VOCAB_A) and set(uses["b"].words) == set(VOCAB_B)
    assert uses["h"].hash_buckets == BUCKETS and not uses["h"].words
    spec = signature_specs(meta)["serving_default"]
    words = _words(spec, None, VOCAB_A + VOCAB_B, uses)
    assert set(words["a"]) == set(VOCAB_A) | {"graphopt-unknown-word"}
    assert set(words["b"]) == set(VOCAB_B) | {"graphopt-unknown-word"}


def test_a_hashed_input_reaches_most_of_its_buckets(string_model):
    meta = model_io.read_model(string_model).meta_graph
    uses = input_uses(ModelGraph(meta))["serving_default"]
    spec = signature_specs(meta)["serving_default"]
    generated, plan = generate_cases(spec, {}, _words(spec, None, (), uses), uses=uses)
    values = np.concatenate([c.feeds["h"] for c in generated])
    reached = np.unique(tf.strings.to_hash_bucket_fast(values.astype(bytes), BUCKETS).numpy()).size
    assert reached >= 0.9 * BUCKETS, reached  # 9 made-up words reached at most 9 before
    assert "3000 distinct made-up words for its 1000 hash buckets" in plan.inputs["h"]


@pytest.fixture(scope="module")
def ragged_pair(tmp_path_factory):
    """A tf.Module taking a RaggedTensor (values, row_splits) into a lookup, rewritten by the CLI."""
    root = tmp_path_factory.mktemp("ragged")
    original = saved_models.build_ragged(str(root / "m"))
    result = CliRunner().invoke(main, ["rewrite", original, "-o", str(root / "ev")])
    assert result.exit_code == 0 and "rewrote 1 table(s)" in result.output, result.output
    return original, str(root / "ev")


def test_ragged_row_splits_are_found_from_the_ops_that_read_them(ragged_pair):
    uses = input_uses(ModelGraph(model_io.read_model(ragged_pair[0]).meta_graph))
    assert {k: u.role for k, u in uses["serving_default"].items()} == {"ids_1": "row-splits"}
    assert {k: u.role for k, u in uses["split"].items()} == {"row_splits": "row-splits"}
    assert {k: u.role for k, u in uses["padded"].items()} == {"ids_1": "row-splits"}  # RaggedTensorToTensor
    assert {k: u.role for k, u in uses["nested"].items()} == {"ids_1": "row-splits", "ids_2": "row-splits"}


def test_ragged_inputs_are_generated_valid_and_validate_passes_exactly(ragged_pair):
    original, rewritten = ragged_pair
    meta = model_io.read_model(original).meta_graph
    spec = signature_specs(meta)["split"]
    generated, _ = generate_cases(
        spec, {"values": saved_models.ITEMS}, uses=input_uses(ModelGraph(meta))["split"]
    )
    for case in generated:
        splits, values = case.feeds["row_splits"], case.feeds["values"]
        assert splits[0] == 0 and splits[-1] == len(values) and (np.diff(splits) >= 0).all()
    nested_spec = signature_specs(meta)["nested"]
    for case in generate_cases(
        nested_spec, {"ids": saved_models.ITEMS}, uses=input_uses(ModelGraph(meta))["nested"]
    )[0]:
        outer, inner = case.feeds["ids_1"], case.feeds["ids_2"]  # inner splits cut the values
        assert inner[0] == 0 and inner[-1] == len(case.feeds["ids"]) and (np.diff(inner) >= 0).all()
        assert outer[0] == 0 and outer[-1] == len(inner) - 1 and (np.diff(outer) >= 0).all()
    report = validate_models(original, rewritten, loader="both", oov=False)
    assert report.passed, report.format()
    assert {run.signature for run in report.runs} == {"serving_default", "split", "padded", "nested"}
    assert all(len(run.cases) == 7 for run in report.runs)
    described = report.inputs["split"].inputs["row_splits"]
    assert described.endswith("RaggedTensor row splits: from 0 to the number of values, non-decreasing")


def test_validate_cli_passes_on_the_rewritten_ragged_model(ragged_pair):
    result = CliRunner().invoke(main, ["validate", *ragged_pair, "--loader", "session", "--batches", "1"])
    assert result.exit_code == 0, result.output
    assert "4 lookups of 1 converted table" in result.output and "RaggedTensor row splits" in result.output


def test_without_the_derivation_the_original_raises_on_generated_inputs(ragged_pair):
    # What validate fed before: row splits drawn like any integer input.
    loaded = tf.saved_model.load(ragged_pair[0])
    meta = model_io.read_model(ragged_pair[0]).meta_graph
    ranges = {"ids": saved_models.ITEMS, "values": saved_models.ITEMS}
    for name in ("serving_default", "split", "padded", "nested"):
        naive = generate_cases(signature_specs(meta)[name], ranges, batches=1)[0][0]
        feeds = {k: tf.constant(v) for k, v in naive.feeds.items()}
        with pytest.raises(tf.errors.InvalidArgumentError):
            loaded.signatures[name](**feeds)


def test_npz_of_a_ragged_batch_is_fed_as_given(ragged_pair, tmp_path):
    path = str(tmp_path / "bags.npz")
    # 4 values in 3 rows of 1, 0 and 3 values: as many splits as values, yet not rows to cut in batches.
    values, splits = np.array([0, 49, 7, 1], np.int64), np.array([0, 1, 1, 4], np.int64)
    np.savez(path, values=values, row_splits=splits, ids=values, ids_1=splits)
    report = validate_models(
        *ragged_pair,
        signatures=["serving_default", "split", "padded"],
        data=path,
        batch_size=2,
        loader="session",
        oov=False,
    )
    assert report.passed, report.format()
    assert [[name for name, _ in run.cases] for run in report.runs] == [["data-0"]] * 3
