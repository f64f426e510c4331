r"""Algorithm 1: CHG Shapley values of every training point, averaged over the epochs of one training run.

Each epoch k (paper, Algorithm 1):

1. acquire every point's loss :math:`l_i` and last-layer gradient :math:`g_i = e_i \otimes [h_i; 1]` (bias-free head:
   :math:`e_i \otimes h_i`) at :math:`\theta_k` (:mod:`chg.lastlayer`, the one path from a model and its batches to
   these factors — what a model may return and a batch may be is stated there; never per-sample autograd),
2. value every point with eq. (3), :math:`x_i = l_i g_i`, :math:`\alpha = \frac1N\sum_{i\in N} l_i g_i`,
3. train the epoch;

and return each point's value averaged over the epochs.

Two ways to acquire step 1, both with :class:`EpochValuer`:

* **separate pass** (exactly Algorithm 1): ``separate_pass(valuer, model, loader)`` at the start of the epoch runs
  one no-grad forward pass over the training set (model in eval mode) and computes the epoch's values. Every point is
  seen at the same parameters :math:`\theta_k`. Costs one extra forward pass per epoch.
* **ride-along** (no extra pass): with one :class:`chg.lastlayer.LastLayerTap` built before the loop and open
  around it, inside your training step ``logits, feat = tap.read(out)`` and
  ``valuer.add_logits(indices, logits, y, feat, tap.bias)`` with the output of the training forward pass, then
  ``valuer.end_epoch()``, which makes every row's loss and error in one call (``valuer.add(indices, tap.factors(out,
  y), y)`` gives the same values, computing them batch by batch). ``add_logits`` copies the batch into the epoch's
  store and checks only what needs no value from the device; index and label ranges and NaN are checked once at
  ``end_epoch``, naming the batch.
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
rank that has it), so the values equal one process's. Rows added twice on one process are also a
:class:`RepeatedRowsWarning` at :meth:`EpochValuer.end_epoch` naming how many: an epoch run again after an error
leaves them so (call :meth:`EpochValuer.discard_epoch` in an ``except`` around the epoch: the loop below), and so
does a sampler that repeats rows. A row added by no rank is an error at :meth:`EpochValuer.end_epoch` that says how
many (a ``drop_last`` loader, a sampler over a subset); ``partial_epochs=True`` values the rows that were seen as the
epoch's game instead, with a warning naming how many were not, and :meth:`EpochValuer.values` averages each row over
the epochs it was valued in. Under ``torch.distributed`` every rank takes part in the epoch's end, also one whose
shard was empty; an error in one rank's rows (an index or label out of range, NaN/Inf) stops the epoch on every rank,
its own message on that rank, never one rank alone while the others wait.

Options: ``per_class=True`` values each class as its own game (α and the statistics per class, as in Algorithm 2);
``alpha="valid"`` sets :math:`\alpha` to the mean of :math:`l_i g_i` over a validation set (per class when
``per_class``; give the rows with ``add_validation`` or ``value_epoch(..., valid_loader)``; :func:`value_data` in
ride-along mode takes them in a no-grad pass at the end of each epoch); ``utility`` "chg" | "gradient" |
"hardness" and ``gradient`` "full" | "bias" as in :class:`chg.Options` (the validated record of these keywords).

``skip_epochs=k`` leaves the first k epochs out of the average (an addition to Algorithm 1, which averages every
epoch): epoch 0 values the random initialisation, and in a separate pass a BatchNorm network's running statistics
are still those of initialisation, so its values say little about the data and are averaged in with the same weight
as the rest. They are still computed and kept in ``epoch_values``. ``skip_epochs=epochs-1`` keeps the last epoch
alone. When to use it: the "which mode, when" page of the docs.

A user's own loop::

    valuer, tap = EpochValuer(len(train_set)), LastLayerTap(model)   # both built once
    for epoch in range(E):
        try:
            with tap:                                   # the output layer's hook, armed for the epoch
                for x, y, idx in train_loader:          # batches of IndexedDataset(train_set): (x, y, row index)
                    logits, feat = tap.read(model(x))   # the output layer's output (with its graph) and input
                    valuer.add_logits(idx, logits, y, feat, tap.bias)
                    F.cross_entropy(logits, y).backward(); opt.step(); opt.zero_grad()
        except BaseException:                           # an error cut the epoch short: its rows go with it
            valuer.discard_epoch()
            raise
        valuer.end_epoch()                              # or, for Algorithm 1 exactly, separate_pass(...) first
    values = valuer.values()                            # chg.Values

or the one-call helper :func:`chg.value_data` (:mod:`chg.loop`).
"""
from __future__ import annotations

import operator
import warnings
import weakref
from collections.abc import Mapping
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .distributed import all_gather_values, collective_device, every_rank, group_ids, is_distributed
from .factored import GroupStats, Options, alpha_from_validation, epoch_values, flag, stats_by_group
from .io import check_state, loss_record
from .lastlayer import (Factors, LastLayerTap, as_targets, carries_index, check_logits, check_loss, check_targets,
                        forward_batch, loss_and_error, model_device, sequential_loader, split_batch, unknown_index,
                        upcast)
