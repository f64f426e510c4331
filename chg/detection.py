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

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

__all__ = ["suspicion_from_values", "mean_loss", "el2n", "out_of_sample_probs", "confident_learning", "knn_shapley",
           "precision_at_k", "f1_two_means", "detection_metrics", "DetectionConfig", "run_detection"]


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


# ---------------------------------------------------------------------------------------------------------------
# one training run scored by every detector (the medium detection table's protocol)

@dataclass(frozen=True)
class DetectionConfig:
    """Settings of :func:`run_detection` (defaults: the medium scale's Fashion-MNIST model and optimiser)."""
    model: str = "image_mlp"
    width: int | None = None
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05              # SGD, Nesterov momentum 0.9, weight decay 5e-4, cosine: as chg.train
    momentum: float = 0.9
    weight_decay: float = 5e-4
    el2n_epochs: int = 3          # EL2N: mean over the separate-pass checkpoints after epochs 1..this
    folds: int = 5                # cleanlab: K of the K-fold out-of-sample probabilities (0: skip cleanlab)
    knn_val: int = 1000           # KNN Shapley: validation points (stratified subsample; 0: skip KNN Shapley)
    knn_k: int = 10
    factor_batch_size: int = 2048
    seed: int = 0


def _fit(data, rows, cfg: DetectionConfig, device, valuers=None, pass_hook=None):
    """Train a fresh model on pool rows ``rows``; ride-along factors to ``valuers['ride']``; ``pass_hook(model,
    epoch)`` before each epoch. Returns (model, (E, len(rows)) per-sample training losses)."""
    import torch.nn.functional as F
    from .lastlayer import LastLayerTap
    from .models import build_model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, data.num_classes, tuple(data.train.x.shape[1:]), cfg.width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    rows = torch.as_tensor(rows, dtype=torch.int64)
    losses = torch.zeros(cfg.epochs, len(rows), dtype=torch.float64)
    for epoch in range(cfg.epochs):
        if pass_hook is not None:
            pass_hook(model, epoch)
        model.train()
        perm = torch.randperm(len(rows), generator=gen)
        with LastLayerTap(model) as tap:
            for b in range(0, len(rows), cfg.batch_size):
                local = perm[b:b + cfg.batch_size]
                xb, yb = data.train.x[rows[local]].to(device), data.train.y[rows[local]].to(device)
                logits = model(xb)  # (B, C)
                f = tap.factors(logits, yb)
                losses[epoch, local] = f.loss.double().cpu()
                if valuers is not None:
                    valuers["ride"].add(rows[local], f, yb)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        sched.step()
        if valuers is not None:
            valuers["ride"].end_epoch()
    return model, losses


