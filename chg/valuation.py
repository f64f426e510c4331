r"""Algorithm 1: CHG Shapley values of every training point, averaged over the epochs of one training run.

Each epoch k (paper, Algorithm 1):

1. acquire every point's loss :math:`l_i` and last-layer gradient :math:`g_i = e_i \otimes [h_i; 1]` at
   :math:`\theta_k` (:mod:`chg.lastlayer`; never per-sample autograd),
2. value every point with eq. (3), :math:`x_i = l_i g_i`, :math:`\alpha = \frac1N\sum_{i\in N} l_i g_i`,
3. train the epoch;

and return each point's value averaged over the epochs.

Two ways to acquire step 1, both with :class:`EpochValuer`:

* **separate pass** (exactly Algorithm 1): ``valuer.value_epoch(model, loader)`` at the start of the epoch runs one
  no-grad forward pass over the training set (model in eval mode) and computes the epoch's values. Every point is
  seen at the same parameters :math:`\theta_k`. Costs one extra forward pass per epoch.
* **ride-along** (no extra pass): inside your training step, ``valuer.add(indices, tap.factors(logits, y), y)``
  with the logits of the training forward pass (:class:`chg.lastlayer.LastLayerTap`), then ``valuer.end_epoch()``.
  Each batch's factors come from the parameters *at that step*, so within an epoch the points are seen at different
  :math:`\theta` (and in train mode: dropout, batch-norm batch statistics). The values approximate Algorithm 1's;
  they coincide with it when the learning rate is zero.

Either way the epoch's statistics (n, :math:`s = \sum x_i`, :math:`\sum\|x_i\|^2`) are computed from the whole
epoch before any value is, so the factors of the epoch are kept: memory O(n·(C+D)) (loss, error, features per
point), never O(n·C·D).

Multi-process (``torchrun``, one process per GPU, each with its shard of the data, e.g. a ``DistributedSampler``):
nothing changes in the loop. When ``torch.distributed`` is initialised, :meth:`EpochValuer.end_epoch` all-reduces the
group statistics (sums: n, Σx_i, Σ‖x_i‖², and the validation α), values each rank's own rows, and all-reduces the
values so every rank holds all n. (A sampler that pads shards repeats a few points: they count twice in the
statistics and their values are averaged; use ``drop_last`` or an evenly divisible n to avoid it.)

Options: ``per_class=True`` values each class as its own game (α and the statistics per class, as in Algorithm 2);
``alpha="valid"`` sets :math:`\alpha` to the mean of :math:`l_i g_i` over a validation set (per class when
``per_class``; give the rows with ``add_validation`` or ``value_epoch(..., valid_loader)``; :func:`value_data` in
ride-along mode takes them in a no-grad pass at the end of each epoch); ``weighting`` "chg" | "gradient" |
"hardness" and ``gradient`` "full" | "bias" as in :func:`chg.factored.shapley_from_factors`.

A user's own loop::

    valuer = EpochValuer(len(train_set))
    for epoch in range(E):
        valuer.value_epoch(model, DataLoader(IndexedDataset(train_set), batch_size=256))  # or ride along
        for x, y, idx in train_loader:
            with LastLayerTap(model) as tap:
                logits = model(x)
            # ride-along instead: valuer.add(idx, tap.factors(logits, y), y)
            F.cross_entropy(logits, y).backward(); opt.step(); opt.zero_grad()
        # ride-along: valuer.end_epoch()
    values = valuer.values()

or the one-call helper :func:`value_data`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from .distributed import all_gather_values as _all_gather_values
from .distributed import group_ids as _group_ids
from .distributed import is_distributed
from .factored import GRADIENTS, WEIGHTINGS, GroupStats, group_stats, values_from_factors
from .lastlayer import Factors, LastLayerTap
from .shapley import mean_game_coefficients

__all__ = ["EpochValuer", "IndexedDataset", "value_data", "ValueDataConfig"]

ALPHAS = ("train", "valid")
MODES = ("pass", "ride")


def _sequential(loader) -> bool:
    """True only for a DataLoader that visits rows 0, 1, 2, ... in order (so rows can be numbered by arrival)."""
    return (isinstance(getattr(loader, "sampler", None), SequentialSampler)
            and type(getattr(loader, "batch_sampler", None)) is BatchSampler)


class IndexedDataset(Dataset):
    """Wraps a dataset of ``(x, y)`` pairs so that items are ``(x, y, index)``: the valuer needs each row's index."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i][:2]
        return x, y, i


