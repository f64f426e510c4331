r"""Algorithm 1: CHG Shapley values of every training point, averaged over the epochs of one training run.

Each epoch k (paper, Algorithm 1):

1. acquire every point's loss :math:`l_i` and last-layer gradient :math:`g_i = e_i \otimes [h_i; 1]` (bias-free head:
   :math:`e_i \otimes h_i`) at :math:`\theta_k` (:mod:`chg.lastlayer`, the one path from a model and its batches to
   these factors — what a model may return and a batch may be is stated there; never per-sample autograd),
2. value every point with eq. (3), :math:`x_i = l_i g_i`, :math:`\alpha = \frac1N\sum_{i\in N} l_i g_i`,
3. train the epoch;

and return each point's value averaged over the epochs.

Two ways to acquire step 1, both with :class:`EpochValuer`:

* **separate pass** (exactly Algorithm 1): ``valuer.value_epoch(model, loader)`` at the start of the epoch runs one
  no-grad forward pass over the training set (model in eval mode) and computes the epoch's values. Every point is
  seen at the same parameters :math:`\theta_k`. Costs one extra forward pass per epoch.
* **ride-along** (no extra pass): inside your training step, ``logits, feat = tap.read(out)`` and
  ``valuer.add_logits(indices, logits, y, feat, tap.bias)`` with the output of the training forward pass
  (:class:`chg.lastlayer.LastLayerTap`), then ``valuer.end_epoch()``, which makes every row's loss and error in one
  call (``valuer.add(indices, tap.factors(out, y), y)`` gives the same values, computing them batch by batch).
  Each batch's factors come from the parameters *at that step*, so within an epoch the points are seen at different
  :math:`\theta` (and in train mode: dropout, batch-norm batch statistics). The values approximate Algorithm 1's;
  they coincide with it when the learning rate is zero.

Either way the epoch's statistics (n, :math:`s = \sum x_i`, :math:`\sum\|x_i\|^2`) are computed from the whole
epoch before any value is, so the factors of the epoch are kept: memory O(n·(C+D)) (loss, error, features per
point), never O(n·C·D).

Multi-process (``torchrun``, one process per GPU, each with its shard of the data, e.g. a ``DistributedSampler``):
nothing changes in the loop. When ``torch.distributed`` is initialised, :meth:`EpochValuer.end_epoch` all-reduces the
group statistics (sums: n, Σx_i, Σ‖x_i‖², and the validation α), values each rank's own rows, and all-reduces the
values so every rank holds all n.

**Every row enters each epoch's game exactly once.** A row added more than once in an epoch — twice on one rank (its
last factors count), or on several ranks, as ``DistributedSampler`` pads its shards — is one player (on the lowest
rank that has it), so the values equal one process's. A row added by no rank is an error at :meth:`EpochValuer.
end_epoch` that says how many (a ``drop_last`` loader, a sampler over a subset); ``partial_epochs=True`` values
the rows that were seen as the epoch's game instead, with a warning naming how many were not, and
:meth:`EpochValuer.values` averages each row over the epochs it was valued in.

Options: ``per_class=True`` values each class as its own game (α and the statistics per class, as in Algorithm 2);
``alpha="valid"`` sets :math:`\alpha` to the mean of :math:`l_i g_i` over a validation set (per class when
``per_class``; give the rows with ``add_validation`` or ``value_epoch(..., valid_loader)``; :func:`value_data` in
ride-along mode takes them in a no-grad pass at the end of each epoch); ``utility`` "chg" | "gradient" |
"hardness" and ``gradient`` "full" | "bias" as in :class:`chg.Options` (which every entry point also takes whole).

``skip_epochs=k`` leaves the first k epochs out of the average (an addition to Algorithm 1, which averages every
epoch): epoch 0 values the random initialisation, and in a separate pass a BatchNorm network's running statistics
are still those of initialisation, so its values say little about the data and are averaged in with the same weight
as the rest. They are still computed and kept in ``epoch_values``. ``skip_epochs=epochs-1`` keeps the last epoch
alone. When to use it: benchmarks/results/modes.md.

A user's own loop::

    valuer = EpochValuer(len(train_set))
    for epoch in range(E):
        valuer.value_epoch(model, DataLoader(IndexedDataset(train_set), batch_size=256))  # or ride along
        for x, y, idx in train_loader:
            with LastLayerTap(model) as tap:
                out = model(x)                        # logits, or a tuple / dict / ModelOutput holding them
                logits, _ = tap.read(out)             # the output layer's output, with its graph
            # ride-along instead: valuer.add_logits(idx, logits, y, feat, tap.bias) with logits, feat = tap.read(out)
            F.cross_entropy(logits, y).backward(); opt.step(); opt.zero_grad()
        # ride-along: valuer.end_epoch()
    values = valuer.values()

or the one-call helper :func:`value_data`.
"""
from __future__ import annotations

import dataclasses
import operator
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset

from .distributed import all_gather_values as _all_gather_values
from .distributed import group_ids as _group_ids
from .distributed import is_distributed
from .factored import GroupStats, Options, epoch_values, utility_stats
from .renames import renamed
from .progress import progress as progress_bar
from .lastlayer import (Factors, LastLayerTap, _check_logits, _targets, _upcast, check_loss, forward_batch,
                        loss_and_error, model_device, per_sample_loss, split_batch)
