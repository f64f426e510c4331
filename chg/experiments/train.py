r"""The training loop of the selection experiments (Algorithm 2 and the baselines), in sections, no callbacks.

Per epoch k:
  1. **select** — if there is no subset yet, or the method is adaptive and k mod R == 0: compute the last-layer factors
     of the pool (one no-grad pass, model in eval mode, no augmentation; :func:`chg.compute_factors`), call the method
     (:data:`chg.selection.SELECTORS`), keep (indices, weights);
  2. **train** one epoch on the subset: a fresh permutation, batches of ``batch_size``, crop/flip augmentation,
     weighted loss :math:`\sum_i w_i l_i / \sum_i w_i` over the batch (CORDS' rule: the weights set the relative
     importance inside a batch, not the step size); SGD + Nesterov, cosine schedule stepped once per epoch;
  3. **checkpoint** every ``checkpoint_every`` epochs, atomically: model, optimizer, scheduler, both random generators,
     current selection, epoch, timings. A killed run started again with the same config resumes from it and ends with
     the same model (bit-identical on CPU; the test kills a run with ``hook`` and compares).

Randomness: the model's initialisation uses ``seed``; a CPU ``torch.Generator`` (seed+1) draws batches and
augmentations, another (seed+2) is the selection methods' only source of randomness. On CUDA: bfloat16 autocast for
the training steps and evaluation (not for the factor passes, see :func:`pool_factors`) and channels-last memory
format, each guarded by the device type and a config switch; timings synchronise the device.

Distributed (torchrun, ``torch.distributed`` initialised by the caller, one device per process): every process holds
the data; the factor passes of a selection are sharded over the ranks (each runs the forward pass on the rows
``rank::world`` of the pool, then the factors are gathered on rank 0), rank 0 computes the selection from them and
broadcasts it (or, if its method raises, the failure, so that every rank raises); every global batch is drawn
identically on all ranks and each rank trains on its share ``rows[rank::world]`` under DistributedDataParallel, with
the loss normalised by the global batch's weight sum, so the update equals the single-process one (up to summation
order and BatchNorm, whose statistics are per rank). Rank 0 writes the checkpoints (to a path every rank can read).
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from ..io import atomic_write
from ..lastlayer import Factors, LastLayerTap, compute_factors, factors_from_logits
from ..progress import progress as progress_bar
from ..selection import Selection, SelectionInput, check_selection, get_selector
from .data import DataBundle, augment_batch, load_dataset
from .models import build_model
from .results import state_digest

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "pool_factors", "resolve_device", "selection_val_rows"]


@dataclass
class TrainConfig:
    """One training run. Defaults are the paper-scale CIFAR-10 settings (CORDS' defaults where the paper is silent).

    Attributes:
        one per line below, each with its meaning (and source) beside it: the data set and model, the selection
        method and its fraction a and period R, the SGD schedule (lr per step, cosine over ``epochs``), the hold-out
        and label-noise shares (in [0, 1)), augmentation (padding in pixels), seed, checkpoint period (epochs),
        the no-grad passes' batch size, GLISTER's validation subsample, and the CUDA switches.
    """
    dataset: str = "cifar10"
    model: str = "resnet18"
    width: Optional[int] = None       # model width (None: the model's standard width)
    method: str = "chg"               # a key of chg.selection.SELECTORS
    fraction: float = 0.1             # a: share of the pool trained on
    epochs: int = 200                 # paper silent; CORDS' CIFAR default (assumption)
    select_every: int = 20            # R (Algorithm 2: R = 20)
    batch_size: int = 128             # CORDS
    lr: float = 0.05                  # CORDS: SGD lr 0.05, momentum 0.9, weight decay 5e-4, Nesterov, cosine
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    val_fraction: float = 0.1         # CORDS: 10% of the training data held out for validation
    noise_rate: float = 0.0           # Table 3: 0.3
    augment_pad: int = 4              # random crop with this zero padding (0: none)
    augment_flip: bool = True         # random horizontal flip
    seed: int = 0
    checkpoint_every: int = 10        # epochs between checkpoints
    factor_batch_size: int = 1024     # batch size of the no-grad passes (factors, evaluation)
    selection_val_size: Optional[int] = None  # validation points a method that needs them (GLISTER) sees: a
    #                                   stratified subsample drawn once per run with ``seed``; None: all of them
    amp: bool = True                  # bfloat16 autocast, CUDA only
    channels_last: bool = True        # CUDA only
    device: str = "auto"              # "auto": cuda if available, else cpu


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns: the trained model and the run's metrics.

    Attributes:
        model: the trained ``nn.Module`` (the unwrapped model, not its DistributedDataParallel wrapper), on the
            run's device, in train mode as the last epoch left it.
        metrics: accuracies in %, times in seconds, the final selection (``final_indices``, ``final_weights``),
            ``selection_epochs`` (the epochs at which the method ran), subset and pool sizes and noisy shares,
            ``model_sha256`` — the keys listed in :func:`train`.
    """
    model: torch.nn.Module
    metrics: dict


def resolve_device(name: str) -> torch.device:
    """The run's device.

    Args:
        name: ``"auto"``: CUDA if available (under torch.distributed, this process's GPU: ``LOCAL_RANK``), else the
            CPU; any other name as ``torch.device`` takes it (``"cpu"``, ``"cuda:1"``).
    Returns:
        ``torch.device``.
    """
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, cfg: TrainConfig):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=(device.type == "cuda" and cfg.amp))