from .progress import progress as progress_bar
from .renames import OPTIONS_REMOVED, renamed
from .store import RowStore, check_rows, materialise, nonfinite_row, players
from .values import Values

__all__ = ["EpochValuer", "IndexedDataset", "separate_pass", "add_validation_pass", "RepeatedRowsWarning",
           "check_complete", "check_same_head", "check_state", "loss_record", "head_of"]


def count(v, name: str, low: int = 0, meaning: str = "") -> int:
    """A count given by a user: a Python or NumPy integer ≥ ``low`` (not a bool).

    Args:
        v: the value. name: its name, for the message. low: the least value allowed. meaning: what it counts, said in
            the message after the rule (e.g. ``" (the number of training points)"``).
    Returns:
        ``v`` as an int.
    Raises:
        TypeError: not an integer. ValueError: below ``low``.
    """
    try:
        if isinstance(v, bool):
            raise TypeError
        v = operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an integer >= {low}{meaning}, got {v!r}") from None
    if v < low:
        raise ValueError(f"{name} must be an integer >= {low}{meaning}, got {v}")
    return v


SKIP_MEANING = " (the number of first epochs left out of the average)"


class RepeatedRowsWarning(UserWarning):
    """Rows added more than once in one epoch on one process (:meth:`EpochValuer.end_epoch`): each counts once, with
    its last factors. Filter it (``warnings.filterwarnings("ignore", category=chg.valuation.RepeatedRowsWarning)``)
    where the repeats are meant: a sampler that pads a process's shard with rows it already has (accelerate's
    ``even_batches``, which the HuggingFace callback expects)."""


def check_complete(valued: torch.Tensor, partial: bool, verb: str, owner: str, note: str = "",
                   stacklevel: int = 3) -> None:
    """The rule of an epoch's rows, for every valuer: each of the n rows was added (by some rank). Without
    ``partial`` a row missing is an error; with it, a warning naming how many (the rows seen are the epoch's game).

    Args:
        valued: (n,) bool, the rows added this epoch (on any rank). partial: the valuer's ``partial_epochs``.
        verb: the call that ends the epoch, for the message. owner: the valuer's class name (``"EpochValuer"``), for
            the option to name. note: said after the rows (e.g. the ranks that added none). stacklevel: of the
            warning.
    Raises:
        ValueError: rows missing, without ``partial``.
    """
    n = valued.shape[0]
    missing = n - int(valued.sum())
    if not missing:
        return
    first = (~valued).nonzero().squeeze(1)[:5].tolist()
    msg = f"{missing} of the {n} rows were not added this epoch (e.g. rows {first}){note}"
    if not partial:
        raise ValueError(f"{verb}: {msg}: every row must enter the epoch's game exactly once (a DataLoader with "
                         "drop_last=True, a sampler over a subset, or n larger than the data set?). Pass "
                         f"{owner}(..., partial_epochs=True) to value the rows seen as the epoch's game")
    where = f"{owner}.end_epoch" if verb == "end_epoch" else verb
    warnings.warn(f"{where}: {msg}; they are not valued this epoch (partial_epochs=True)", stacklevel=stacklevel)


def _head_words(head: tuple) -> str:
    C, D, bias = head
    return f"{C} output(s) on {D} features, {'with' if bias else 'without'} a bias"


def check_same_head(recorded: Optional[tuple], head: tuple, what: str, owner: str) -> None:
    """The one rule of heads over epochs: values of different heads are not averaged. A head is its signature
    (C outputs, D features, bias), recorded by the valuer at its first epoch (``None``: none yet, or a checkpoint of
    a version that did not record it).

    Args:
        recorded: ``(C, D, bias)`` of the epochs so far, or None. head: this epoch's ``(C, D, bias)``. what: the
            call, for the message. owner: the valuer's class name, for the message.
    Raises:
        ValueError: another signature than the recorded one.
    """
    if recorded is None or tuple(head) == tuple(recorded):
        return
    raise ValueError(f"{what}: values of different heads are not averaged: the epochs so far were valued with an "
                     f"output layer of {_head_words(recorded)}, this one has {_head_words(head)} (a new head, e.g. "
                     f"timm's reset_classifier or a reassigned output layer, or another model); build a new {owner} "
                     "(and a new LastLayerTap) for it")


def head_of(state: dict) -> Optional[tuple]:
    """The head a checkpoint recorded.

    Args:
        state: a valuer's ``state_dict``.
    Returns:
        ``(C, D, bias)``, or None: not recorded (a checkpoint of 0.3.0 or before, or of a valuer before its first
        epoch).
    """
    head = state.get("head")
    if head is None:
        return None
    C, D, bias = head
    return int(C), int(D), bool(bias)