class EpochValuer:
    """Algorithm 1 state: the current epoch's factors, the validation α, and the running sum of values.

    ``n``: number of training points (indices run over ``0..n-1``). See the module docstring for the options.
    """

    def __init__(self, n: int, weighting: str = "chg", gradient: str = "full", per_class: bool = False,
                 alpha: str = "train"):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"EpochValuer: n must be a positive int (number of training points), got {n!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        if alpha not in ALPHAS:
            raise ValueError(f"alpha must be one of {ALPHAS}, got {alpha!r}")
        if weighting == "hardness" and alpha == "valid":
            raise ValueError("weighting='hardness' (mean loss over S) has no target: alpha='valid' does not apply")
        self.n, self.weighting, self.gradient, self.per_class, self.alpha = n, weighting, gradient, per_class, alpha
        self.epochs = 0
        self.epoch_values: list = []  # (n,) float64 per finished epoch, NaN where a point was not seen
        self._sum = torch.zeros(n, dtype=torch.float64)
        self._count = torch.zeros(n, dtype=torch.int64)
        self._reset_epoch()

    # ---- collecting one epoch -------------------------------------------------------------------------------
    def _reset_epoch(self) -> None:
        self._loss = self._err = self._feat = None
        self._labels = torch.full((self.n,), -1, dtype=torch.int64)
        self._seen = torch.zeros(self.n, dtype=torch.bool)
        self._valid: dict = {}  # group -> GroupStats of the validation points (alpha="valid")

    def add(self, indices, factors: Factors, labels: Optional[torch.Tensor] = None) -> None:
        """Record the factors of training rows ``indices`` (B,) for this epoch. ``labels`` (B,) needed if per_class."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).cpu()
        B = factors.loss.shape[0]
        if idx.shape[0] != B or factors.err.shape[0] != B or factors.feat.shape[0] != B:
            raise ValueError(f"add: {idx.shape[0]} indices but factors have loss {tuple(factors.loss.shape)}, err "
                             f"{tuple(factors.err.shape)}, feat {tuple(factors.feat.shape)}")
        if B and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
            raise ValueError(f"add: indices must lie in [0, {self.n}), got range [{int(idx.min())}, {int(idx.max())}]")
        if self.per_class and labels is None:
            raise ValueError("add: per_class=True needs the labels of the batch")
        if self._loss is None:  # allocate the epoch buffers on the factors' device and dtype
            dev, dt = factors.err.device, factors.err.dtype
            self._loss = torch.zeros(self.n, dtype=dt, device=dev)
            self._err = torch.zeros(self.n, factors.err.shape[1], dtype=dt, device=dev)
            self._feat = torch.zeros(self.n, factors.feat.shape[1], dtype=dt, device=dev)
        elif factors.err.shape[1] != self._err.shape[1] or factors.feat.shape[1] != self._feat.shape[1]:
            raise ValueError(f"add: factors have C={factors.err.shape[1]}, D={factors.feat.shape[1]} but earlier "
                             f"batches had C={self._err.shape[1]}, D={self._feat.shape[1]}")
        dev = self._err.device
        self._loss[idx.to(dev)] = factors.loss.to(self._loss)
        self._err[idx.to(dev)] = factors.err.to(self._err)
        self._feat[idx.to(dev)] = factors.feat.to(self._feat)
        if labels is not None:
            self._labels[idx] = torch.as_tensor(labels).reshape(-1).to(torch.int64).cpu()
        self._seen[idx] = True

    def add_validation(self, factors: Factors, labels: Optional[torch.Tensor] = None) -> None:
        """Add validation rows to this epoch's α (``alpha="valid"``): α = mean of l_i g_i over them (per class)."""
        if self.alpha != "valid":
            raise ValueError("add_validation: this valuer was built with alpha='train'; use alpha='valid'")
        if self.per_class and labels is None:
            raise ValueError("add_validation: per_class=True needs the labels of the validation batch")
        keys = torch.zeros(factors.loss.shape[0], dtype=torch.int64) if not self.per_class else \
            torch.as_tensor(labels).reshape(-1).to(torch.int64).cpu()
        for g in torch.unique(keys).tolist():
            rows = (keys == g).nonzero().squeeze(1).to(factors.err.device)
            st = group_stats(*self._xs(factors.loss[rows], factors.err[rows], factors.feat[rows]))
            self._valid[g] = st if g not in self._valid else self._valid[g] + st

    def _xs(self, loss, err, feat):
        """(err, feat, weight) of the players x_i = w_i e_i ⊗ [h_i;1] under this valuer's options."""
        return err, (feat if self.gradient == "full" else None), (loss if self.weighting == "chg" else None)

    @torch.no_grad()
    def value_epoch(self, model: nn.Module, loader, valid_loader=None) -> torch.Tensor:
        """Separate no-grad pass (exactly Algorithm 1): factors of every point at the current θ, then end_epoch().

        ``loader`` yields ``(x, y, index)`` (see :class:`IndexedDataset`) or, if unshuffled, ``(x, y)`` (rows are then
        numbered in order). ``valid_loader`` yields ``(x, y[, ...])``; required when ``alpha="valid"``. The model is
        put in eval mode for the pass and restored afterwards.
        """
        was_training = model.training
        model.eval()
        try:
            self._collect(model, loader, train=True)
            if self.alpha == "valid":
                if valid_loader is None:
                    raise ValueError("value_epoch: alpha='valid' needs valid_loader")
                self._collect(model, valid_loader, train=False)
        finally:
            model.train(was_training)
        return self.end_epoch()

    def _collect(self, model, loader, train: bool) -> None:
        device = next(model.parameters()).device
        offset = 0
        with LastLayerTap(model) as tap:
            for batch in loader:
                x, y = batch[0].to(device), batch[1].to(device)
                if train:
                    if len(batch) > 2:
                        idx = batch[2]
                    elif not _sequential(loader):
                        raise ValueError("value_epoch: a loader without indices must be a plain sequential "
                                         "DataLoader (rows numbered in order); with any other sampler (shuffled, "
                                         "subset, distributed, ...) wrap the dataset in IndexedDataset so batches "
                                         "yield (x, y, index)")
                    else:
                        idx = torch.arange(offset, offset + len(y))
                    offset += len(y)
                f = tap.factors(model(x), y)
                if train:
                    self.add(idx, f, y)
                else:
                    self.add_validation(f, y)

    # ---- values --------------------------------------------------------------------------------------------
    def end_epoch(self) -> torch.Tensor:
        """Eq. (3) for every point seen this epoch from the whole epoch's statistics; returns them (n,), NaN unseen."""
        if self._loss is None:
            raise ValueError("end_epoch: no training rows were added this epoch")
        seen = self._seen.nonzero().squeeze(1)
        dev = self._err.device
        groups = self._labels[seen] if self.per_class else torch.zeros(len(seen), dtype=torch.int64)
        if self.per_class and bool((groups < 0).any()):
            raise ValueError("end_epoch: per_class=True but some rows were added without labels")
        if self.alpha == "valid" and not self._valid:
            raise ValueError("end_epoch: alpha='valid' but no validation rows were added (add_validation)")
        vals = torch.full((self.n,), float("nan"), dtype=torch.float64)
        ddp = is_distributed()
        for g in _group_ids(groups, self.per_class, ddp, dev):
            rows = seen[groups == g]
            r = rows.to(dev)
            loss, err, feat = self._loss[r], self._err[r], self._feat[r]
            if self.weighting == "hardness":
                totals = torch.tensor([float(len(rows)), float(loss.sum())], dtype=torch.float64, device=dev)
                if ddp:
                    torch.distributed.all_reduce(totals)
                if totals[0] < 1:
                    continue
                own, total = mean_game_coefficients(int(round(totals[0].item())))
                v = own * loss.to(torch.float64) + total * totals[1]
            else:
                e, h, w = self._xs(loss, err, feat)
                stats = group_stats(e, h, w)
                valid = self._valid.get(g, GroupStats(0, torch.zeros_like(stats.sum), torch.zeros_like(
                    stats.sum_sq_norms))) if self.alpha == "valid" else None
                if ddp:  # every rank takes part for every group, empty or not
                    stats.all_reduce()
                    if valid is not None:
                        valid.all_reduce()
                if stats.n == 0:
                    continue
                a = None
                if valid is not None:
                    if valid.n == 0:
                        raise ValueError(f"end_epoch: class {g} has training points but no validation points; "
                                         f"alpha='valid' with per_class=True needs every class in the validation set")
                    a = valid.sum / valid.n
                if len(rows) == 0:
                    continue
                v = values_from_factors(e, h, w, stats, a)
            vals[rows] = v.to(torch.float64).cpu()
        if ddp:
            vals = _all_gather_values(vals, dev)
            seen = (~torch.isnan(vals)).nonzero().squeeze(1)
        self._sum[seen] += vals[seen]
        self._count[seen] += 1
        self.epochs += 1
        self.epoch_values.append(vals)
        self._reset_epoch()
        return vals

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume averaging after a finished epoch (running sums, counts, history)."""
        return {"n": self.n, "epochs": self.epochs, "sum": self._sum.clone(), "count": self._count.clone(),
                "epoch_values": [v.clone() for v in self.epoch_values],
                "options": (self.weighting, self.gradient, self.per_class, self.alpha)}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n or tuple(state["options"]) != (self.weighting, self.gradient, self.per_class,
                                                              self.alpha):
            raise ValueError("load_state_dict: the checkpoint is of a valuer with other n or options")
        self.epochs, self._sum, self._count = state["epochs"], state["sum"].clone(), state["count"].clone()
        self.epoch_values = [v.clone() for v in state["epoch_values"]]
        self._reset_epoch()

    def values(self) -> torch.Tensor:
        """Each point's value averaged over the epochs in which it was valued (n,) float64; NaN if never valued."""
        if self.epochs == 0:
            raise ValueError("values: no epoch has ended yet (call value_epoch or end_epoch)")
        out = torch.full((self.n,), float("nan"), dtype=torch.float64)
        m = self._count > 0
        out[m] = self._sum[m] / self._count[m]
        return out