from .store import BAD_TARGET, RowStore, check_rows, materialise
from .store import players as store_players
from .values import Values

__all__ = ["EpochValuer", "IndexedDataset", "value_data", "ValueDataConfig"]

MODES = ("pass", "ride")


def _sequential(loader) -> bool:
    """True only for a DataLoader that visits rows 0, 1, 2, ... in order (so rows can be numbered by arrival)."""
    return (isinstance(getattr(loader, "sampler", None), SequentialSampler)
            and type(getattr(loader, "batch_sampler", None)) is BatchSampler)


def _skip_epochs(k) -> int:
    """``skip_epochs`` validated: a Python or NumPy integer ≥ 0 (not a bool)."""
    try:
        if isinstance(k, bool):
            raise TypeError
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"skip_epochs must be an integer >= 0 (the number of first epochs left out of the "
                         f"average), got {k!r}") from None
    if k < 0:
        raise ValueError(f"skip_epochs must be an integer >= 0 (the number of first epochs left out of the "
                         f"average), got {k}")
    return k


def _int_tensor(v, what: str, device="cpu") -> torch.Tensor:
    """A 1-D int64 tensor on ``device`` from a tensor, NumPy array, pandas Series or list of integers (any integer
    dtype); a dtype check only (no look at the values)."""
    t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{what} must be integers, got dtype {t.dtype} (pass them as an integer array or tensor)")
    return t.reshape(-1).to(device=device, dtype=torch.int64)


