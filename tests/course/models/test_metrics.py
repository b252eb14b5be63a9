import numpy as np
import pytest

from graphopt.course.models import metrics


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # rounding creates ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert metrics.roc_auc(labels, scores) == pytest.approx(pairwise)


def test_perfect_and_inverted_rankings():
    labels = np.array([0, 0, 1, 1])
    assert metrics.roc_auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.roc_auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.pr_auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.accuracy(labels, [0.1, 0.6, 0.8, 0.4]) == 0.5


def test_average_precision_by_hand():
    # Ranked: 1 (p=1/1), 0, 1 (p=2/3) -> AP = (1 + 2/3) / 2
    assert metrics.pr_auc([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx((1 + 2 / 3) / 2)
