"""The training proof: 1 and 10 steps of a TF1 training graph and of its rewrite on the same batch.

Ids stay inside the original vocabulary. What holds bit for bit and what differs (and by how
much) is documented in docs/training.md, "TF1 training graphs"; these tests pin it.
"""

import pytest

from tests.rewrite.test_training_tf1 import ID_FEATURES, batch, build_training_checkpoint, rewrite


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory):
    built = {}

    def get(optimizer, pretrain=False):
        key = (optimizer, pretrain)
        if key not in built:
            root = tmp_path_factory.mktemp(f"train-{optimizer}")
            meta = build_training_checkpoint(root / "model", optimizer, pretrain=pretrain)
            rewrite(meta, root / "out")
            built[key] = meta, str(root / "out")
        return built[key]

    return get


def _run(rewritten, optimizer, steps, batches, pretrain=False):
    from graphopt.validate.training_steps import compare_training

    meta, out = rewritten(optimizer, pretrain)
    return compare_training(meta, out, batches, steps=steps)


def _worst(result, part, what="values"):
    return max((c.max_abs_diff for t in result.tables for c in getattr(t, part) if c.what == what), default=0)


@pytest.mark.parametrize("steps", [1, 10])
def test_ftrl_bit_identical(rewritten, steps):
    result = _run(rewritten, "ftrl", steps, [batch()], pretrain=True)
    assert result.identical, result.to_dict()


@pytest.mark.parametrize("steps", [1, 10])
def test_sgd_bit_identical_without_repeated_ids(rewritten, steps):
    result = _run(rewritten, "sgd", steps, [batch(16, unique=True)])
    assert result.identical, result.to_dict()


@pytest.mark.parametrize("steps", [1, 10])
def test_sgd_bit_identical_with_repeated_ids(rewritten, steps):
    """v1 SGD scatter-adds -lr*g once per occurrence in batch order; so does the rewrite's apply op
    (sum_duplicates=False), so repeated ids no longer cost the last bits."""
    feeds = batch()
    assert any(len(set(feeds[k].tolist())) < len(feeds[k]) for k in ID_FEATURES)
    result = _run(rewritten, "sgd", steps, [feeds])
    assert result.identical, result.to_dict()


@pytest.mark.parametrize("steps", [1, 10])
def test_adagrad_bit_identical(rewritten, steps):
    """v1 Adagrad multiplies by Eigen's packet rsqrt(acc); the apply op's rsqrt=true form does too."""
    result = _run(rewritten, "adagrad", steps, [batch()], pretrain=True)
    assert result.identical, result.to_dict()


@pytest.mark.parametrize("steps", [1, 10])
def test_adam_same_batch(rewritten, steps):
    """From fresh slots on one batch: no untouched row has m != 0, so dense and lazy agree on them."""
    result = _run(rewritten, "adam", steps, [batch()])
    assert result.losses_identical
    assert all(c.identical for t in result.tables for c in t.untouched)
    assert _worst(result, "touched") < 2e-8
    assert max(_worst(result, "touched", "slot m"), _worst(result, "touched", "slot v")) < 1e-9


def test_adam_lazy_rule_on_rows_outside_the_batch(rewritten):
    """Pretrained slots, batches that differ: dense v1 Adam moves every row with m != 0, the
    rewrite (lazy Adam) leaves rows outside the batch exactly as they were."""
    result = _run(rewritten, "adam", 10, [batch(seed=7), batch(seed=8)], pretrain=True)
    assert all(c.identical for t in result.tables for c in t.lazy)
    moved = _worst(result, "untouched")
    assert 1e-4 < moved < 1e-2  # about lr per step on each row the pretraining step touched


def _cli(*args):
    from click.testing import CliRunner

    from graphopt.cli import main

    return CliRunner().invoke(main, ["validate", "--train", *args])


def test_cli_train_check_passes_and_fails(rewritten, tmp_path):
    import json

    import numpy as np

    meta, out = rewritten("ftrl", True)
    ok = _cli(meta, out, "--steps", "2", "--batch-size", "32")
    assert ok.exit_code == 0, ok.output
    assert "2 training step(s): losses bit-identical" in ok.output and ok.output.endswith(
        "training check passed\n"
    )
    # Adam (v1's m*beta1 + g*(1-beta1) vs. the op's m + (g-m)(1-beta1)): last-bit differences,
    # a failure at --atol 0 and a pass at 1e-7.
    meta, out = rewritten("adam")
    feeds = batch()
    np.savez(tmp_path / "batch.npz", **feeds)
    exact = _cli(meta, out, "--data", str(tmp_path / "batch.npz"), "--steps", "3", "--json")
    assert exact.exit_code == 1
    report = json.loads(exact.output)
    assert not report["passed"] and report["runs"][0]["losses_identical"]
    assert (
        _cli(meta, out, "--data", str(tmp_path / "batch.npz"), "--steps", "3", "--atol", "1e-7").exit_code
        == 0
    )


def test_cli_train_bad_input(rewritten, tmp_path):
    meta, out = rewritten("ftrl", True)
    result = _cli(meta, str(tmp_path), "--steps", "1")  # not a rewrite's output
    assert result.exit_code == 2 and "graphopt_manifest.json cannot be read" in result.output
    assert "Traceback" not in result.output
    result = _cli(meta, out, "--data", str(tmp_path / "x.csv"))
    assert result.exit_code == 2 and "give an .npz" in result.output
    result = _cli(meta, out, "--loss", "nope", "--steps", "1")
    assert result.exit_code == 2 and "no loss tensor 'nope'" in result.output