def _prep(x: torch.Tensor, device: torch.device, cfg: TrainConfig) -> torch.Tensor:
    if device.type == "cuda" and cfg.channels_last and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def pool_factors(model, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, device: torch.device) -> Factors:
    """Last-layer factors of every row of (x, y): eval mode, no augmentation, batches of ``factor_batch_size``.

    Always in float32, also under AMP: bfloat16 features (3 significant digits) would blur the values that rank
    the points; the pass costs one forward over the pool every R epochs.

    Args:
        model: the classifier. x: (n, ...) inputs and y: (n,) int64 labels, on ``device``. cfg: the run's
            :class:`TrainConfig` (``factor_batch_size``, ``channels_last``). device: the run's device.
    Returns:
        :class:`chg.lastlayer.Factors` of every row, in order (the model's mode is restored).
    """
    was_training = model.training
    model.eval()
    try:
        batches = ((_prep(x[s:s + cfg.factor_batch_size], device, cfg), y[s:s + cfg.factor_batch_size])
                   for s in range(0, y.shape[0], cfg.factor_batch_size))
        return compute_factors(model, batches)  # the one path from a model and its batches to factors
    finally:
        model.train(was_training)


@torch.no_grad()
def train_mode_factors(model, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, device: torch.device) -> Factors:
    """Last-layer factors of every row of (x, y) in train mode — BatchNorm normalises each batch of
    ``factor_batch_size`` by its own statistics, as in a training step — without any update: no gradient, and the
    running statistics (every buffer) restored afterwards. No augmentation. (A model with dropout would drop units
    here as in training.) The rows of Algorithm 2's ride-along variant that training did not see since the last
    selection are valued from this pass.

    Args:
        as :func:`pool_factors`.
    Returns:
        :class:`chg.lastlayer.Factors` of every row, in order (model mode and buffers as they were).
    """
    was_training = model.training
    saved = [b.clone() for b in model.buffers()]
    model.train()
    try:
        batches = ((_prep(x[s:s + cfg.factor_batch_size], device, cfg), y[s:s + cfg.factor_batch_size])
                   for s in range(0, y.shape[0], cfg.factor_batch_size))
        return compute_factors(model, batches)
    finally:
        for b, v in zip(model.buffers(), saved):
            b.copy_(v)
        model.train(was_training)


