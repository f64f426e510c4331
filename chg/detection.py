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

Metrics (:func:`detection_metrics`, the one scorer of every detection result in the project: the detection table and
Table 1's OpenDataVal runs): ROC AUC, average precision, precision at k = the number of flipped labels (scikit-learn),
the F1 of a 2-means split of the scores (the cluster of higher suspicion is flagged), and on request OpenDataVal's
noisy-label F1 (its exact 1-D 2-means split of the values and its F1, as OpenDataVal's ``noisy_detection`` scores
it). :func:`discovery_curve` is the share of the flipped labels found among the most suspect points.

**Which end is suspect.** Every metric takes ``higher_is``: ``"suspicious"`` (the default; a detector's suspicion
score) or ``"valuable"`` (data values: CHG Shapley, OpenDataVal's ``data_values``), which are turned into suspicion
by :func:`suspicion_from_values` (``-values``) first. The flipped points are a boolean mask; :func:`noisy_mask` makes
one from indices (OpenDataVal's ``noisy_train_indices``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

__all__ = ["suspicion_from_values", "mean_loss", "el2n", "out_of_sample_probs", "confident_learning", "knn_shapley",
           "noisy_mask", "precision_at_k", "f1_two_means", "f1_two_means_opendataval", "discovery_curve",
           "detection_metrics"]

HIGHER_IS = ("suspicious", "valuable")  # what a higher score means: suspicion (detectors) or value (data values)


def _np(a, name: str, dtype=np.float64) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    out = np.asarray(a, dtype=dtype)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or Inf ({int((~np.isfinite(out)).sum())} entries)")
    return out


def _labels(labels, n: int | None, num_classes: int | None = None, name: str = "labels") -> np.ndarray:
    """(n,) int64 NumPy labels, validated by the one label validator (:func:`chg.selection.as_labels`)."""
    from .selection.interface import as_labels
    return as_labels(labels, name, n=n, num_classes=num_classes).cpu().numpy()


def suspicion_from_values(values) -> np.ndarray:
    """Suspicion from data values: ``-values`` (exact: negation does not round).

    Args:
        values: (n,) data values (or any shape, flattened), higher = more valuable; float, NumPy or torch.
    Returns:
        (n,) float64, higher = more suspect.
    Raises:
        ValueError: NaN or Inf values (e.g. rows that were never valued).
    """
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
    y = _labels(labels, None)
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
    yv = torch.as_tensor(_labels(val_labels, xv.shape[0], name="val_labels"))[:, None]
    ev = KNNShapley(k_neighbors=k_neighbors, batch_size=batch_size)
    from .progress import silenced_bars
    with silenced_bars():  # its tqdm bar over n rows
        ev.input_data(x, y, xv, yv).train_data_values()
    return suspicion_from_values(ev.evaluate_data_values())


# ---------------------------------------------------------------------------------------------------------------
# metrics

def noisy_mask(indices, n: int) -> np.ndarray:
    """The boolean mask of the flipped points from their indices.

    Args:
        indices: (m,) int indices of the flipped (corrupted) points, e.g. OpenDataVal's ``noisy_train_indices``.
        n: the number of points.
    Returns:
        (n,) bool, True at ``indices``.
    Raises:
        ValueError: indices that are not integers, lie outside [0, n) or repeat.
    """
    idx = np.asarray(indices).reshape(-1)
    if idx.size and idx.dtype.kind not in "iu":
        raise ValueError(f"noisy indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"noisy indices must lie in [0, {n}), got range [{idx.min()}, {idx.max()}]")
    if len(np.unique(idx)) != len(idx):
        raise ValueError("noisy indices repeat: each flipped point is listed once")
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return mask


def _check_pair(scores, noisy, higher_is: str) -> tuple:
    """(suspicion (n,) float64, mask (n,) bool) from scores of either convention and a boolean mask."""
    if higher_is not in HIGHER_IS:
        raise ValueError(f"higher_is must be one of {HIGHER_IS} (what a higher score means), got {higher_is!r}")
    s = _np(scores, "scores").reshape(-1)
    s = suspicion_from_values(s) if higher_is == "valuable" else s
    raw = noisy.detach().cpu().numpy() if isinstance(noisy, torch.Tensor) else np.asarray(noisy)
    if raw.dtype != bool and not np.isin(raw, (0, 1)).all():
        raise ValueError("noisy must be a boolean mask (True = flipped), got other values than 0/1; for indices of "
                         "the flipped points use noisy_mask(indices, n)")
    t = raw.astype(bool).reshape(-1)
    if s.shape != t.shape:
        raise ValueError(f"scores ({s.shape[0]}) and noisy mask ({t.shape[0]}) differ in length")
    if t.all() or not t.any():
        raise ValueError("the noisy mask must contain both flipped and clean points")
    return s, t


def _most_suspect_first(s: np.ndarray) -> np.ndarray:
    """Indices from the highest suspicion down; ties: the lower index first (a stable sort)."""
    return np.argsort(-s, kind="stable")


def precision_at_k(scores, noisy, k: int | None = None, *, higher_is: str = "suspicious") -> float:
    """Share of flipped labels among the k most suspect points.

    Args:
        scores: (n,) float scores; noisy: (n,) bool mask, True = flipped.
        k: how many of the most suspect points (ties: the lower index first); None: the number of flipped labels
            (then precision = recall at k).
        higher_is: ``"suspicious"`` (scores are suspicion) or ``"valuable"`` (scores are data values).
    Returns:
        float in [0, 1].
    Raises:
        ValueError: k outside [1, n], NaN scores, lengths differ, a mask with only one kind of point or not boolean,
            an unknown ``higher_is``.
    """
    s, t = _check_pair(scores, noisy, higher_is)
    k = int(t.sum()) if k is None else int(k)
    if not 1 <= k <= len(s):
        raise ValueError(f"k must lie in [1, {len(s)}], got {k}")
    return float(t[_most_suspect_first(s)[:k]].mean())


def f1_two_means(scores, noisy, seed: int = 0, *, higher_is: str = "suspicious") -> float:
    """F1 of the flipped labels against a 2-means split of the suspicion: scikit-learn ``KMeans(2, n_init=10)``
    (Lloyd's algorithm from 10 seeded starts, so a local optimum can be returned), the cluster with the higher centre
    flagged.

    Args:
        scores: (n,) float scores; noisy: (n,) bool mask, True = flipped. seed: KMeans' ``random_state``.
        higher_is: ``"suspicious"`` or ``"valuable"``.
    Returns:
        float in [0, 1].
    Raises:
        ValueError: as :func:`precision_at_k`.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import f1_score
    s, t = _check_pair(scores, noisy, higher_is)
    km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(s[:, None])
    flagged = km.labels_ == int(np.argmax(km.cluster_centers_[:, 0]))
    return float(f1_score(t, flagged))


def _opendataval_split(s: np.ndarray, t: np.ndarray) -> tuple:
    """(F1, number flagged) of OpenDataVal's noisy-label protocol on suspicion ``s``: the exact 1-D 2-means split
    (``oned_twonn_clustering``) of the values ``-s``, the lower-valued cluster flagged, scored by its ``f1_score``."""
    from opendataval.experiment.util import f1_score, oned_twonn_clustering
    flagged, _ = oned_twonn_clustering(-s)  # -s: the values themselves (bit for bit when s = -values)
    return float(f1_score(flagged, np.flatnonzero(t), len(s))), len(flagged)


def f1_two_means_opendataval(scores, noisy, *, higher_is: str = "suspicious") -> float:
    """OpenDataVal's noisy-label F1 (its ``noisy_detection``): the exact optimal 1-D 2-means split of the values
    (``opendataval.experiment.util.oned_twonn_clustering``), the lower-valued (more suspect) cluster flagged, F1 by
    OpenDataVal's ``f1_score``. Needs the ``opendataval`` package. It can differ from :func:`f1_two_means`, whose
    Lloyd iterations may stop in a local optimum (and which flags a whole cluster when the scores are all equal).

    Args:
        scores: (n,) float scores; noisy: (n,) bool mask, True = flipped.
        higher_is: ``"suspicious"`` or ``"valuable"``.
    Returns:
        float in [0, 1].
    Raises:
        ValueError: as :func:`precision_at_k`.
    """
    return _opendataval_split(*_check_pair(scores, noisy, higher_is))[0]


def discovery_curve(scores, noisy, fractions, *, higher_is: str = "suspicious") -> np.ndarray:
    """Share of the flipped points found among the most suspect ``fraction`` of the data, for each fraction
    (OpenDataVal's ``discover_corrupted_sample``, on any grid): points inspected in the order of
    :func:`precision_at_k` (ties: the lower index first), ``round(fraction · n)`` of them.

    Args:
        scores: (n,) float scores; noisy: (n,) bool mask, True = flipped.
        fractions: (g,) floats in [0, 1], the shares of the data inspected.
        higher_is: ``"suspicious"`` or ``"valuable"``.
    Returns:
        (g,) float64 in [0, 1], non-decreasing in the fraction.
    Raises:
        ValueError: a fraction outside [0, 1], and as :func:`precision_at_k`.
    """
    s, t = _check_pair(scores, noisy, higher_is)
    f = np.asarray(fractions, dtype=np.float64)
    if f.size and (f.min() < 0 or f.max() > 1):
        raise ValueError(f"fractions must lie in [0, 1], got range [{f.min()}, {f.max()}]")
    found = np.concatenate([[0], np.cumsum(t[_most_suspect_first(s)])]) / t.sum()
    return found[np.round(f * len(s)).astype(int)]


def detection_metrics(scores, noisy, *, higher_is: str = "suspicious", opendataval: bool = False) -> dict:
    """Every metric of one detector (or one data valuation) against the flipped labels: the one scorer of the
    detection table and of Table 1.

    Args:
        scores: (n,) float scores. noisy: (n,) bool, True where the label was flipped (:func:`noisy_mask` from
            indices).
        higher_is: ``"suspicious"`` (the default: scores are a detector's suspicion) or ``"valuable"`` (scores are
            data values, e.g. CHG Shapley's or OpenDataVal's ``data_values``; scored as ``-values``).
        opendataval: also OpenDataVal's noisy-label F1 (:func:`f1_two_means_opendataval`; needs ``opendataval``).
    Returns:
        dict with ``roc_auc``, ``average_precision`` (scikit-learn), ``precision_at_k``, ``k`` (= number of flipped
        labels), ``f1_2means`` — floats in [0, 1] (k an int) — and with ``opendataval``: ``f1_2means_opendataval``
        (float) and ``flagged_2means_opendataval`` (int, the size of the flagged cluster).
    Raises:
        ValueError: NaN scores, lengths differ, a mask with only one kind of point or not boolean, an unknown
            ``higher_is``.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score
    s, t = _check_pair(scores, noisy, higher_is)
    out = {"roc_auc": float(roc_auc_score(t, s)), "average_precision": float(average_precision_score(t, s)),
           "precision_at_k": precision_at_k(s, t), "k": int(t.sum()), "f1_2means": f1_two_means(s, t)}
    if opendataval:
        out["f1_2means_opendataval"], out["flagged_2means_opendataval"] = _opendataval_split(s, t)
    return out
