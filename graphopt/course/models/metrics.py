"""Binary-classification metrics computed the same way for every model form."""

import numpy as np


def accuracy(labels, scores, threshold=0.5):
    return float(np.mean((np.asarray(scores) >= threshold) == (np.asarray(labels) == 1)))


def roc_auc(labels, scores):
    """Exact ROC AUC (Mann-Whitney U), ties counted as half."""
    labels = np.asarray(labels) == 1
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(scores)]))
    for s, e in zip(starts, ends, strict=False):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pr_auc(labels, scores):
    """Area under the precision-recall curve as average precision (step-wise, no interpolation)."""
    labels = np.asarray(labels) == 1
    if labels.sum() == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    hits = labels[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / labels.sum())
