"""The medium detection table's protocol: one training run on a noisy pool, every point scored by every detector of
:mod:`chg.detection` (CHG Shapley by Algorithm 1's separate pass and ride-along, mean training loss, EL2N, cleanlab on
K-fold out-of-sample probabilities, KNN Shapley). Part of the paper's harness (:mod:`chg.experiments`): it trains the
tables' models on the tables' data sets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..detection import (confident_learning, detection_metrics, el2n, knn_shapley, mean_loss, out_of_sample_probs,
                         suspicion_from_values)

__all__ = ["DetectionConfig", "run_detection"]



@dataclass(frozen=True)
class DetectionConfig:
    """Settings of :func:`run_detection` (defaults: the medium scale's Fashion-MNIST model and optimiser).

    Attributes:
        model, width: the model of :func:`chg.experiments.models.build_model` and its width (None: its default).
        epochs, batch_size, lr, momentum, weight_decay: the training run (SGD with Nesterov momentum, cosine).
        el2n_epochs: EL2N averages the separate passes after epochs 1..el2n_epochs (1 ≤ el2n_epochs < epochs).
        folds: cleanlab's K-fold out-of-sample probabilities (0: skip cleanlab). knn_val, knn_k: KNN Shapley's
            stratified validation points (0: skip it) and neighbours. factor_batch_size: rows per no-grad batch.
        seed: seeds the model's initialisation, the batches, the folds and the validation subsample.
    """
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
    from ..lastlayer import LastLayerTap
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
    Raises:
        ValueError: ``el2n_epochs`` outside [1, epochs), and as the valuers and detectors do (e.g. a class with fewer
            points than ``folds``).
    """
    import dataclasses
    import time

    from ..lastlayer import compute_factors
    from .train import TrainConfig, pool_factors
    from ..valuation import EpochValuer
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
        out["metrics"] = {k: detection_metrics(v, data.noisy.cpu(), higher_is="suspicious") for k, v in scores.items()}
    return out