class _RideAlong:
    """Algorithm 2's ride-along factors: each pool row's factors from its latest training forward pass since the last
    selection (loss and error of the unweighted cross-entropy, as in a separate pass), and which rows have them."""

    def __init__(self, n: int):
        self.n = n
        self.factors: Optional[Factors] = None  # (n, ·) buffers, made at the first batch
        self.seen: Optional[torch.Tensor] = None  # (n,) bool

    def add(self, rows: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, feat: torch.Tensor, bias: bool) -> None:
        f = factors_from_logits(logits.float(), y, feat.float(), bias)
        if self.factors is None:
            n, dev = self.n, f.loss.device
            self.factors = Factors(torch.zeros(n, device=dev), torch.zeros(n, f.err.shape[1], device=dev),
                                   torch.zeros(n, f.feat.shape[1], device=dev), f.bias)
            self.seen = torch.zeros(n, dtype=torch.bool, device=dev)
        self.factors.loss[rows], self.factors.err[rows], self.factors.feat[rows] = f.loss, f.err, f.feat
        self.seen[rows] = True

    def pool(self, model, data: DataBundle, cfg: TrainConfig, device: torch.device) -> Factors:
        """Factors of every pool row: ride-along where seen, :func:`train_mode_factors` for the rest; then forgets
        which rows were seen (the next selection uses the passes after this one)."""
        x, y = data.train.x, data.train.y
        if self.factors is None:
            return train_mode_factors(model, x, y, cfg, device)
        rest = (~self.seen).nonzero().squeeze(1)
        out = Factors(self.factors.loss.clone(), self.factors.err.clone(), self.factors.feat.clone(),
                      self.factors.bias)
        if rest.numel():
            f = train_mode_factors(model, x[rest], y[rest], cfg, device)
            out.loss[rest], out.err[rest], out.feat[rest] = f.loss, f.err, f.feat
        self.seen.zero_()
        return out

    def state_dict(self) -> Optional[dict]:
        if self.factors is None:
            return None
        return {"loss": self.factors.loss, "err": self.factors.err, "feat": self.factors.feat,
                "bias": self.factors.bias, "seen": self.seen}

    def load_state_dict(self, state: Optional[dict]) -> None:
        if state is not None:
            self.factors = Factors(state["loss"], state["err"], state["feat"], state["bias"])
            self.seen = state["seen"]


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, device: torch.device) -> float:
    """Top-1 accuracy in eval mode (bfloat16 autocast on CUDA if ``cfg.amp``); the model's mode is restored.

    Args:
        model, x, y, cfg, device: as in :func:`pool_factors`.
    Returns:
        accuracy in percent (float; 0 for no rows).
    """
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, y.shape[0], cfg.factor_batch_size):
        xb = _prep(x[start:start + cfg.factor_batch_size], device, cfg)
        with _autocast(device, cfg):
            correct += int((model(xb).float().argmax(1) == y[start:start + cfg.factor_batch_size]).sum())
    model.train(was_training)
    return 100.0 * correct / max(1, y.shape[0])


def _dist() -> tuple:
    """(rank, world size) of the default torch.distributed group, (0, 1) when not distributed."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_rows(f: Factors, n: int, rank: int, world: int) -> Optional[Factors]:
    """All n rows' factors on rank 0 (None on the other ranks), from each rank's rows ``rank::world`` (dist.gather to
    rank 0 only, so no other rank ever holds more than its shard; shards differ in length by at most one row, so each
    is padded to the longest)."""
    import torch.distributed as dist
    longest = -(-n // world)
    out = []
    for t in (f.loss, f.err, f.feat):
        padded = t.new_zeros((longest,) + tuple(t.shape[1:]))
        padded[:t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(world)] if rank == 0 else None
        dist.gather(padded, parts, dst=0)
        if rank == 0:
            full = t.new_empty((n,) + tuple(t.shape[1:]))
            for r, part in enumerate(parts):
                full[r::world] = part[:len(range(r, n, world))]
            out.append(full)
    return Factors(*out) if rank == 0 else None


def _factors_of(model, x, y, cfg, device) -> Optional[Factors]:
    """:func:`pool_factors` of every row; under torch.distributed each rank runs the forward pass on its rows
    ``rank::world`` only and the shards are gathered on rank 0 (every rank takes part; the others get None). Rank 0's
    buffers (BatchNorm running statistics, which DDP lets drift apart during an epoch: each rank updates them from its
    own share of the batch) are first copied to every rank, so that all rows are scored by one model — rank 0's, the
    one the checkpoint keeps."""
    rank, world = _dist()
    n = y.shape[0]
    if world == 1 or n < world:
        return pool_factors(model, x, y, cfg, device)
    import torch.distributed as dist
    for buf in model.buffers():
        dist.broadcast(buf, src=0)
    mine = pool_factors(model, x[rank::world], y[rank::world], cfg, device)
    full = _gather_rows(mine, n, rank, world)
    return None if full is None else dataclasses.replace(full, bias=mine.bias)  # the head's kind travels too


def _selection_factors(model, data: DataBundle, cfg: TrainConfig, device: torch.device,
                       ride: Optional[_RideAlong] = None) -> tuple:
    """The factors the method needs (pool, validation set), or None; under torch.distributed every rank takes part in
    the sharded passes and only rank 0 receives them (see :func:`_factors_of`). A ride-along method's pool factors
    come from ``ride`` (single process)."""
    selector = get_selector(cfg.method)
    factors = val_factors = None
    if ride is not None:
        factors = ride.pool(model, data, cfg, device)
    elif selector.needs_factors:
        factors = _factors_of(model, data.train.x, data.train.y, cfg, device)
    if selector.needs_val:
        rows = selection_val_rows(data.val.y, cfg)
        val_factors = _factors_of(model, data.val.x[rows], data.val.y[rows], cfg, device)
    return factors, val_factors


def selection_val_rows(val_labels: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The rows of the validation set that the selection method sees: all of them, or (``cfg.selection_val_size``
    below the validation size) a stratified subsample of that size drawn with ``cfg.seed`` (scikit-learn's
    ``train_test_split``), the same at every selection step of the run.

    Args:
        val_labels: (n_V,) int64 validation labels. cfg: the run's :class:`TrainConfig` (``selection_val_size``,
            ``seed``).
    Returns:
        sorted int64 row indices on the labels' device.

    Raises:
        ValueError: ``selection_val_size`` below the number of classes present (a stratified subsample needs one
            point of each).
    """
    n = int(val_labels.shape[0])
    k = cfg.selection_val_size
    if k is None or k >= n:
        return torch.arange(n, device=val_labels.device)
    y = val_labels.cpu().numpy()
    if k < len(np.unique(y)):
        raise ValueError(f"selection_val_size={k} is below the {len(np.unique(y))} classes of the validation set")
    rows, _ = train_test_split(np.arange(n), train_size=k, stratify=y, random_state=cfg.seed)
    return torch.as_tensor(np.sort(rows), dtype=torch.int64, device=val_labels.device)