@dataclass
class ValueDataConfig:
    """Training settings of :func:`value_data` (a plain loop: cross-entropy on the model's logits)."""
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "adam"  # "adam" | "sgd"
    momentum: float = 0.9    # sgd only
    weight_decay: float = 0.0
    mode: str = "pass"       # "pass": separate no-grad pass at each epoch start (Algorithm 1) | "ride": ride-along
    eval_batch_size: int = 1024
    seed: int = 0


def value_data(model: nn.Module, train_dataset: Dataset, valid_dataset: Optional[Dataset] = None,
               config: Optional[ValueDataConfig] = None, weighting: str = "chg", gradient: str = "full",
               per_class: bool = False, alpha: str = "train", return_valuer: bool = False, **overrides):
    """Train ``model`` (in place) on ``train_dataset`` of ``(x, y)`` items and return every point's CHG value (n,).

    ``model`` maps a batch to logits (B, C) through a final ``nn.Linear``. Settings: a :class:`ValueDataConfig`
    and/or keyword overrides (``epochs=3, lr=0.1, mode="ride"``...). ``valid_dataset`` is needed for
    ``alpha="valid"``. With ``return_valuer`` returns ``(values, valuer)`` (per-epoch values in
    ``valuer.epoch_values``).
    """
    cfg = config if config is not None else ValueDataConfig()
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise ValueError(f"value_data: unknown setting {k!r}; settings are {list(ValueDataConfig.__annotations__)}")
        setattr(cfg, k, v)
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    if cfg.optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {cfg.optimizer!r}")
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}")
    if alpha == "valid" and valid_dataset is None:
        raise ValueError("value_data: alpha='valid' needs valid_dataset")
    n = len(train_dataset)
    valuer = EpochValuer(n, weighting=weighting, gradient=gradient, per_class=per_class, alpha=alpha)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed)
    data = IndexedDataset(train_dataset)
    train_loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, generator=gen)
    eval_loader = DataLoader(data, batch_size=cfg.eval_batch_size, shuffle=False)
    valid_loader = None if valid_dataset is None else DataLoader(valid_dataset, batch_size=cfg.eval_batch_size)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    model.train()
    for _ in range(cfg.epochs):
        if cfg.mode == "pass":
            valuer.value_epoch(model, eval_loader, valid_loader)
        with LastLayerTap(model) as tap:
            for x, y, idx in train_loader:
                x, y = x.to(device), y.to(device)
                logits = model(x)  # (B, C)
                if cfg.mode == "ride":
                    valuer.add(idx, tap.factors(logits, y), y)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        if cfg.mode == "ride":
            if alpha == "valid":
                was = model.training
                model.eval()
                with torch.no_grad():
                    valuer._collect(model, valid_loader, train=False)
                model.train(was)
            valuer.end_epoch()
    values = valuer.values()
    return (values, valuer) if return_valuer else values
