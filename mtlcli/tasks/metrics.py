"""Metrics of every task type: classification from confusion matrices (rows: true label, columns:
predicted), multi-label from 0/1 matrices, regression from values. Plain numpy."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    return np.bincount(y_true * n_labels + y_pred, minlength=n_labels * n_labels).reshape(n_labels, n_labels)


def accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per label; 0 where undefined (as scikit-learn does)."""
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, support


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the labels that occur in the truth or the predictions."""
    _, _, f1, support = per_class(cm)
    present = (support > 0) | (cm.sum(axis=0) > 0)
    return float(f1[present].mean()) if present.any() else float("nan")


# ---- multi-label: a 0/1 matrix per task, rows x labels ----------------------------------------


def label_counts(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted positives and actual positives per label (columns)."""
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    return (truth & predicted).sum(0), predicted.sum(0), truth.sum(0)


def f1_from_counts(tp, predicted, actual) -> np.ndarray:
    """F1 = 2 tp / (predicted + actual); 0 where both are 0 (as scikit-learn does with zero_division=0)."""
    tp, denominator = np.asarray(tp, dtype=float), np.asarray(predicted, dtype=float) + np.asarray(actual, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, 0.0)


def per_label(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per label of a multi-label task; 0 where undefined."""
    tp, pred, actual = label_counts(truth, predicted)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred > 0, tp / np.maximum(pred, 1), 0.0)
        recall = np.where(actual > 0, tp / np.maximum(actual, 1), 0.0)
    return precision, recall, f1_from_counts(tp, pred, actual), actual


def multilabel_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Micro-, macro- and samples-F1 and subset accuracy of 0/1 matrices (rows x labels).

    Macro-F1 averages over every label (a label absent from truth and predictions scores 0, as
    scikit-learn's f1_score(average="macro", zero_division=0) does), so it matches published figures.
    """
    if not len(truth):
        return {"micro_f1": float("nan"), "macro_f1": float("nan"), "samples_f1": float("nan"),
                "subset_accuracy": float("nan")}
    tp, pred, actual = label_counts(truth, predicted)
    row_tp, row_pred, row_actual = label_counts(truth.T, predicted.T)
    return {"micro_f1": float(f1_from_counts(tp.sum(), pred.sum(), actual.sum())),
            "macro_f1": float(f1_from_counts(tp, pred, actual).mean()),
            "samples_f1": float(f1_from_counts(row_tp, row_pred, row_actual).mean()),
            "subset_accuracy": float((truth.astype(bool) == predicted.astype(bool)).all(1).mean())}


def best_thresholds(truth: np.ndarray, scores: np.ndarray, min_positives: int, default: float = 0.5) -> np.ndarray:
    """Per label, the score threshold that maximises its F1 on these rows (a label is predicted
    where its score is at least the threshold); ``default`` for a label with fewer than
    ``min_positives`` positive rows, where a tuned threshold would only fit noise."""
    thresholds = np.full(truth.shape[1], default, dtype=np.float64)
    for j in range(truth.shape[1]):
        y = truth[:, j].astype(bool)
        if y.sum() < min_positives:
            continue
        order = np.argsort(-scores[:, j], kind="stable")
        s, hits = scores[order, j], np.cumsum(y[order])
        predicted = np.arange(1, len(s) + 1)
        f1 = 2 * hits / (predicted + y.sum())
        last = np.r_[s[1:] != s[:-1], True]  # a threshold sits at a distinct score: ties go together
        k = int(np.argmax(np.where(last, f1, -1.0)))
        lower = s[k + 1] if k + 1 < len(s) else 0.0
        thresholds[j] = float((s[k] + lower) / 2) if lower < s[k] else float(s[k])  # halfway to the next score
    return thresholds


# ---- regression: values in the task's own units -------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (as scipy.stats.rankdata does)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    ends = np.r_[first[1:], len(x)]
    mean_rank = (first + ends + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def regression_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, Spearman's rank correlation and R² (1 - residual / total sum of squares)."""
    if not len(truth):
        return {"mae": float("nan"), "rmse": float("nan"), "spearman": float("nan"), "r2": float("nan")}
    truth, predicted = truth.astype(np.float64), predicted.astype(np.float64)
    error = predicted - truth
    total = float(((truth - truth.mean()) ** 2).sum())
    rt, rp = _ranks(truth), _ranks(predicted)
    spread = float(np.sqrt(((rt - rt.mean()) ** 2).sum() * ((rp - rp.mean()) ** 2).sum()))
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean())),
            "spearman": float(((rt - rt.mean()) * (rp - rp.mean())).sum() / spread) if spread else float("nan"),
            "r2": 1.0 - float((error ** 2).sum()) / total if total else float("nan")}
