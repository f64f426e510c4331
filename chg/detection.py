r"""Finding mislabeled training points: the simple baselines beside CHG Shapley, and the metrics that judge them all.

Every detector returns a **suspicion score** per training point, ``(n,)`` float64, *higher = more likely
mislabeled*. CHG Shapley values (:class:`chg.EpochValuer`; high = valuable) enter as ``-values``
(:func:`suspicion_from_values`); so do KNN Shapley values.

Detectors (each a pure function of arrays a training run produced):

* :func:`mean_loss` — each point's cross-entropy loss averaged over the epochs of one training run (the first thing a
  practitioner tries; e.g. the per-sample losses of the training forward passes).
* :func:`el2n` — EL2N (Paul, Ganguli & Dziugaite, NeurIPS 2021): :math:`\|\mathrm{softmax}(z_i) - \mathrm{onehot}(y_i)
  \|_2`, averaged over several models early in training. The paper averages over 10 independently initialised runs at
  one early epoch; a caller with one run (as :func:`chg.detection` users usually have) averages over a few early
  epochs' checkpoints of that run instead — say which in the results. The error vector is exactly
  :attr:`chg.lastlayer.Factors.err`, so a separate no-grad pass gives EL2N for free.
* :func:`confident_learning` — cleanlab's confident learning (Northcutt et al., JAIR 2021):
  ``cleanlab.filter.find_label_issues`` (the flagged set) and ``cleanlab.rank.get_label_quality_scores`` (the
  ranking), on **out-of-sample** predicted probabilities, as cleanlab's documentation prescribes: each point's
  probabilities from a model that did not train on it — K-fold cross-validation (:func:`out_of_sample_probs`).
* :func:`knn_shapley` — KNN Shapley (Jia et al., VLDB 2019) on embeddings (e.g. the penultimate features of the
  trained model), computed by OpenDataVal's ``KNNShapley`` against a clean validation set.

Metrics (:func:`detection_metrics`, scikit-learn): ROC AUC, average precision, precision at k = the number of flipped
labels, and the F1 of a 2-means split of the scores (OpenDataVal's noisy-label protocol: the cluster of higher
suspicion is flagged).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

__all__ = ["suspicion_from_values", "mean_loss", "el2n", "out_of_sample_probs", "confident_learning", "knn_shapley",
           "precision_at_k", "f1_two_means", "detection_metrics"]


def _np(a, name: str, dtype=np.float64) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    out = np.asarray(a, dtype=dtype)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or Inf ({int((~np.isfinite(out)).sum())} entries)")
    return out


def _labels(labels, n: int, num_classes: int | None = None) -> np.ndarray:
    y = _np(labels, "labels", np.int64)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {y.shape}")
    if n and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return y


def suspicion_from_values(values) -> np.ndarray:
    """Suspicion (n,) float64 from data values (n,), high = valuable: ``-values``. Raises on NaN (unvalued rows)."""
    return -_np(values, "values").reshape(-1)


def mean_loss(losses) -> np.ndarray:
    """Mean training loss per point.

    Args:
        losses: (E, n) per-sample cross-entropy losses (nats) of E epochs, or (n,) for one epoch; float.
    Returns:
        (n,) float64, the mean over epochs (high = suspicious).
    Raises:
        ValueError: NaN/Inf losses (a point missing in an epoch must not be filled silently), empty input.
    """
    arr = _np(losses, "losses")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"losses must be (E, n) with E >= 1, got shape {arr.shape}")
    return arr.mean(0)


def el2n(probs, labels) -> np.ndarray:
    r"""EL2N score :math:`\frac1K\sum_k \|p^{(k)}_i - \mathrm{onehot}(y_i)\|_2` (Paul et al. 2021, Sec. 2).

    Args:
        probs: (K, n, C) softmax probabilities of K models/checkpoints, or (n, C) for one; rows sum to 1.
        labels: (n,) int class labels (the given, possibly noisy, labels).
    Returns:
        (n,) float64 in [0, √2] (high = suspicious).
    Raises:
        ValueError: bad shapes, labels out of range, NaN/Inf, rows not summing to 1 (±1e-3: logits passed by mistake).
    """
    p = _np(probs, "probs")
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3:
        raise ValueError(f"probs must be (K, n, C) or (n, C), got shape {p.shape}")
    if np.abs(p.sum(-1) - 1).max(initial=0) > 1e-3:
        raise ValueError("probs rows must sum to 1 (softmax probabilities, not logits)")
    y = _labels(labels, p.shape[1], p.shape[2])
    err = p.copy()
    err[:, np.arange(p.shape[1]), y] -= 1.0  # (K, n, C) softmax − onehot
    return np.linalg.norm(err, axis=2).mean(0)


def out_of_sample_probs(fit_predict: Callable, labels, k: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-sample predicted probabilities by stratified K-fold cross-validation (cleanlab's prescription).

    Args:
        fit_predict: ``fit_predict(train_idx, test_idx) -> probs`` trains a fresh model on the rows ``train_idx``
            (int64 numpy array) and returns its softmax probabilities (len(test_idx), C) for the rows ``test_idx``.
        labels: (n,) int labels used for the stratification (the given, possibly noisy, labels).
        k: number of folds (>= 2); every class needs at least k points.
        seed: shuffles the folds (scikit-learn's ``StratifiedKFold(shuffle=True, random_state=seed)``).
    Returns:
        (n, C) float64: row i from the model of the fold that held i out.
    Raises:
        ValueError: k < 2, a class with fewer than k points, a fold's output of the wrong shape.
    """
    from sklearn.model_selection import StratifiedKFold
    y = _np(labels, "labels", np.int64).reshape(-1)
    if k < 2:
        raise ValueError(f"k must be >= 2 folds, got {k}")
    counts = np.bincount(y)
    if counts[counts > 0].min(initial=k) < k:
        raise ValueError(f"every class needs at least k={k} points for stratified folds; smallest class has "
                         f"{counts[counts > 0].min()}")
    out = None
    for train_idx, test_idx in StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        p = _np(fit_predict(train_idx, test_idx), "fold probabilities")
        if p.ndim != 2 or p.shape[0] != len(test_idx):
            raise ValueError(f"fit_predict must return ({len(test_idx)}, C) probabilities, got shape {p.shape}")
        if out is None:
            out = np.full((len(y), p.shape[1]), np.nan)
        out[test_idx] = p
    return out