def _run_selector(data: DataBundle, cfg: TrainConfig, gen: torch.Generator, factors, val_factors) -> Selection:
    """The method itself, on one process (rank 0): no collectives."""
    val_labels = data.val.y if val_factors is None else data.val.y[selection_val_rows(data.val.y, cfg)]
    inp = SelectionInput(factors=factors, labels=data.train.y, num_classes=data.num_classes, fraction=cfg.fraction,
                         generator=gen, val_factors=val_factors, val_labels=val_labels, batch_size=cfg.batch_size,
                         lr=cfg.lr)
    return check_selection(get_selector(cfg.method).fn(inp), len(data.train))


def _select_everywhere(model, data, cfg, epoch, gen, device, rank: int, world: int, ride=None) -> Selection:
    """The method's selection; under torch.distributed the factor passes are sharded over the ranks, the method runs
    on rank 0, and its selection is broadcast to every rank, which all train on it (one source of truth, whatever the
    kernels do). If the method raises on rank 0, every rank raises instead of waiting at the next collective for a
    rank that is gone: the failure travels in place of the selection. (A failure inside the sharded passes surfaces
    on the other ranks in that collective, as torch.distributed's own error.)"""
    factors, val_factors = _selection_factors(model, data, cfg, device, ride)
    if world == 1:
        return _run_selector(data, cfg, gen, factors, val_factors)
    selection = failure = None
    if rank == 0:
        try:
            selection = _run_selector(data, cfg, gen, factors, val_factors)
        except Exception as exc:  # noqa: BLE001 - re-raised below, once the other ranks are told
            failure = exc
    box = [(selection, None if failure is None else f"{type(failure).__name__}: {failure}") if rank == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    if failure is not None:
        # The local ``failure`` closes a reference cycle (exception → traceback → this frame → ``failure``) that pins
        # every frame of the run — the DDP wrapper, hence the process group — until the garbage collector runs, so
        # the caller's destroy_process_group() would not free the group: it would be torn down at whatever later
        # point the collector runs, after the other ranks closed their side. Drop the local before leaving.
        try:
            raise failure
        finally:
            failure = None
    selection, message = box[0]
    if message is not None:
        raise RuntimeError(f"rank 0's {cfg.method!r} selection failed at epoch {epoch}: {message}")
    return selection


def _check_labels(data: DataBundle) -> None:
    """Every split's labels are integers in [0, num_classes), checked before any training (on a GPU an out-of-range
    label is a device-side assert in the middle of a run; on a CPU an IndexError from the loss)."""
    for name, split in (("train", data.train), ("validation", data.val), ("test", data.test)):
        y = split.y
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.dtype.is_complex:
            raise ValueError(f"{name} labels must be integer class indices, got dtype {y.dtype}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= data.num_classes):
            raise ValueError(f"{name} labels must lie in [0, {data.num_classes}) (num_classes = {data.num_classes}), "
                             f"got range [{int(y.min())}, {int(y.max())}]")


def _checkpoint_state(model, opt, sched, gen_train, gen_select, selection, epoch, clock, history, cfg, ride) -> dict:
    return {"config": dataclasses.asdict(cfg), "epoch": epoch, "model": model.state_dict(),
            "ride": None if ride is None else ride.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "gen_train": gen_train.get_state(),
            "gen_select": gen_select.get_state(), "selection": None if selection is None else
            {"indices": selection.indices, "weights": selection.weights}, "clock": dict(clock), "history": history}


def train(cfg: TrainConfig, data: DataBundle | None = None, checkpoint: Path | None = None,
          hook: Callable[[int], None] | None = None, progress: Optional[bool] = None) -> TrainResult:
    """Train one run (Algorithm 2 or a baseline selecting every ``select_every`` epochs; see the module docstring).

    Args:
        cfg: the run's :class:`TrainConfig`.
        data: an already loaded :class:`DataBundle` (else loaded from ``cfg``).
        checkpoint: a file to resume from and to write every ``checkpoint_every`` epochs (removed by the caller
            when it no longer needs it).
        hook: ``hook(epoch)`` is called after each epoch (and its checkpoint) — tests raise from it to simulate a
            kill.
        progress: a bar over the epochs (on rank 0 only): True | False | None — None shows it only when stderr is a
            terminal (:func:`chg.progress.progress_enabled`).
    Returns:
        :class:`TrainResult`: the trained model and its metrics (accuracies in %, times in seconds, the final
        selection).

    Raises:
        ValueError: epochs, select_every, batch_size or checkpoint_every below 1; selection_val_size below 1 (or
            below the number of classes); an unknown method; labels of a split
            that are not integers in [0, num_classes); a checkpoint written by another configuration.
    """
    if cfg.epochs < 1 or cfg.select_every < 1 or cfg.batch_size < 1 or cfg.checkpoint_every < 1:
        raise ValueError("epochs, select_every, batch_size and checkpoint_every must all be >= 1")
    if cfg.selection_val_size is not None and cfg.selection_val_size < 1:
        raise ValueError(f"selection_val_size must be None (all validation points) or >= 1, "
                         f"got {cfg.selection_val_size}")
    selector = get_selector(cfg.method)
    device = resolve_device(cfg.device)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.noise_rate)
    _check_labels(data)
    data = data.to(device)

    # ---- model, optimizer, schedule, random generators
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, data.num_classes, tuple(data.train.x.shape[1:]), cfg.width).to(device)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    rank, world = _dist()
    ride = tap = None  # Algorithm 2's ride-along variant: factors of the training forward passes
    if selector.ride_along:
        if world > 1:
            raise ValueError(f"method {cfg.method!r} (ride-along factors) runs in one process only; use 'chg' under "
                             "torch.distributed")
        ride, tap = _RideAlong(len(data.train)), LastLayerTap(model)
    net = model  # what the training step calls: the model, or its DistributedDataParallel wrapper
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    gen_train = torch.Generator().manual_seed(cfg.seed + 1)
    gen_select = torch.Generator().manual_seed(cfg.seed + 2)
    selection: Selection | None = None
    clock = {"train_s": 0.0, "select_s": 0.0, "selections": 0, "selection_epochs": []}
    history: list = []  # per epoch: seconds of training, subset size
    start = 0

    # ---- resume
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # runs no code from the file
        if state["config"] != dataclasses.asdict(cfg):
            raise ValueError(f"checkpoint {checkpoint} was written by a different configuration; delete it to restart")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen_train.set_state(state["gen_train"])
        gen_select.set_state(state["gen_select"])
        if state["selection"] is not None:
            selection = Selection(state["selection"]["indices"].cpu(), state["selection"]["weights"].cpu())
        clock, history, start = state["clock"], state["history"], state["epoch"]
        if ride is not None:
            ride.load_state_dict(state.get("ride"))
        clock.setdefault("selection_epochs", None)  # a checkpoint written before they were recorded: unknown

    epochs = progress_bar(range(start, cfg.epochs), desc=f"train {cfg.method} a={cfg.fraction:g}", unit="epoch",
                          total=cfg.epochs, initial=start, enabled=progress if rank == 0 else False)
    for epoch in epochs:
        # ---- 1. select (Algorithm 2 line 3: every R epochs; non-adaptive methods once)
        if selection is None or (selector.adaptive and epoch % cfg.select_every == 0):
            _sync(device)
            t0 = time.perf_counter()
            selection = _select_everywhere(model, data, cfg, epoch, gen_select, device, rank, world, ride)
            _sync(device)
            clock["select_s"] += time.perf_counter() - t0
            clock["selections"] += 1
            if clock["selection_epochs"] is not None:
                clock["selection_epochs"].append(epoch)
        idx_dev, w_dev = selection.indices.to(device), selection.weights.to(device)

        # ---- 2. train one epoch on the subset with its weights
        model.train()
        _sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(idx_dev.numel(), generator=gen_train).to(device)
        bounds = list(range(0, perm.numel(), cfg.batch_size)) + [perm.numel()]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:  # a 1-point last batch joins the one before it (an SGD
            del bounds[-2]                                      # step and BatchNorm statistics from one image hurt)
        for b, e in zip(bounds[:-1], bounds[1:]):
            rows = perm[b:e]
            pool_rows = idx_dev[rows]
            xb = augment_batch(data.train.x[pool_rows], cfg.augment_pad, cfg.augment_flip, gen_train)
            xb, yb, wb = _prep(xb, device, cfg), data.train.y[pool_rows], w_dev[rows]
            w_total = wb.sum().clamp_min(1e-12)  # of the whole (global) batch
            if world > 1:  # this rank's share of the batch; DDP averages gradients over ranks, hence × world
                xb, yb, wb = xb[rank::world], yb[rank::world], wb[rank::world]
                w_total = w_total / world
            with _autocast(device, cfg):
                if tap is None:
                    logits = net(xb)
                else:
                    with tap:
                        logits, feat = tap.read(net(xb))
                    ride.add(pool_rows, logits.detach(), yb, feat, tap.bias)
            losses = F.cross_entropy(logits.float(), yb, reduction="none")  # (B,)
            loss = (losses * wb).sum() / w_total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        _sync(device)
        dt = time.perf_counter() - t0
        clock["train_s"] += dt
        history.append({"epoch": epoch, "train_s": dt, "subset": int(idx_dev.numel()),
                        "loss_last_batch": float(loss.detach())})

        # ---- 3. checkpoint
        if checkpoint is not None and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs):
            if rank == 0:
                state = _checkpoint_state(model, opt, sched, gen_train, gen_select, selection, epoch + 1, clock,
                                          history, cfg, ride)
                atomic_write(Path(checkpoint), lambda tmp: torch.save(state, tmp))
            if world > 1:
                torch.distributed.barrier()
        if hook is not None:
            hook(epoch)

    # ---- evaluate
    sel_noisy = data.noisy.cpu()[selection.indices]
    metrics = {
        "test_acc": evaluate(model, data.test.x, data.test.y, cfg, device),
        "val_acc": evaluate(model, data.val.x, data.val.y, cfg, device),
        "train_s": clock["train_s"], "select_s": clock["select_s"], "selections": clock["selections"],
        "selection_epochs": clock["selection_epochs"],  # the epochs at which the method ran: 0, R, 2R, ... (adaptive)
        "selection_overhead": clock["select_s"] / clock["train_s"] if clock["train_s"] > 0 else None,
        "epoch_s_mean": clock["train_s"] / max(1, len(history)),
        "pool_size": len(data.train), "subset_size": int(selection.indices.numel()),
        "subset_noisy_share": float(sel_noisy.float().mean()) if data.noisy.any() else 0.0,
        "pool_noisy_share": float(data.noisy.float().mean()),
        "final_indices": selection.indices.tolist(),
        "final_weights": selection.weights.tolist(),
        "model_sha256": state_digest(model.state_dict()),  # bit-identical final model ⇔ equal digests
    }
    return TrainResult(model=model, metrics=metrics)