def int_tensor(v, what: str, device="cpu") -> torch.Tensor:
    """Row indices or labels as given by a user: a 1-D int64 tensor on ``device`` from a tensor, NumPy array, pandas
    Series or list of integers (any integer dtype); a dtype check only (no look at the values, no host-device
    synchronisation).

    Args:
        v: the integers. what: their name, for the message. device: where the tensor goes.
    Returns:
        (m,) int64 tensor.
    Raises:
        ValueError: floating, complex, boolean or string values.
    """
    if type(v) is torch.Tensor and v.dtype == torch.int64 and v.ndim == 1 and v.device == torch.device(device):
        return v  # the common case: nothing to convert (no dispatch)
    if isinstance(v, torch.Tensor):
        t = v
    else:
        try:
            a = np.asarray(v)
        except ValueError:  # ragged nested lists
            raise ValueError(f"{what} must be a 1-D sequence of integers, got a ragged {type(v).__name__}") from None
        if a.dtype == object:  # e.g. Python ints in an object array: the dtype their values have
            items = a.tolist()
            if any(isinstance(i, (bool, np.bool_)) for i in (items if isinstance(items, list) else [items])):
                raise ValueError(f"{what} must be integers, got booleans among them")
            a = np.array(items)
            if a.dtype == object:
                raise ValueError(f"{what} must be integers, got {type(v).__name__} of {a.dtype} values")
        if a.size == 0 and a.dtype.kind == "f":  # [] reads as float64: no values, no dtype to refuse
            a = a.astype(np.int64)
        if a.dtype.kind in "USV":
            raise ValueError(f"{what} must be integers, got strings ({a.dtype})")
        t = torch.from_numpy(a if a.flags.writeable else a.copy())  # (a read-only array: torch warns, so copy)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{what} must be integers, got dtype {t.dtype} (pass them as an integer array or tensor)")
    return t.reshape(-1).to(device=device, dtype=torch.int64)


def check_bias(bias, what: str) -> None:
    """``bias`` (whether the output layer has one) is a bool: the layer's bias tensor (an easy slip for
    ``tap.bias``) would otherwise pass for a head without bias, silently.

    Args:
        bias: the value given. what: the verb, for the message.
    Raises:
        TypeError: anything but a Python or NumPy bool.
    """
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"{what}: bias must be True or False (whether the output layer has a bias: "
                        f"LastLayerTap.bias), got {type(bias).__name__}")


class IndexedDataset(Dataset):
    """Wraps a dataset so that each item carries its row index: ``(x, y)`` items become ``(x, y, index)`` (elements
    after ``y`` are dropped), dict items (HuggingFace style, with ``"labels"``) get an ``"index"`` entry. The valuer
    needs each row's index; :func:`separate_pass` reads the third element of a DataLoader's batches as that index
    only over this data set (:func:`chg.lastlayer.carries_index`).

    Args:
        dataset: a map-style Dataset of ``(x, y[, ...])`` items or of dicts.
    Raises:
        ValueError: (on reading an item) an item that is neither a dict nor a tuple / list of at least 2.
    """

    carries_index = True  # its items' third element is the row's position (chg.lastlayer.carries_index)

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