def confident_learning(pred_probs, labels) -> tuple:
    """cleanlab's confident learning on out-of-sample probabilities.

    Args:
        pred_probs: (n, C) out-of-sample softmax probabilities (:func:`out_of_sample_probs`).
        labels: (n,) int given labels.
    Returns:
        ``(scores, issues)``: scores (n,) float64 = 1 − ``cleanlab.rank.get_label_quality_scores`` (its default
        ``self_confidence`` method; high = suspicious), issues (n,) bool = ``cleanlab.filter.find_label_issues``
        (its default ``prune_by_noise_rate`` filter): the points cleanlab flags.
    Raises:
        ValueError: shapes, NaN, labels out of range.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    p = _np(pred_probs, "pred_probs")
    if p.ndim != 2:
        raise ValueError(f"pred_probs must be (n, C), got shape {p.shape}")
    y = _labels(labels, p.shape[0], p.shape[1])
    quality = get_label_quality_scores(y, p)
    issues = find_label_issues(y, p)
    return 1.0 - np.asarray(quality, dtype=np.float64), np.asarray(issues, dtype=bool)


def knn_shapley(embeddings, labels, val_embeddings, val_labels, k_neighbors: int = 10,
                batch_size: int = 4096) -> np.ndarray:
    """KNN Shapley suspicion (−value) of each training point, by OpenDataVal's ``KNNShapley`` (Jia et al. 2019).

    Args:
        embeddings: (n, D) float training embeddings; labels: (n,) int.
        val_embeddings: (m, D) float embeddings of a clean validation set; val_labels: (m,) int.
        k_neighbors: K of the KNN classifier; batch_size: rows per distance block.
    Returns:
        (n,) float64, −(KNN Shapley value) (high = suspicious).
    Memory: O(n·m) (the distance matrix and its argsort: about 24·n·m bytes) — subsample the validation set for
        large n (e.g. m = 1,000 for n = 54,000: 1.3 GB). Labels are passed as class-index columns (n, 1), which
        OpenDataVal's match rule accepts, so nothing of size n·m·C is built.
    Raises:
        ValueError: shapes, NaN.
    """
    from opendataval.dataval.knnshap.knnshap import KNNShapley
    x = torch.as_tensor(_np(embeddings, "embeddings"), dtype=torch.float32)
    xv = torch.as_tensor(_np(val_embeddings, "val_embeddings"), dtype=torch.float32)
    if x.ndim != 2 or xv.ndim != 2 or x.shape[1] != xv.shape[1]:
        raise ValueError(f"embeddings must be (n, D) and (m, D), got {tuple(x.shape)} and {tuple(xv.shape)}")
    y = torch.as_tensor(_labels(labels, x.shape[0]))[:, None]
    yv = torch.as_tensor(_labels(val_labels, xv.shape[0]))[:, None]
    ev = KNNShapley(k_neighbors=k_neighbors, batch_size=batch_size)
    import contextlib
    import io
    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar over n rows
        ev.input_data(x, y, xv, yv).train_data_values()
    return suspicion_from_values(ev.evaluate_data_values())


# ---------------------------------------------------------------------------------------------------------------
# metrics

def _check_pair(scores, noisy) -> tuple:
    s = _np(scores, "scores").reshape(-1)
    t = _np(noisy, "noisy", bool).reshape(-1)
    if s.shape != t.shape:
        raise ValueError(f"scores ({s.shape[0]}) and noisy mask ({t.shape[0]}) differ in length")
    if t.all() or not t.any():
        raise ValueError("the noisy mask must contain both flipped and clean points")
    return s, t


def precision_at_k(scores, noisy, k: int | None = None) -> float:
    """Share of flipped labels among the k highest scores (ties: the lower index first); k defaults to the number
    of flipped labels (then precision = recall at k)."""
    s, t = _check_pair(scores, noisy)
    k = int(t.sum()) if k is None else int(k)
    if not 1 <= k <= len(s):
        raise ValueError(f"k must lie in [1, {len(s)}], got {k}")
    top = np.argsort(-s, kind="stable")[:k]
    return float(t[top].mean())


def f1_two_means(scores, noisy, seed: int = 0) -> float:
    """F1 of the flipped labels against the 2-means split of the scores (scikit-learn ``KMeans(2, n_init=10)``):
    the cluster with the higher centre is flagged."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import f1_score
    s, t = _check_pair(scores, noisy)
    km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(s[:, None])
    flagged = km.labels_ == int(np.argmax(km.cluster_centers_[:, 0]))
    return float(f1_score(t, flagged))


def detection_metrics(scores, noisy) -> dict:
    """All four metrics of one detector.

    Args:
        scores: (n,) suspicion scores (high = suspicious); noisy: (n,) bool, True where the label was flipped.
    Returns:
        dict with ``roc_auc``, ``average_precision`` (scikit-learn), ``precision_at_k``, ``k`` (= number of flipped
        labels), ``f1_2means`` — floats in [0, 1] (k an int).
    Raises:
        ValueError: NaN scores, lengths differ, a mask with only one kind of point.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score
    s, t = _check_pair(scores, noisy)
    return {"roc_auc": float(roc_auc_score(t, s)), "average_precision": float(average_precision_score(t, s)),
            "precision_at_k": precision_at_k(s, t), "k": int(t.sum()), "f1_2means": f1_two_means(s, t)}