class IndexedDataset(Dataset):
    """Wraps a dataset so that each item carries its row index: ``(x, y)`` items become ``(x, y, index)``, dict items
    (HuggingFace style, with ``"labels"``) get an ``"index"`` entry. The valuer needs each row's index.

    Args:
        dataset: a map-style Dataset of ``(x, y[, ...])`` items or of dicts.
    Raises:
        ValueError: (on reading an item) an item that is neither a dict nor a tuple / list of at least 2.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        if isinstance(item, dict):
            return {**item, "index": i}
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(f"IndexedDataset: item {i} is a {type(item).__name__}; expected (x, y) or a dict with "
                             "'labels'")
        return item[0], item[1], i


def _deferred_targets(logits: torch.Tensor, targets) -> torch.Tensor:
    """Targets (B,) int64 on the logits' device after the checks that need no value (type, dtype, shape); a 1-logit
    head's float target that is not 0 or 1 becomes :data:`chg.store.BAD_TARGET` (reported at end_epoch). No host
    synchronisation."""
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"targets must be a torch.Tensor of class labels, got {type(targets).__name__}")
    B, C = logits.shape
    if targets.dtype.is_complex or targets.dtype == torch.bool or (targets.dtype.is_floating_point and C != 1):
        raise ValueError(f"targets must be integer class labels, got dtype {targets.dtype} (soft labels are not "
                         "supported: e = softmax − onehot needs a class index; pass y.long() if they are whole)")
    if C == 1 and targets.ndim == 2 and targets.shape[1] == 1:
        targets = targets.reshape(-1)
    if targets.ndim != 1 or targets.shape[0] != B:
        raise ValueError(f"targets must be (B,) = ({B},), got shape {tuple(targets.shape)}")
    if targets.dtype.is_floating_point:
        ok = (targets == 0) | (targets == 1)
        targets = torch.where(ok, targets.to(torch.int64), torch.full_like(targets, BAD_TARGET, dtype=torch.int64))
    return targets.to(device=logits.device, dtype=torch.int64)


def epoch_rows(store: RowStore, n: int, starts: list, weight, label_smoothing: float, per_class: bool) -> None:
    """The epoch's rows checked once (:func:`chg.store.check_rows`) and their logits made errors in place under the
    training loss (:func:`chg.store.materialise`)."""
    check_rows(store, n, starts)
    if per_class and bool((store.target[:store.size] < 0).any()):
        raise ValueError("end_epoch: per_class=True but some rows were added without labels")
    materialise(store, loss_and_error, weight, label_smoothing)


@renamed("0.2.0", weighting="utility")
class EpochValuer:
    """Algorithm 1's collection: each epoch's rows (stored once, checked once), the validation α, and the history
    of epoch values that :meth:`values` averages. The maths is :func:`chg.factored.epoch_values`; the rows live in a
    :class:`chg.store.RowStore`.

    Args:
        n: number of training points (indices run over ``0..n-1``); a Python or NumPy integer ≥ 1.
        utility, gradient, per_class, alpha: see the module docstring and :class:`chg.Options`.
        options: a :class:`chg.Options` instead of those four keywords (not both).
        partial_epochs: False (default): an epoch in which some row was not added is an error at
            :meth:`end_epoch`; True: the rows seen are the epoch's game, with a warning naming how many were not.
        skip_epochs: the number k ≥ 0 of first epochs left out of :meth:`values` (0: every epoch, Algorithm 1);
            their values are still computed and kept in ``epoch_values``.
        weight, label_smoothing: the training loss's class weights (C,) and smoothing in [0, 1], as
            ``torch.nn.functional.cross_entropy`` takes them: the rows of :meth:`add_logits` and of the separate
            pass are valued under that loss (:func:`chg.lastlayer.loss_and_error`); default plain cross-entropy.
        storage_dtype: dtype the rows' logits/errors and features are kept in (default float32; ``torch.bfloat16``
            or ``torch.float16`` halve the memory, eq. (3) still runs in float32/float64). offload: None | "host" |
            "disk" (memory-mapped files in ``directory``): where the rows are kept (:mod:`chg.store`).
        unit: None (a classifier: one row per point) or "sequence" | "token": a language model's or token
            classifier's rows — the valuer is then a :class:`chg.sequence.SequenceValuer` with the same verbs
            (:func:`chg.sequence.sequence_valuer` takes the keywords).
    Raises:
        ValueError for an invalid ``n``, ``skip_epochs``, option, storage dtype or offload.
    """

    def __new__(cls, *args, unit: Optional[str] = None, **kwargs):
        if unit is None:
            return super().__new__(cls)
        from .sequence import sequence_valuer
        if len(args) > 1:
            raise ValueError(f"EpochValuer(n, unit={unit!r}, ...): pass the options by keyword")
        return sequence_valuer(*args, unit=unit, **kwargs)

    def __init__(self, n: int, utility: str = "chg", gradient: str = "full", per_class: bool = False,
                 alpha: str = "train", partial_epochs: bool = False, options: Optional[Options] = None,
                 skip_epochs: int = 0, weight=None, label_smoothing: float = 0.0,
                 storage_dtype: Optional[torch.dtype] = None, offload: Optional[str] = None, directory=None,
                 unit: Optional[str] = None):
        try:
            if isinstance(n, bool):
                raise TypeError
            n = operator.index(n)  # Python and NumPy integers
        except TypeError:
            raise ValueError(f"EpochValuer: n must be a positive integer (number of training points), got "
                             f"{n!r}") from None
        if n < 1:
            raise ValueError(f"EpochValuer: n must be a positive integer (number of training points), got {n!r}")
        self.options = Options.of(options, utility=utility, gradient=gradient, alpha=alpha, per_class=per_class)
        self.n, self.partial_epochs, self.skip_epochs = n, bool(partial_epochs), _skip_epochs(skip_epochs)
        self.weight, self.label_smoothing = weight, label_smoothing
        check_loss(2 if weight is None else len(weight), weight, label_smoothing)  # type and range, C comes later
        self._store_args = (storage_dtype, offload, directory)
        RowStore(1, storage_dtype, offload)  # validates them now
        self.epoch_values: list = []  # (n,) float64 per finished epoch, NaN where a point was not seen
        self._reset_epoch()

    utility = property(lambda self: self.options.utility, doc="the utility (see :class:`chg.Options`)")
    gradient = property(lambda self: self.options.gradient, doc="'full' or 'bias' (see :class:`chg.Options`)")
    per_class = property(lambda self: self.options.per_class, doc="each class its own game")
    alpha = property(lambda self: self.options.alpha, doc="α's source, 'train' or 'valid'")
    epochs = property(lambda self: len(self.epoch_values), doc="the epochs ended so far")

    def _reset_epoch(self) -> None:
        self.store = RowStore(self.n, *self._store_args)
        self._starts: list = []  # each batch's first row in the store (to name it in a message)
        self._valid: dict = {}  # group -> GroupStats of the validation points (alpha="valid")

    # ---- collecting one epoch (metadata checks only: no host-device synchronisation) ------------------------
    def _append(self, what: str, indices, targets, z, feat, bias, loss=None) -> None:
        idx = _int_tensor(indices, f"{what}: indices", z.device)
        B = z.shape[0]
        if idx.shape[0] != B or feat.shape[0] != B or (loss is not None and loss.shape[0] != B):
            raise ValueError(f"{what}: {idx.shape[0]} indices, {B} rows of logits and {feat.shape[0]} of feat"
                             if loss is None else f"{what}: {idx.shape[0]} indices but factors have loss "
                             f"{tuple(loss.shape)}, err {tuple(z.shape)}, feat {tuple(feat.shape)}")
        if not bias and self.gradient == "bias":
            raise ValueError("gradient='bias' values the bias gradient, but the output layer has no bias; use "
                             "gradient='full' (the weight gradient e ⊗ h)")
        self._starts.append(self.store.size)
        try:
            self.store.append(idx, targets, _upcast(z.detach()), _upcast(feat.detach()), bias, loss)
        except ValueError as e:
            self._starts.pop()
            raise ValueError(f"{what}: {e}") from None

    def add(self, indices, factors: Factors, labels=None) -> None:
        """Record the factors of training rows for this epoch (Algorithm 1 line 3; a row added again replaces its
        earlier factors: it is one player). Index ranges are checked at :meth:`end_epoch`.

        Args:
            indices: (B,) row indices in [0, n): an integer tensor, array or list.
            factors: the rows' :class:`chg.lastlayer.Factors` (loss (B,), err (B, C), feat (B, D)).
            labels: (B,) integer labels, needed if ``per_class``.
        Raises:
            ValueError: sizes that differ, non-integer indices or labels, missing labels with ``per_class``, or a
                change of head (C, D or bias) within the epoch.
        """
        if self.per_class and labels is None:
            raise ValueError("add: per_class=True needs the labels of the batch")
        dev = factors.err.device
        lab = torch.full((factors.err.shape[0],), -1, dtype=torch.int64, device=dev) if labels is None else \
            _int_tensor(labels, "add: labels", dev)
        if lab.shape[0] != factors.err.shape[0]:
            raise ValueError(f"add: {lab.shape[0]} labels for {factors.err.shape[0]} rows")
        self._append("add", indices, lab, factors.err, factors.feat, getattr(factors, "bias", True),
                     factors.loss.detach())

    def add_logits(self, indices, logits: torch.Tensor, targets: torch.Tensor, feat: torch.Tensor,
                   bias: bool = True) -> None:
        """Ride-along's step: keep the rows' logits, targets and features (slice copies into the epoch's store; no
        host-device synchronisation). Their loss and error (Theorem 1's :math:`l_i`, :math:`e_i`, under the
        valuer's ``weight`` and ``label_smoothing``) are made at :meth:`end_epoch`, in place of the logits, with the
        values of ``add(indices, factors_from_logits(logits, targets, feat, bias), targets)``. Target and index
        ranges and NaN/Inf logits are checked there too, naming the batch. In a training loop:
        ``logits, feat = tap.read(out)``, then ``valuer.add_logits(idx, logits, y, feat, tap.bias)``.

        Args:
            indices: (B,) row indices in [0, n): an integer tensor, array or list.
            logits: (B, C) floating (its graph is not kept). targets: (B,) integer labels in [0, C) (0/1 for one
                logit). feat: (B, D) floating. bias: whether the output layer has a bias (``LastLayerTap.bias``).
        Raises:
            ValueError: sizes that differ, non-integer indices, targets of a wrong dtype or shape, or a change of
                head (C, D or bias) within the epoch.
        """
        _check_logits(logits)
        if not isinstance(feat, torch.Tensor) or feat.ndim != 2:
            raise ValueError(f"add_logits: feat must be a (B, D) tensor, got {getattr(feat, 'shape', type(feat))}")
        self._append("add_logits", indices, _deferred_targets(logits, targets), logits, feat, bias)

    def add_validation(self, factors: Factors, labels=None) -> None:
        """Add validation rows to this epoch's α (``alpha="valid"``): α = mean of l_i g_i over them (per class).

        Args:
            factors: the validation rows' :class:`chg.lastlayer.Factors`. labels: (B,) integer labels, needed if
                ``per_class``.
        Raises:
            ValueError: the valuer was built with ``alpha="train"``, labels missing with ``per_class``, or a
                bias-free head with ``gradient="bias"``.
        """
        if self.alpha != "valid":
            raise ValueError("add_validation: this valuer was built with alpha='train'; use alpha='valid'")
        if self.per_class and labels is None:
            raise ValueError("add_validation: per_class=True needs the labels of the validation batch")
        keys = torch.zeros(factors.loss.shape[0], dtype=torch.int64) if not self.per_class else \
            _int_tensor(labels, "add_validation: labels")
        for g in torch.unique(keys).tolist():
            st = utility_stats(factors[(keys == g).nonzero().squeeze(1).to(factors.err.device)], self.options)
            self._valid[g] = st if g not in self._valid else self._valid[g] + st

    def value_epoch(self, model: nn.Module, loader, valid_loader=None, layer: Optional[nn.Linear] = None,
                    output: str = "logits", progress: Optional[bool] = None) -> torch.Tensor:
        """Algorithm 1's separate pass, then :meth:`end_epoch`: ``separate_pass(self, ...)``.

        Args:
            model, loader, valid_loader, layer, output, progress: as :func:`separate_pass`.
        Returns:
            the epoch's values (n,) float64, as :meth:`end_epoch`.
        """
        return separate_pass(self, model, loader, valid_loader, layer, output, progress)

    # ---- values ------------------------------------------------------------------------------------------------
    def end_epoch(self) -> torch.Tensor:
        """Eq. (3) for every point added this epoch from the whole epoch's statistics (Algorithm 1, lines 4–6; the
        maths is :func:`chg.factored.epoch_values`), after checking the epoch's rows once.

        Returns:
            the epoch's values (n,) float64 on the CPU (NaN only for rows not seen, with partial_epochs).
        Raises:
            ValueError: no row was added, an index or target out of range, NaN/Inf logits (each naming the batch),
                a row missing (see the class), per_class / alpha="valid" lacking labels / validation rows, or a
                class with training but no validation points.
        """
        st = self.store
        if st.size == 0:
            raise ValueError("end_epoch: no training rows were added this epoch")
        if self.alpha == "valid" and not self._valid:
            raise ValueError("end_epoch: alpha='valid' but no validation rows were added (add_validation)")
        epoch_rows(st, self.n, self._starts, self.weight, self.label_smoothing, self.per_class)
        ddp = is_distributed()
        players, valued = store_players(st, self.n, ddp)
        missing = self.n - int(valued.sum())
        if missing:
            first = (~valued).nonzero().squeeze(1)[:5].tolist()
            msg = f"{missing} of the {self.n} rows were not added this epoch (e.g. rows {first})"
            if not self.partial_epochs:
                raise ValueError(f"end_epoch: {msg}: every row must enter the epoch's game exactly once (a DataLoader "
                                 "with drop_last=True, a sampler over a subset, or n larger than the data set?). Pass "
                                 "EpochValuer(..., partial_epochs=True) to value the rows seen as the epoch's game")
            warnings.warn(f"EpochValuer.end_epoch: {msg}; they are not valued this epoch (partial_epochs=True)",
                          stacklevel=2)
        whole = players.numel() == st.size
        fac = Factors(*(t[:st.size] if whole else t[players] for t in (st.loss, st.z, st.feat)), st.bias)
        groups = (st.target[:st.size] if whole else st.target[players]) if self.per_class else None
        ids = _group_ids(groups if groups is not None else st.target[:0], self.per_class, ddp, st.z.device)
        alpha = self._alpha(ids, ddp) if self.alpha == "valid" else None
        v = epoch_values(fac, self.options, groups, alpha, GroupStats.all_reduce if ddp else None, ids)
        vals = torch.full((self.n,), float("nan"), dtype=torch.float64)
        vals[st.idx[players].cpu() if not whole else st.idx[:st.size].cpu()] = v.cpu()
        if ddp:
            vals = _all_gather_values(vals, st.z.device)
        self.epoch_values.append(vals)
        self.store.close()
        self._reset_epoch()
        return vals

    def _alpha(self, ids: list, ddp: bool) -> dict:
        out = {}
        for g in ids:
            valid = self._valid.get(g)
            if valid is None:
                like = next(iter(self._valid.values()))
                valid = GroupStats(0, torch.zeros_like(like.sum), torch.zeros_like(like.sum_sq_norms))
            if ddp:
                valid.all_reduce()
            if valid.n == 0:
                raise ValueError(f"end_epoch: class {g} has training points but no validation points; "
                                 f"alpha='valid' with per_class=True needs every class in the validation set")
            out[g] = valid.sum / valid.n
        return out

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume after a finished epoch.

        Returns:
            a dict: ``n``, ``epoch_values`` (the history), ``skip_epochs`` and ``options`` (a tuple of the option
            values). Plain tensors: loads with ``torch.load(..., weights_only=True)``.
        """
        return {"n": self.n, "epoch_values": [v.clone() for v in self.epoch_values], "skip_epochs": self.skip_epochs,
                "options": (self.utility, self.gradient, self.per_class, self.alpha)}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict` (also of 0.2.0; the current epoch's rows are dropped).

        Args:
            state: a dict from :meth:`state_dict`.
        Raises:
            ValueError: it is of a valuer with another n, options or skip_epochs.
        """
        if state["n"] != self.n or tuple(state["options"]) != (self.utility, self.gradient, self.per_class,
                                                              self.alpha):
            raise ValueError("load_state_dict: the checkpoint is of a valuer with other n or options")
        if state.get("skip_epochs", 0) != self.skip_epochs:
            raise ValueError(f"load_state_dict: the checkpoint is of a valuer with skip_epochs="
                             f"{state.get('skip_epochs', 0)}, this one has skip_epochs={self.skip_epochs}")
        self.epoch_values = [v.clone() for v in state["epoch_values"]]
        self._reset_epoch()

    def values(self, **meta) -> Values:
        """Algorithm 1's output: each point's value averaged over the epochs in which it was valued, after the first
        ``skip_epochs``, with the history (:class:`chg.Values`).

        Args:
            **meta: settings to keep with the values (JSON-ready), beside the valuer's options.
        Returns:
            :class:`chg.Values` (NaN for a point never valued).
        Raises:
            ValueError: no epoch has ended yet, or only epochs among the first ``skip_epochs``.
        """
        if self.epochs == 0:
            raise ValueError("values: no epoch has ended yet (call value_epoch or end_epoch)")
        if self.epochs <= self.skip_epochs:
            raise ValueError(f"values: {self.epochs} epoch(s) ended, all among the first skip_epochs="
                             f"{self.skip_epochs} left out of the average; train at least {self.skip_epochs + 1} "
                             "epochs or lower skip_epochs")
        info = {"utility": self.utility, "gradient": self.gradient, "per_class": self.per_class,
                "alpha": self.alpha, "label_smoothing": float(self.label_smoothing),
                "weight": None if self.weight is None else [float(w) for w in self.weight], **meta}
        return Values(torch.stack(self.epoch_values).numpy(), self.skip_epochs, meta=info)


@dataclass
class ValueDataConfig:
    """Training settings of :func:`value_data` (a plain loop: the output layer's loss — cross-entropy, or binary
    cross-entropy for one logit — on its logits).

    Attributes:
        epochs: training epochs (≥ 1); the values are averaged over them.
        batch_size: rows per training step (≥ 1).
        lr: the optimizer's learning rate. optimizer: "adam" | "sgd". momentum: SGD only. weight_decay: L2 penalty.
        mode: "pass": a separate no-grad pass at each epoch start (Algorithm 1) | "ride": ride-along.
        eval_batch_size: rows per no-grad batch (≥ 1).
        seed: seeds the shuffling of the batches.
        progress: a bar over the epochs: True | False | None (only on a terminal; :mod:`chg.progress`).
    """
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    mode: str = "pass"
    eval_batch_size: int = 256  # the separate pass's batch (benchmarks/results/pass_cost.md: 1,024 is slower on a CPU)
    seed: int = 0
    progress: Optional[bool] = None


def _array_like(v) -> bool:
    """NumPy arrays, tensors and pandas objects: data without the (x, y) item structure of a Dataset."""
    module = type(v).__module__
    return isinstance(v, (np.ndarray, torch.Tensor)) or module == "pandas" or module.startswith("pandas.")


def _numpy(v, what: str) -> np.ndarray:
    arr = v.to_numpy() if hasattr(v, "to_numpy") else np.asarray(v)
    if arr.dtype == object or arr.dtype.kind in "USMm":
        raise ValueError(f"{what} has dtype {arr.dtype}: pass numbers (encode categories or strings as integers, "
                         "e.g. with pandas.factorize)")
    return arr


def _features(X, dtype: torch.dtype) -> torch.Tensor:
    t = X.detach() if isinstance(X, torch.Tensor) else torch.from_numpy(np.array(_numpy(X, "X")))  # own copy
    return t.to(dtype) if t.dtype.is_floating_point else t  # floating features in the model's dtype


def _labels(y, n: int) -> torch.Tensor:
    t = y.detach() if isinstance(y, torch.Tensor) else torch.from_numpy(np.array(_numpy(y, "y")))
    if t.dtype.is_floating_point or t.dtype.is_complex:
        raise ValueError(f"y has dtype {t.dtype}: pass integer class labels (y.astype(int) / y.long() if they are "
                         "whole numbers)")
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"y must be 1-D with one label per row of X ({n}), got shape {tuple(t.shape)}")
    return t.to(torch.int64)


def _as_dataset(data, what: str, dtype: torch.dtype):
    """A Dataset from what a user passes: a Dataset (of ``(x, y)`` items or dicts), or a pair ``(X, y)`` of arrays,
    tensors or pandas objects. A bare array is refused (features without labels: never split into (x, y))."""
    if data is None:
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(_array_like(d) for d in data):
        X = _features(data[0], dtype)
        if X.ndim < 1:
            raise ValueError(f"value_data: {what} X must have one row per point, got a scalar")
        return TensorDataset(X, _labels(data[1], X.shape[0]))
    if _array_like(data):
        shape = tuple(getattr(data, "shape", ()))
        raise ValueError(f"value_data: {what} is a {type(data).__module__}.{type(data).__name__} of shape {shape}, "
                         f"not a data set of (x, y) items: pass features and labels together as a pair, "
                         f"value_data(model, (X, y)) (valid_dataset=(X_valid, y_valid)), or a torch Dataset")
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise ValueError(f"value_data: {what} must be a Dataset of (x, y) items (or dicts with 'labels') or a pair "
                         f"(X, y), got {type(data).__name__}")
    return data


@renamed("0.2.0", weighting="utility")
def value_data(model: nn.Module, train_dataset, valid_dataset=None, config: Optional[ValueDataConfig] = None,
               utility: str = "chg", gradient: str = "full", per_class: bool = False, alpha: str = "train",
               return_valuer: bool = False, layer: Optional[nn.Linear] = None, options: Optional[Options] = None,
               skip_epochs: int = 0, weight=None, label_smoothing: float = 0.0, unit: Optional[str] = None,
               **overrides):
    """Train ``model`` (in place) on ``train_dataset`` and return every point's CHG value (Algorithm 1).

    Args:
        model: a classifier whose output layer is an ``nn.Linear`` (with or without bias; C ≥ 2 logits trained with
            cross-entropy, or one logit with binary cross-entropy); it may return the logits or a tuple / dict /
            ``ModelOutput`` holding them (see :mod:`chg.lastlayer`). ``layer``: its output layer, if not the last
            ``nn.Linear`` registered.
        train_dataset: a torch Dataset of ``(x, y)`` items or of dicts with ``"labels"`` (HuggingFace style, tensors:
            ``.with_format("torch")``), or a pair ``(X, y)``: X an array, tensor or pandas DataFrame (floating
            features are converted to the model's dtype), y integer labels (any integer dtype; float labels are
            refused). A bare array is refused with a message, never split into (x, y).
        valid_dataset: the same kinds; needed for ``alpha="valid"``.
        config / overrides: a :class:`ValueDataConfig` and/or keyword settings (``epochs=3, lr=0.1, mode="ride"``).
            The caller's config is copied, never changed.
        utility, gradient, per_class, alpha: as in :class:`EpochValuer`; or ``options`` (a :class:`chg.Options`).
        skip_epochs: the first k epochs left out of the average, 0 ≤ k < epochs (0: every epoch, Algorithm 1); see
            the module docstring and benchmarks/results/modes.md for when it helps.
        weight, label_smoothing: the loss trained on and valued — ``F.cross_entropy``'s class weights (C,) and
            label smoothing in [0, 1] (default: plain cross-entropy).
        unit: None: a data set whose items' labels are sequences (a language model's or token classifier's:
            :func:`chg.sequence.is_sequence_data`) goes to :func:`chg.sequence.value_sequences` with these settings
            (one value per sequence), any other to the classifier's loop; "sequence" or "token" (one value per
            scored token) choose the sequence path.
    Returns:
        :class:`chg.Values`: each point's value averaged over the epochs (after the first ``skip_epochs``), with the
        per-epoch history; with ``return_valuer``, ``(values, valuer)``.
    Raises:
        ValueError for unknown settings or options, a ``skip_epochs`` that is not an integer in [0, epochs), and
        data it cannot read as (x, y) rows.
    """
    if config is not None and not isinstance(config, ValueDataConfig):
        raise ValueError(f"value_data: config must be a ValueDataConfig, got {type(config).__name__}")
    unknown = [k for k in overrides if k not in ValueDataConfig.__dataclass_fields__]
    if unknown:
        raise ValueError(f"value_data: unknown setting {unknown[0]!r}; settings are "
                         f"{list(ValueDataConfig.__dataclass_fields__)}")
    cfg = dataclasses.replace(config if config is not None else ValueDataConfig(), **overrides)  # a copy
    options = Options.of(options, utility=utility, gradient=gradient, per_class=per_class, alpha=alpha)
    from .sequence import is_sequence_data, sequence_valuer, value_sequences
    if unit is not None or is_sequence_data(train_dataset):
        sequence_valuer(1, unit=unit or "sequence", options=options, weight=weight,
                        label_smoothing=label_smoothing)  # the options a sequence valuer takes, checked
        return value_sequences(model, train_dataset, valid_dataset, unit=unit or "sequence", mode=cfg.mode,
                               utility=options.utility, alpha=options.alpha, epochs=cfg.epochs,
                               batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, eval_batch_size=cfg.eval_batch_size, seed=cfg.seed,
                               skip_epochs=skip_epochs, layer=layer, progress=cfg.progress,
                               return_valuer=return_valuer)
    if options.alpha == "valid" and valid_dataset is None:
        raise ValueError("value_data: alpha='valid' needs valid_dataset")
    dtype = next(model.parameters()).dtype
    train_dataset = _as_dataset(train_dataset, "train_dataset", dtype)
    valid_dataset = _as_dataset(valid_dataset, "valid_dataset", dtype)
    skip_epochs = _skip_epochs(skip_epochs)
    _check_config(cfg)
    if skip_epochs >= cfg.epochs:
        raise ValueError(f"value_data: skip_epochs={skip_epochs} leaves none of the {cfg.epochs} epochs to average; "
                         f"it must be < epochs")
    valuer = EpochValuer(len(train_dataset), options=options, skip_epochs=skip_epochs, weight=weight,
                         label_smoothing=label_smoothing)
    train_and_value(model, train_dataset, valid_dataset, cfg, valuer, layer=layer)
    values = valuer.values(mode=cfg.mode, epochs=int(cfg.epochs))
    return (values, valuer) if return_valuer else values


def _check_config(cfg: ValueDataConfig) -> None:
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    if cfg.optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {cfg.optimizer!r}")
    for name in ("epochs", "batch_size", "eval_batch_size"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


class _TensorRows(Dataset):
    """A TensorDataset's rows fetched a batch at a time (one indexing per tensor, not one item per row): item
    ``rows`` (a list of row numbers) is ``(x[rows], y[rows], rows)``."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, rows):
        r = torch.as_tensor(rows, dtype=torch.int64)
        return self.tensors[0][r], self.tensors[1][r], r


def _indexed_loader(dataset, batch_size: int, generator: Optional[torch.Generator] = None) -> DataLoader:
    """Batches ``(x, y, index)`` of ``dataset`` in order, or shuffled by ``generator`` (the permutation of
    ``DataLoader(shuffle=True, generator=generator)``); a TensorDataset's are fetched a batch at a time."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        order = RandomSampler(dataset, generator=generator) if generator is not None else SequentialSampler(dataset)
        return DataLoader(_TensorRows(dataset.tensors), sampler=BatchSampler(order, batch_size, False),
                          batch_size=None)
    return DataLoader(IndexedDataset(dataset), batch_size=batch_size, shuffle=generator is not None,
                      generator=generator)


@torch.no_grad()
def separate_pass(valuer: EpochValuer, model: nn.Module, loader, valid_loader=None,
                  layer: Optional[nn.Linear] = None, output: str = "logits",
                  progress: Optional[bool] = None) -> torch.Tensor:
    """Algorithm 1 exactly: one no-grad forward pass over the training set at the current θ, every row handed to
    ``valuer.add_logits`` (validation rows to ``add_validation``), then ``valuer.end_epoch()``.

    ``loader`` yields ``(x, y, index)`` batches or dicts with ``"index"`` (see :class:`IndexedDataset`) or, if it is a
    plain sequential DataLoader, ``(x, y)`` / dicts without (rows are then numbered in order); see
    :func:`chg.lastlayer.split_batch`. ``valid_loader`` yields ``(x, y[, ...])``; required when ``alpha="valid"``. The
    model runs in eval mode (dropout off, BatchNorm's running statistics used and left untouched) and its mode is
    restored afterwards.

    Args:
        valuer: the :class:`EpochValuer` (its loss, options and storage apply). model: the classifier. loader,
            valid_loader: see above. layer, output: as in :class:`chg.lastlayer.LastLayerTap`. progress: a bar over
            the batches: True | False | None (only on a terminal; :mod:`chg.progress`).
    Returns:
        the epoch's values (n,) float64 on the CPU (:meth:`EpochValuer.end_epoch`).
    Raises:
        ValueError: ``alpha="valid"`` without ``valid_loader``, a loader without indices that is not plain
            sequential, and as :meth:`EpochValuer.add_logits` and :meth:`EpochValuer.end_epoch`.
    """
    if valuer.alpha == "valid" and valid_loader is None:
        raise ValueError("value_epoch: alpha='valid' needs valid_loader")
    was_training = model.training
    model.eval()
    try:
        tap = LastLayerTap(model, layer, output)
        device = model_device(model)
        with tap:
            offset = 0
            total = len(loader) if hasattr(loader, "__len__") else None
            for batch in progress_bar(loader, total=total, unit="batch", desc="value_epoch", enabled=progress):
                inputs, y, idx = split_batch(batch)
                logits, feat = tap.read(forward_batch(model, inputs, device))
                y = torch.as_tensor(y).to(device)
                if idx is None:
                    if not _sequential(loader):
                        raise ValueError("value_epoch: a loader without indices must be a plain sequential "
                                         "DataLoader (rows numbered in order); with any other sampler (shuffled, "
                                         "subset, distributed, ...) wrap the dataset in IndexedDataset so batches "
                                         "carry each row's index")
                    idx = torch.arange(offset, offset + len(y))
                offset += len(y)
                valuer.add_logits(idx, logits, y, feat, tap.bias)
            if valuer.alpha == "valid":
                add_validation_pass(valuer, model, valid_loader, tap)
    finally:
        model.train(was_training)
    return valuer.end_epoch()


@torch.no_grad()
def add_validation_pass(valuer: EpochValuer, model: nn.Module, valid_loader, tap: LastLayerTap) -> None:
    """Validation rows into the valuer's α (``alpha="valid"``): a no-grad pass of ``model`` (in the mode it is in)
    through an open ``tap``, each batch's loss and error under the valuer's loss.

    Args:
        valuer: the :class:`EpochValuer`. model: the classifier. valid_loader: batches ``(x, y[, ...])``.
        tap: an open :class:`chg.lastlayer.LastLayerTap` of ``model``.
    Raises:
        ValueError: as :func:`chg.lastlayer.loss_and_error` and :meth:`EpochValuer.add_validation`.
    """
    device = model_device(model)
    for batch in valid_loader:
        inputs, y, _ = split_batch(batch)
        logits, feat = tap.read(forward_batch(model, inputs, device))
        y = torch.as_tensor(y).to(device)
        loss, err = loss_and_error(logits, y, valuer.weight, valuer.label_smoothing)
        valuer.add_validation(Factors(loss, err, _upcast(feat), tap.bias), y)


def train_and_value(model: nn.Module, train_dataset, valid_dataset, cfg: ValueDataConfig, valuer: EpochValuer,
                    layer: Optional[nn.Linear] = None, output: str = "logits",
                    loss_fn: Optional[Callable] = None) -> EpochValuer:
    """The one loop that trains and values — :func:`value_data`'s, the OpenDataVal plugin's and ``chg value``'s:
    ``cfg.epochs`` epochs of shuffled mini-batches (``cfg.seed``), each epoch valued by ``valuer`` (``cfg.mode``: a
    separate pass at its start, :func:`separate_pass`, or ride-along through :meth:`EpochValuer.add_logits`), every
    forward pass through one :class:`chg.lastlayer.LastLayerTap` built once.

    Args:
        model: the classifier (trained in place). train_dataset, valid_dataset: Datasets (see :func:`value_data`).
        cfg: :class:`ValueDataConfig`. valuer: an :class:`EpochValuer` of ``len(train_dataset)`` rows; its
            ``weight`` and ``label_smoothing`` are the training loss's too. layer, output: as in
            :class:`chg.lastlayer.LastLayerTap`.
        loss_fn: ``loss_fn(output, logits, targets, index)`` → scalar training loss; default the mean of
            :func:`chg.lastlayer.per_sample_loss` under the valuer's loss (weighted mean with class weights, as
            ``F.cross_entropy``); ``targets`` arrive validated, int64.
    Returns:
        ``valuer``.
    Raises:
        ValueError: a bad config, a valuer of another size, ``alpha="valid"`` without a validation set, and as the
            tap and the valuer do.
    """
    _check_config(cfg)
    if len(train_dataset) != valuer.n:
        raise ValueError(f"the valuer has n = {valuer.n} but the training set has {len(train_dataset)} rows")
    if valuer.alpha == "valid" and valid_dataset is None:
        raise ValueError("alpha='valid' needs a validation set")
    device = model_device(model)
    train_loader = _indexed_loader(train_dataset, int(cfg.batch_size), torch.Generator().manual_seed(int(cfg.seed)))
    eval_loader = _indexed_loader(train_dataset, int(cfg.eval_batch_size))
    valid_loader = None if valid_dataset is None else DataLoader(valid_dataset, batch_size=int(cfg.eval_batch_size))
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    tap = LastLayerTap(model, layer, output)
    weight = None if valuer.weight is None else torch.as_tensor(np.asarray(valuer.weight, dtype=np.float64))
    model.train()
    for _ in progress_bar(range(int(cfg.epochs)), desc=f"value_data ({cfg.mode})", unit="epoch",
                          enabled=cfg.progress):
        if cfg.mode == "pass":
            separate_pass(valuer, model, eval_loader, valid_loader, layer, output)
        with tap:
            for batch in train_loader:
                inputs, y, idx = split_batch(batch)
                out = forward_batch(model, inputs, device)
                logits, feat = tap.read(out)  # (B, C) with its graph, (B, D) detached
                y = _targets(logits, torch.as_tensor(y).to(device))  # validated once for the factors and the loss
                if cfg.mode == "ride":
                    valuer.add_logits(idx, logits, y, feat, tap.bias)
                loss = (per_sample_loss(logits, y, weight, valuer.label_smoothing, reduction="mean")
                        if loss_fn is None else loss_fn(out, logits, y, idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if cfg.mode == "ride" and valuer.alpha == "valid":
                was = model.training
                model.eval()
                try:
                    add_validation_pass(valuer, model, valid_loader, tap)
                finally:
                    model.train(was)
        if cfg.mode == "ride":
            valuer.end_epoch()
    return valuer