@renamed("0.3.0", options=OPTIONS_REMOVED)
@renamed("0.2.0", weighting="utility")
class EpochValuer:
    """Algorithm 1's collection: each epoch's rows (in a :class:`chg.store.RowStore`, checked once), the validation
    α, and the history of epoch values that :meth:`values` averages (the maths: :func:`chg.factored.epoch_values`).

    An epoch that an error cuts short (an out-of-memory error, Ctrl-C) leaves its rows in the valuer: call
    :meth:`discard_epoch` in an ``except`` around the epoch (the loop in the module docstring), so that a rerun of the
    epoch values each row once, with its new factors; otherwise the rows of the cut-short run stay, enter the next
    :meth:`end_epoch` beside the rerun's (a :class:`RepeatedRowsWarning` there names how many), and a row the rerun did
    not reach is valued with their stale factors. The valuer records its head's signature (C outputs, D features,
    bias) at the first epoch, also in :meth:`state_dict`: a later epoch of another head is an error (values of
    different heads are not averaged).

    Args:
        n: number of training points (indices run over ``0..n-1``); a Python or NumPy integer ≥ 1.
        utility, gradient, per_class, alpha: see the module docstring and :class:`chg.Options`.
        partial_epochs: False (default): an epoch in which some row was not added is an error at
            :meth:`end_epoch`; True: the rows seen are the epoch's game, with a warning naming how many were not.
        skip_epochs: the first k ≥ 0 epochs left out of :meth:`values` (0: every epoch, Algorithm 1; still kept).
        weight, label_smoothing: the training loss's class weights (C,) and smoothing in [0, 1] as
            ``F.cross_entropy`` takes them; rows are valued under that loss (default plain cross-entropy).
        storage_dtype: the rows' storage dtype (float32; bfloat16/float16 halve the memory, eq. (3) still runs in
            float32/64). offload: None | "host" | "disk" (memory-mapped in ``directory``; :mod:`chg.store`).
        unit: None (a classifier) or "sequence" | "token": a language model's rows — the valuer is then a
            :class:`chg.sequence.SequenceValuer` with the same verbs (:func:`chg.sequence.sequence_valuer`).
    Raises:
        TypeError: ``n`` or ``skip_epochs`` not an integer, an option of the wrong type.
        ValueError: ``n`` < 1, ``skip_epochs`` < 0, an unknown option value, storage dtype or offload.
    """

    def __new__(cls, *args, unit: Optional[str] = None, **kwargs):
        if unit is None:
            return super().__new__(cls)
        from .sequence import sequence_valuer
        return sequence_valuer(*args, unit=unit, **kwargs)

    def __init__(self, n: int, utility: str = "chg", gradient: str = "full", per_class: bool = False,
                 alpha: str = "train", partial_epochs: bool = False, skip_epochs: int = 0, weight=None,
                 label_smoothing: float = 0.0, storage_dtype: Optional[torch.dtype] = None,
                 offload: Optional[str] = None, directory=None, unit: Optional[str] = None):
        self.n = count(n, "EpochValuer: n", 1, " (the number of training points)")
        self.options = Options(utility=utility, gradient=gradient, alpha=alpha, per_class=per_class)
        self.partial_epochs = flag(partial_epochs, "partial_epochs")
        self.skip_epochs = count(skip_epochs, "skip_epochs", 0, SKIP_MEANING)
        self.weight, self.label_smoothing = weight, label_smoothing
        check_loss(None, weight, label_smoothing)  # type and range, C comes later
        self.store = RowStore(self.n, storage_dtype, offload, directory)  # validates them now
        self.epoch_values: list = []  # (n,) float64 per finished epoch, NaN where a point was not seen
        self._valid: dict = {}  # group -> GroupStats of the validation points (alpha="valid")
        self._head = None  # weak references (model, output layer) of the last check_head
        self._shape: Optional[tuple] = None  # (C, D, bias) of the head the ended epochs were valued with

    utility, gradient, per_class, alpha = (property(lambda self, k=k: getattr(self.options, k), doc=f"Options.{k}")
                                           for k in ("utility", "gradient", "per_class", "alpha"))
    epochs = property(lambda self: len(self.epoch_values), doc="the epochs ended so far")

    def check_head(self, model: nn.Module, layer: nn.Linear) -> None:
        """Refuse a head switched inside one model between epochs (timm's ``reset_classifier``); another model object
        (a checkpoint per epoch) is a new θ. Called by :func:`separate_pass`, the loop and the trainer callbacks.

        Args:
            model: the network valued. layer: its output ``nn.Linear`` this epoch (``LastLayerTap.layer``).
        Raises:
            ValueError: the model of the last check with another output layer; an output layer of another signature
                (C outputs, D features, bias) than the epochs so far (also of a checkpoint loaded:
                :func:`check_same_head`).
        """
        check_same_head(self._shape, (layer.out_features, layer.in_features, layer.bias is not None),
                        f"{type(model).__name__}'s output layer ({layer})", "EpochValuer")
        last, self._head = self._head, (weakref.ref(model), weakref.ref(layer))  # weak: nothing kept alive
        if last is not None and last[0]() is model and last[1]() is not layer:
            self._head = last
            raise ValueError(f"the output layer of this {type(model).__name__} changed since the last epoch valued (a "
                             f"new {type(layer).__name__}{tuple(layer.weight.shape)}, e.g. after timm's "
                             "reset_classifier or a reassigned head): values of different heads are not averaged. "
                             "Start a new EpochValuer (and a new LastLayerTap) for the new head")

    def discard_epoch(self) -> int:
        """Drop the epoch under way: the rows and validation rows added since the last :meth:`end_epoch` (or
        :meth:`load_state_dict`). Call it when an error cuts an epoch short, before the epoch is run again (see the
        class docstring); the ended epochs are kept.

        Returns:
            the number of rows dropped (0: no epoch was under way).
        """
        dropped = self.store.size
        self.store.reset()
        self._valid = {}
        return dropped

    def add(self, indices, factors: Factors, labels=None) -> None:
        """Record the factors of training rows for this epoch (Algorithm 1 line 3; a row added again replaces its
        earlier factors: it is one player, and :meth:`end_epoch` warns). Index ranges are checked at
        :meth:`end_epoch`.

        Args:
            indices: (B,) row indices in [0, n) (tensor, array or list). factors: the rows'
                :class:`chg.lastlayer.Factors`. labels: (B,) integer labels, needed if ``per_class``.
        Raises:
            ValueError: sizes that differ, non-integer indices or labels, labels missing with ``per_class``, a
                change of head (C, D or bias) within the epoch or since the first epoch, or a valuer built with
                ``weight`` or ``label_smoothing`` (factors carry a loss and error made elsewhere, which the valuer
                cannot check against its loss: give it logits with :meth:`add_logits`).
        """
        if self.weight is not None or self.label_smoothing:
            raise ValueError("add: this EpochValuer values the loss with class weights / label smoothing, but factors "
                             "carry a loss and error made elsewhere (tap.factors makes plain cross-entropy's), which "
                             "it cannot check: give it the logits with add_logits(indices, logits, targets, feat, "
                             "bias), or pass factors of your own loss to an EpochValuer built without weight and "
                             "label_smoothing")
        if self.per_class and labels is None:
            raise ValueError("add: per_class=True needs the labels of the batch")
        dev, B = factors.err.device, factors.err.shape[0]
        lab = (torch.full((B,), -1, dtype=torch.int64, device=dev) if labels is None
               else int_tensor(labels, "add: labels", dev))
        if lab.shape[0] != B:
            raise ValueError(f"add: {lab.shape[0]} labels for {B} rows")
        _append(self, "add", indices, lab, factors.err, factors.feat, getattr(factors, "bias", True),
                     factors.loss.detach())

    def add_logits(self, indices, logits: torch.Tensor, targets: torch.Tensor, feat: torch.Tensor,
                   bias: bool = True) -> None:
        """Ride-along's step: keep the rows' logits, targets and features (slice copies into the epoch's store, no
        host-device synchronisation). :meth:`end_epoch` makes their loss and error (Theorem 1's :math:`l_i`,
        :math:`e_i` under the valuer's loss) in place of the logits — the values of ``add(indices,
        factors_from_logits(...), targets)`` — and checks ranges and NaN/Inf there, naming the batch.

        Args:
            indices: (B,) row indices in [0, n): an integer tensor, array or list.
            logits: (B, C) floating (its graph is not kept). targets: (B,) integer labels in [0, C) (0/1 for one
                logit; bool is 0/1): a tensor, array or list. feat: (B, D) floating. bias: a bool, whether the output
                layer has a bias (``LastLayerTap.bias``).
        Raises:
            ValueError: sizes that differ, non-integer indices, targets of a wrong dtype or shape, or a change of
                head (C, D or bias) within the epoch or since the first epoch (values of different heads are not
                averaged).
            TypeError: a ``bias`` that is not a bool (e.g. the layer's bias tensor).
        """
        _add_logits(self, "add_logits", indices, logits, targets, feat, bias)

    def add_validation(self, factors: Factors, labels=None) -> None:
        """Add validation rows to this epoch's α (``alpha="valid"``): α = mean of l_i g_i over them (per class).

        Args:
            factors: the rows' :class:`chg.lastlayer.Factors`. labels: (B,) integer labels, needed if ``per_class``.
        Raises:
            ValueError: a valuer with alpha="train", labels missing with ``per_class``, gradient="bias" without bias.
        """
        if self.alpha != "valid":
            raise ValueError("add_validation: this valuer was built with alpha='train'; use alpha='valid'")
        if self.per_class and labels is None:
            raise ValueError("add_validation: per_class=True needs the labels of the validation batch")
        keys = int_tensor(labels, "add_validation: labels") if self.per_class else None
        for g, st in stats_by_group(factors, self.options, keys).items():
            self._valid[g] = st + self._valid[g] if g in self._valid else st

    def value_epoch(self, model: nn.Module, loader, valid_loader=None, **kw) -> torch.Tensor:
        """Algorithm 1's separate pass for this epoch: ``separate_pass(self, model, loader, valid_loader, **kw)``.

        Args:
            model, loader, valid_loader, **kw: as :func:`separate_pass` (``layer``, ``output``, ``progress``; what
                ``loader`` may yield and which element is read as each row's index is said there).
        Returns:
            the epoch's values (n,) float64, as :meth:`end_epoch`.
        Raises:
            ValueError: as :func:`separate_pass` (its messages name ``value_epoch``).
        """
        kw.setdefault("caller", "value_epoch")
        return separate_pass(self, model, loader, valid_loader, **kw)

    def end_epoch(self) -> torch.Tensor:
        """Eq. (3) for every row of this epoch from the whole epoch's statistics (Algorithm 1, lines 4–6:
        :func:`chg.factored.epoch_values`), after checking the epoch's rows once.

        A row added more than once this epoch (on this process) counts once, with its last factors, and is a
        :class:`RepeatedRowsWarning` naming how many and the likely causes. Under ``torch.distributed`` every rank
        calls it (a collective), also one that added no row; an error found in one rank's rows is raised on every
        rank (the others say which rank).

        Returns:
            the epoch's values (n,) float64 on the CPU (NaN only for rows not seen, with partial_epochs).
        Raises:
            ValueError: no row added (by any rank); an index or target out of range, NaN/Inf logits (naming the
                batch); a row missing; per_class / alpha="valid" without labels / validation rows (of a class);
                under ``torch.distributed``, another rank's error, or ranks with different heads.
        """
        return self._end_epoch(None)

    def _end_epoch(self, caller: Optional[str]) -> torch.Tensor:
        """:meth:`end_epoch`; ``caller``: the verb whose separate pass added the rows (its messages name it and each
        row of the data), or None (ride-along: the verbs and batches of the user's loop)."""
        ddp = is_distributed()  # then the checks below are made by every rank together (_agree)
        if self.store.size == 0 and not ddp:
            raise ValueError(f"{caller or 'end_epoch'}: no training rows were added this epoch"
                             + (" (the loader gave no batch)" if caller else ""))
        try:  # whatever is raised, the epoch's rows go: the next epoch starts empty (none of them play in it)
            if self.alpha == "valid" and not self._valid and not ddp:
                raise ValueError("end_epoch: alpha='valid' but no validation rows were added (add_validation); "
                                 "this epoch's rows are dropped")
            self.epoch_values.append(_epoch_game(self, caller))
        finally:
            self.discard_epoch()
        return self.epoch_values[-1]

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume after a finished epoch.

        Returns:
            a dict of ``n``, ``epoch_values``, ``skip_epochs``, ``options``, ``loss`` (class weights as a list or
            None, label smoothing) and ``head`` (the head's ``(C, D, bias)``, None before the first epoch)
            (``torch.load`` reads it weights-only).
        """
        return {"n": self.n, "epoch_values": [v.clone() for v in self.epoch_values], "skip_epochs": self.skip_epochs,
                "options": (self.utility, self.gradient, self.per_class, self.alpha),
                "loss": loss_record(self.weight, self.label_smoothing), "head": self._shape}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict` (also of 0.2.0), dropping the current epoch's rows. The head recorded in
        it is the one later epochs must have (a checkpoint without one, of 0.3.0 or before, records it at the next
        epoch).

        Args:
            state: a dict from :meth:`state_dict`.
        Raises:
            ValueError: it is of a valuer with another n, options, loss (class weights, label smoothing; a checkpoint
                without them is of plain cross-entropy) or skip_epochs; an epoch's values of another length than n.
        """
        self.epoch_values = check_state(state, self, (self.utility, self.gradient, self.per_class, self.alpha))
        self._shape = head_of(state)
        self.discard_epoch()

    def values(self, **meta) -> Values:
        """Algorithm 1's output: each point's value averaged over the epochs in which it was valued, after the first
        ``skip_epochs``, with the history (:class:`chg.Values`).

        Args:
            **meta: settings to keep with the values (JSON-ready), beside the valuer's options.
        Returns:
            :class:`chg.Values` (NaN for a point never valued).
        Raises:
            ValueError: no epoch ended yet, or only epochs among the first ``skip_epochs``.
        """
        if self.epochs == 0:
            raise ValueError("values: no epoch has ended yet (call end_epoch, or separate_pass)")
        if self.epochs <= self.skip_epochs:
            raise ValueError(f"values: {self.epochs} epoch(s) ended, all among the first skip_epochs="
                             f"{self.skip_epochs} left out of the average; train at least {self.skip_epochs + 1} "
                             "epochs or lower skip_epochs")
        info = {"utility": self.utility, "gradient": self.gradient, "per_class": self.per_class,
                "alpha": self.alpha, "label_smoothing": float(self.label_smoothing),
                "weight": None if self.weight is None else [float(w) for w in self.weight], **meta}
        return Values(torch.stack(self.epoch_values).numpy(), self.skip_epochs, meta=info)


def _add_logits(valuer: "EpochValuer", what: str, indices, logits, targets, feat, bias) -> None:
    """:meth:`EpochValuer.add_logits` for the verb ``what`` (``"add_logits"``, or the separate pass's caller)."""
    check_logits(logits)
    if not isinstance(feat, torch.Tensor) or feat.ndim != 2:
        raise ValueError(f"{what}: feat must be a (B, D) tensor, got {getattr(feat, 'shape', type(feat))}")
    targets = as_targets(targets, logits.device)  # a list, array or Series: as the indices are taken
    _append(valuer, what, indices, check_targets(logits, targets, defer=True), logits, feat, bias)


def _append(valuer: "EpochValuer", what: str, indices, targets, z, feat, bias, loss=None) -> None:
    """One batch into the valuer's store, after the checks that need no value from the device (no sync)."""
    check_bias(bias, what)
    idx = int_tensor(indices, f"{what}: indices", z.device)
    if valuer.store.size == 0 and z.ndim == 2 and feat.ndim == 2:  # the epoch's first batch: the head of the epochs
        check_same_head(valuer._shape, (z.shape[1], feat.shape[1], bool(bias)), what, "EpochValuer")
    if valuer.store.size == 0 and (valuer.weight is not None or valuer.label_smoothing):  # C is known now: the
        try:  # loss's class weights checked at the epoch's first batch, not after its last
            check_loss(z.shape[1], valuer.weight, valuer.label_smoothing)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
    if not bias and valuer.gradient == "bias":
        raise ValueError("gradient='bias' values the bias gradient, but the output layer has no bias; use "
                         "gradient='full' (the weight gradient e ⊗ h)")
    try:
        with torch.no_grad():  # copies into the store, never recorded by autograd (no detach per tensor)
            valuer.store.append(idx, targets, z, feat, bias, loss)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def _check_rows(valuer: EpochValuer, caller: Optional[str]) -> None:
    """This process's rows checked once (:func:`chg.store.check_rows`: index and target ranges), the labels that
    per_class needs, and logits made loss and error (:func:`chg.store.materialise`: NaN/Inf logits)."""
    st = valuer.store
    check_rows(st, valuer.n, caller=caller)
    if valuer.per_class and bool((st.target[:st.size] < 0).any()):
        raise ValueError(f"{caller or 'end_epoch'}: per_class=True but some rows were added without labels")
    materialise(st, loss_and_error, valuer.weight, valuer.label_smoothing, caller=caller)


def _agree(valuer: EpochValuer, verb: str, caller: Optional[str]) -> tuple:
    """Under torch.distributed, before any collective of the game: each rank checks its rows (and that they are
    finite: an error found inside the game would leave the other ranks waiting), then every rank learns what each
    found (:func:`chg.distributed.every_rank`) and all raise together — the rank whose rows failed its own error, the
    others one naming it. Returns ``(head, note)``: the ``(C, D, bias)`` of the ranks' rows, and what to say of the
    ranks that added none in a message on missing rows ("" when every rank added some)."""
    st, error = valuer.store, None
    if st.size:
        try:
            _check_rows(valuer, caller)
            where = nonfinite_row(st)
            if where is not None:
                raise ValueError(f"{verb}: the rows of this epoch must be finite, but there is {where}")
        except ValueError as e:
            error = e
    head = (st.z.shape[1], st.feat.shape[1], bool(st.bias)) if st.size else (0, 0, False)
    valid = valuer.alpha != "valid" or bool(valuer._valid)
    table = every_rank([st.size, *head, error is None, valid])  # (world, 6)
    world = table.shape[0]
    failed = (table[:, 4] == 0).nonzero().squeeze(1).tolist()
    if failed:
        if error is not None:
            raise error
        raise ValueError(f"{verb}: the rows of rank(s) {failed} of {world} failed the epoch's checks (the error on "
                         "that rank says why); the epoch is dropped on every rank")
    if int(table[:, 0].sum()) == 0:
        raise ValueError(f"{verb}: no training rows were added this epoch, on any of the {world} ranks"
                         + (" (the loader gave no batch)" if caller else ""))
    novalid = (table[:, 5] == 0).nonzero().squeeze(1).tolist()
    if novalid:
        raise ValueError(f"{verb}: alpha='valid' but rank(s) {novalid} of {world} added no validation rows "
                         "(add_validation) this epoch; every rank needs some. This epoch's rows are dropped")
    heads = sorted({tuple(r[1:4]) for r in table.tolist() if r[0] > 0})
    if len(heads) > 1:
        raise ValueError(f"{verb}: the ranks added rows of different heads ((C, D, bias): {heads}); every rank must "
                         "train the same model")
    C, D, bias = heads[0]
    empty = (table[:, 0] == 0).nonzero().squeeze(1).tolist()
    return (C, D, bool(bias)), (f" (rank(s) {empty} of {world} added none)" if empty else "")


def _epoch_game(valuer: EpochValuer, caller: Optional[str] = None) -> torch.Tensor:
    """The epoch's game from the valuer's store: rows checked and made factors once (:func:`chg.store.check_rows`,
    :func:`chg.store.materialise`; under torch.distributed by every rank together, :func:`_agree`), each row one
    player (:func:`chg.store.players`, across ranks too), eq. (3) by :func:`chg.factored.epoch_values`, values
    gathered to every rank. Records the head's signature at the first epoch. Returns (n,) float64 on the CPU.
    ``caller``: as :meth:`EpochValuer._end_epoch` (the verb that messages name)."""
    st, n, verb = valuer.store, valuer.n, caller or "end_epoch"
    ddp = is_distributed()
    if ddp:
        head, note = _agree(valuer, verb, caller)
    else:
        _check_rows(valuer, caller)
        head, note = (st.z.shape[1], st.feat.shape[1], bool(st.bias)), ""
    check_same_head(valuer._shape, head, verb, "EpochValuer")
    device = st.z.device if st.size else collective_device()
    pos, valued, repeated = players(st, n, ddp, device)
    check_complete(valued, valuer.partial_epochs, verb, "EpochValuer", note, stacklevel=5)
    if repeated:
        _warn_repeated(st, n, repeated, verb)
    if st.size:
        whole = pos.numel() == st.size  # every stored row plays: slices, no gather
        take = (lambda t: t[:st.size]) if whole else (lambda t: t[pos])
        fac = Factors(take(st.loss), take(st.z), take(st.feat), st.bias)
        rows, targets, offset = take(st.idx), take(st.target), st.offset
    else:  # a rank whose shard was empty (torch.distributed): no player here, but its part in every collective
        C, D, bias = head
        fac = Factors(torch.zeros(0, device=device), torch.zeros(0, C, device=device),
                      torch.zeros(0, D, device=device), bias)
        rows = targets = torch.zeros(0, dtype=torch.int64, device=device)
        offset = torch.zeros(D, device=device)
    groups = targets if valuer.per_class else None
    ids = group_ids(targets if valuer.per_class else targets[:0], valuer.per_class, ddp, device)
    reduce = GroupStats.all_reduce if ddp else None
    alpha = alpha_from_validation(valuer._valid, ids, reduce) if valuer.alpha == "valid" else None
    try:
        v = epoch_values(fac, valuer.options, groups, alpha, reduce, ids, feature_offset=offset)
    except ValueError as e:
        where = nonfinite_row(st)
        if where is None:
            raise
        raise ValueError(f"{verb}: {e} ({where})") from None
    vals = torch.full((n,), float("nan"), dtype=torch.float64)
    vals[rows.cpu()] = v.cpu()
    valuer._shape = head
    return all_gather_values(vals, device) if ddp else vals


def _warn_repeated(st, n: int, repeated: int, verb: str) -> None:
    """The :class:`RepeatedRowsWarning` of an epoch in which rows were added more than once on this process."""
    counts = torch.bincount(st.idx[:st.size], minlength=n)  # (n,)
    twice = (counts > 1).nonzero().squeeze(1)
    where = "EpochValuer.end_epoch" if verb == "end_epoch" else verb
    warnings.warn(f"{where}: {twice.numel()} row(s) were added more than once this epoch on this process ({repeated} "
                  f"addition(s) of a row already added; e.g. rows {twice[:5].tolist()}): each counts once, with the "
                  "factors of its last addition. Likely causes: the epoch was run again after an error without "
                  "valuer.discard_epoch() (the rows of the cut-short run stay, and a row the rerun did not reach "
                  "keeps their stale factors: call discard_epoch() in an except around the epoch), or a sampler or "
                  "data set that repeats rows (each batch must carry the indices of its own rows). Repeats that are "
                  "meant (a sampler padding a process's shard): filter chg.valuation.RepeatedRowsWarning",
                  RepeatedRowsWarning, stacklevel=5)


@torch.no_grad()
def separate_pass(valuer: EpochValuer, model: nn.Module, loader, valid_loader=None,
                  layer: Optional[nn.Linear] = None, output: str = "logits",
                  progress: Optional[bool] = None, caller: str = "separate_pass") -> torch.Tensor:
    """Algorithm 1 exactly: one no-grad forward pass over the training set at the current θ, every row handed to
    ``valuer.add_logits`` (validation rows to ``add_validation``), then ``valuer.end_epoch()``.

    Which row of the data set each batch row is (what ``index`` is and where it is read):

    * a DataLoader over :class:`IndexedDataset` (also through ``torch.utils.data.Subset``) yields ``(x, y, index)``
      batches: ``index`` is each row's position in the data set;
    * a plain list (or other iterable that is not a DataLoader) of ``(x, y, index)`` batches, built by hand: ``index``
      as written;
    * dicts with an ``"index"`` entry (see :func:`chg.lastlayer.split_batch`): that entry;
    * otherwise a plain sequential DataLoader (no shuffling, no sampler) numbers its rows in order, 0, 1, 2, ...: of
      ``(x, y)`` batches, dicts without ``"index"`` — and ``(x, y, extra)`` batches of a data set of its own, whose
      third element is *not read*: it may be a record id or a sample weight, not known to be the row's position
      (:func:`chg.value_data` reads such a data set the same way, by position);
    * any other loader of batches without a known index (shuffled, a sampler over a subset, distributed) is an error
      that says to wrap the data set in :class:`IndexedDataset`.

    ``valid_loader`` yields ``(x, y[, ...])``; required when ``alpha="valid"``. The model runs in eval mode (dropout
    off, BatchNorm's running statistics used and left untouched) and its mode is restored afterwards.

    Args:
        valuer: the :class:`EpochValuer` (its loss, options and storage apply). model: the classifier. loader,
            valid_loader: see above. layer, output: as in :class:`chg.lastlayer.LastLayerTap`. progress: a bar over
            the batches: True | False | None (only on a terminal; :mod:`chg.progress`). caller: the name of the
            function the user called (``"value_epoch"``, ``"value_data"``), for messages, which then name it and
            each row of the data instead of the valuer's verbs and the batches.
    Returns:
        the epoch's values (n,) float64 on the CPU (:meth:`EpochValuer.end_epoch`).
    Raises:
        ValueError: ``alpha="valid"`` without ``valid_loader``; a loader whose batches carry no known index and that
            is not plain sequential; and as :meth:`EpochValuer.add_logits` and :meth:`EpochValuer.end_epoch` (a
            target out of range names the data row and says to encode the labels as 0..C-1).
    """
    if valuer.alpha == "valid" and valid_loader is None:
        raise ValueError(f"{caller}: alpha='valid' needs valid_loader")
    was_training = model.training
    model.eval()
    try:
        tap = LastLayerTap(model, layer, output)
        valuer.check_head(model, tap.layer)
        device = model_device(model)
        known, sequential = carries_index(loader), sequential_loader(loader)
        with tap:
            offset = 0
            total = len(loader) if hasattr(loader, "__len__") else None
            for batch in progress_bar(loader, total=total, unit="batch", desc="separate_pass", enabled=progress):
                inputs, y, idx = split_batch(batch)
                if idx is not None and not known and not isinstance(batch, Mapping):
                    if not sequential:
                        raise ValueError(unknown_index(caller, loader))
                    idx = None  # a sequential loader: rows numbered in order, the third element not read
                logits, feat = tap.read(forward_batch(model, inputs, device))
                y = torch.as_tensor(y).to(device)
                if idx is None:
                    if not sequential:
                        raise ValueError(f"{caller}: a loader without indices must be a plain sequential "
                                         "DataLoader (rows numbered in order); with any other sampler (shuffled, "
                                         "subset, distributed, ...) wrap the dataset in IndexedDataset so batches "
                                         "carry each row's index")
                    idx = torch.arange(offset, offset + len(y))
                offset += len(y)
                _add_logits(valuer, caller, idx, logits, y, feat, tap.bias)
            if valuer.alpha == "valid":
                add_validation_pass(valuer, model, valid_loader, tap)
    except BaseException:  # an error (or Ctrl-C) cut the pass short: its rows go, a rerun values each row once
        valuer.discard_epoch()
        raise
    finally:
        model.train(was_training)
    return valuer._end_epoch(caller)


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
        valuer.add_validation(Factors(loss, err, upcast(feat), tap.bias), y)