def run_detection(data, cfg: DetectionConfig | None = None, device: str = "cpu") -> dict:
    """Train ``cfg.model`` once on ``data``'s (noisy) pool and score every pool point with every detector.

    Per epoch k: Algorithm 1's separate pass (no-grad, eval mode, :func:`chg.train.pool_factors`) values every point
    at θ_k (CHG, Algorithm 1) and gives its softmax error (EL2N); then the training epoch, whose forward passes give
    the ride-along CHG values (:meth:`chg.EpochValuer.add`) and the per-sample training losses (mean loss); both CHG
    variants are also scored on the later half of the epochs alone (``skip_epochs = epochs // 2``: the detectors
    ``chg_algorithm1_skip`` and ``chg_ride_skip``, from the same per-epoch values, no extra compute). After
    training: KNN Shapley on the trained model's penultimate features (against ``knn_val`` clean validation points),
    and cleanlab on ``folds``-fold out-of-sample probabilities (``folds`` fresh models, same settings).

    Args:
        data: a :class:`chg.data.DataBundle` whose ``noisy`` mask marks the flipped labels.
        cfg: :class:`DetectionConfig`; device: torch device name.
    Returns:
        dict: ``scores`` {detector: (n,) float64 suspicion}, ``metrics`` {detector: :func:`detection_metrics`}
        (only when some labels are flipped), ``times_s`` {step: wall seconds — ``train_with_values`` (the training
        epochs with ride-along values and losses), ``separate_pass`` (Algorithm 1's passes, EL2N included),
        ``el2n_passes`` (the part of ``separate_pass`` spent in the passes EL2N uses, after epochs 1..el2n_epochs),
        ``knn_shapley``, ``kfold_training``, ``cleanlab``}, ``test_acc`` (%) of the trained model,
        ``cleanlab_flagged`` (number of points ``find_label_issues`` flags) and, with flipped labels,
        ``cleanlab_find_label_issues_f1`` (F1 of that flagged set), ``config``.
    """
    import dataclasses
    import time

    from .lastlayer import compute_factors
    from .train import TrainConfig, pool_factors
    from .valuation import EpochValuer
    cfg = cfg or DetectionConfig()
    if not 1 <= cfg.el2n_epochs < cfg.epochs:
        raise ValueError(f"el2n_epochs must lie in [1, epochs) = [1, {cfg.epochs}), got {cfg.el2n_epochs}")
    dev = torch.device(device)
    n, C = len(data.train), data.num_classes
    y = data.train.y
    tcfg = TrainConfig(factor_batch_size=cfg.factor_batch_size, amp=False, channels_last=False)
    valuers = {"pass": EpochValuer(n), "ride": EpochValuer(n)}
    early_probs, times = [], {"separate_pass": 0.0, "el2n_passes": 0.0}

    def separate_pass(model, epoch):  # Algorithm 1, line 2: every point at θ_k
        t0 = time.perf_counter()
        f = pool_factors(model, data.train.x.to(dev), y.to(dev), tcfg, dev)
        valuers["pass"].add(torch.arange(n), f, y)
        valuers["pass"].end_epoch()
        if 1 <= epoch <= cfg.el2n_epochs:
            early_probs.append(f.err.double().cpu() + torch.nn.functional.one_hot(y, C).double())  # probs
            times["el2n_passes"] += time.perf_counter() - t0
        times["separate_pass"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    model, losses = _fit(data, torch.arange(n), cfg, dev, valuers, separate_pass)
    times["train_with_values"] = time.perf_counter() - t0 - times["separate_pass"]
    skip = cfg.epochs // 2  # the later half of the epochs alone (skip_epochs; benchmarks/results/modes.md)
    scores = {"chg_algorithm1": suspicion_from_values(valuers["pass"].values()),
              "chg_ride_along": suspicion_from_values(valuers["ride"].values()),
              "chg_algorithm1_skip": suspicion_from_values(valuers["pass"].values().skip_epochs(skip)),
              "chg_ride_skip": suspicion_from_values(valuers["ride"].values().skip_epochs(skip)),
              "mean_loss": mean_loss(losses),
              "el2n": el2n(torch.stack(early_probs), y)}
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(data.test.x[b:b + 4096].to(dev)).argmax(1).cpu() == data.test.y[b:b + 4096]).sum())
                      for b in range(0, len(data.test), 4096))
    out = {"test_acc": 100.0 * correct / len(data.test), "config": dataclasses.asdict(cfg)}

    if cfg.knn_val:
        t0 = time.perf_counter()
        from .data import stratified_split
        val_rows = torch.arange(len(data.val))
        if cfg.knn_val < len(data.val):
            val_rows = stratified_split(data.val.y, cfg.knn_val / len(data.val), torch.Generator().manual_seed(
                cfg.seed))[1]
        emb = pool_factors(model, data.train.x.to(dev), y.to(dev), tcfg, dev).feat
        emb_val = compute_factors(model, data.val.x[val_rows].to(dev), data.val.y[val_rows].to(dev)).feat
        scores["knn_shapley"] = knn_shapley(emb.cpu(), y, emb_val.cpu(), data.val.y[val_rows], cfg.knn_k)
        times["knn_shapley"] = time.perf_counter() - t0

    if cfg.folds:
        t0 = time.perf_counter()

        def fit_predict(train_idx, test_idx):
            fold_model, _ = _fit(data, train_idx, cfg, dev)
            fold_model.eval()
            with torch.no_grad():
                return torch.cat([torch.softmax(fold_model(data.train.x[test_idx[b:b + 4096]].to(dev)).double(), 1)
                                  for b in range(0, len(test_idx), 4096)]).cpu()

        probs = out_of_sample_probs(fit_predict, y, cfg.folds, cfg.seed)
        times["kfold_training"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores["cleanlab"], issues = confident_learning(probs, y)
        times["cleanlab"] = time.perf_counter() - t0
        out["cleanlab_flagged"] = int(issues.sum())
        if bool(data.noisy.any()):
            from sklearn.metrics import f1_score
            out["cleanlab_find_label_issues_f1"] = float(f1_score(data.noisy.cpu().numpy(), issues))
    out["scores"] = scores
    out["times_s"] = times
    if bool(data.noisy.any()) and not bool(data.noisy.all()):
        out["metrics"] = {k: detection_metrics(v, data.noisy.cpu()) for k, v in scores.items()}
    return out
