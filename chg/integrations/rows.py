"""What the trainer callbacks share (no optional dependency): the row index a data set carries, the valuer they
fill, and the one-time check that the loss trained on is the loss valued.

**How rows are indexed.** A callback values row *i* of the training set, so every training batch must say which rows
it holds, whatever the sampler did to the order (shuffling, ``DistributedSampler`` shards and padding, length
grouping, a resumed loader). Reconstructing the order from the sampler breaks with prefetching, workers and skipped
batches; so the index travels *with the data*: :class:`IndexedRows` (``callback.index(train_set)``) appends each
item's position — a ``"chg_index"`` entry to a dict item, a last element to a tuple item — and the callback takes it
out again before the model or the user's ``training_step`` sees the batch.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Optional

import torch
from torch.utils.data import Dataset, IterableDataset

from ..lastlayer import per_sample_loss
from ..renames import unexpected_keyword
from ..valuation import EpochValuer
from ..values import Values

__all__ = ["INDEX_KEY", "IndexedRows", "make_valuer", "check_settings", "check_training_loss", "head_error"]

INDEX_KEY = "chg_index"  # the entry a dict item gets (a name no model's forward takes)


class IndexedRows(Dataset):
    """A map-style data set whose items carry their own position: dict items get ``"chg_index": i`` (HuggingFace
    style), tuple / list items get ``i`` appended (``(x, y)`` → ``(x, y, i)``). Rows are fetched a batch at a time
    when the wrapped data set can (``__getitems__``, as HuggingFace ``datasets.Dataset`` has).

    Args:
        dataset: a map-style data set with ``__len__`` (a torch ``Dataset``, a HuggingFace ``datasets.Dataset``, a
            list) whose items are dicts or tuples / lists.
    Raises:
        TypeError: an iterable-style data set or one without ``__len__`` (its rows have no stable position; value
            it with a map-style copy).
        ValueError: (on reading an item) an item that is neither a dict nor a tuple / list, or a dict that already
            has ``"chg_index"``.
    """

    def __init__(self, dataset):
        if isinstance(dataset, IterableDataset) or not (hasattr(dataset, "__len__")
                                                        and hasattr(dataset, "__getitem__")):
            raise TypeError(f"a {type(dataset).__name__} has no stable row positions (iterable-style or no __len__); "
                            "CHG values row i of a map-style training set: pass one (a torch Dataset with __len__ "
                            "and __getitem__, or a HuggingFace datasets.Dataset)")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    @staticmethod
    def _item(item, i: int):
        if isinstance(item, Mapping):
            if INDEX_KEY in item:
                raise ValueError(f"item {i} already has a {INDEX_KEY!r} entry: index the data set once")
            return {**item, INDEX_KEY: i}
        if isinstance(item, (tuple, list)):
            return (*item, i)
        raise ValueError(f"item {i} is a {type(item).__name__}; CHG's callbacks need dict items (HuggingFace) or "
                         "tuples (x, y, ...) so that the row index can ride along")

    def __getitem__(self, i):
        return self._item(self.dataset[i], int(i))

    def __getitems__(self, rows: list) -> list:
        """Items of several rows at once (the DataLoader's batched fetch).

        Args:
            rows: a list of row positions.
        Returns:
            a list of items, each with its position (as :meth:`__getitem__`).
        """
        many = getattr(self.dataset, "__getitems__", None)
        items = many(rows) if many is not None else [self.dataset[i] for i in rows]
        if all(type(item) is tuple for item in items):  # the common case in one step: (x, y) + (i,)
            return [item + (int(i),) for item, i in zip(items, rows)]
        return [self._item(item, int(i)) for item, i in zip(items, rows)]


def check_settings(settings: dict, own: tuple) -> None:
    """A trainer callback's keywords checked when it is made: its own (``own``) and :class:`chg.EpochValuer`'s
    settings; an unknown one is Python's ``TypeError`` naming the closest keyword the callback takes.

    Args:
        settings: the keywords passed on to the valuer. own: the callback's own keyword names.
    Raises:
        TypeError: a keyword neither the callback nor the valuer takes, or ``n`` (the callback sets it from the
            indexed training set).
    """
    valuer = [p for p in inspect.signature(inspect.unwrap(EpochValuer.__init__)).parameters
              if p not in ("self", "n", "weight", "label_smoothing", "unit", "alpha")]
    takes = {*own, *valuer}
    for key in settings:
        if key == "n":
            raise TypeError("CHGCallback() got the keyword 'n': the callback counts the rows of the training set "
                            "it indexes (cb.index(train_set))")
        if key not in takes:
            raise unexpected_keyword("CHGCallback", key, takes)


def make_valuer(n: int, weight=None, label_smoothing: float = 0.0, **settings) -> EpochValuer:
    """The :class:`chg.EpochValuer` a callback fills: ``n`` rows, the training loss's class weights and smoothing,
    and the caller's valuer settings (``utility``, ``gradient``, ``per_class``, ``skip_epochs``, ``partial_epochs``,
    ``storage_dtype``, ``offload``, ``directory``).

    Args:
        n: the training set's rows. weight: (C,) class weights of the loss trained on, or None. label_smoothing:
            its smoothing in [0, 1]. settings: keywords of :class:`chg.EpochValuer`.
    Returns:
        a new :class:`chg.EpochValuer`.
    Raises:
        ValueError: ``alpha="valid"`` (the callbacks value against the training mean; a validation α needs a pass
            over a validation set: :func:`chg.value_data`), and as :class:`chg.EpochValuer`.
        TypeError: an unknown setting.
    """
    if settings.get("alpha", "train") != "train":
        raise ValueError("the trainer callbacks value with alpha='train' (α = the mean of l_i g_i over the training "
                         "rows); alpha='valid' needs a validation pass: use chg.value_data or EpochValuer.value_epoch")
    return EpochValuer(n, weight=weight, label_smoothing=label_smoothing, **settings)


def check_training_loss(reported: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, weight=None,
                        label_smoothing: float = 0.0, scales=(1.0,), what: str = "the training loss") -> None:
    """Check once that the loss the trainer optimised is the loss CHG values: the (weighted) mean cross-entropy of
    the output layer's logits — binary cross-entropy for one logit — under ``weight`` and ``label_smoothing``
    (:func:`chg.lastlayer.per_sample_loss`), up to one of the known reductions ``scales`` (e.g. 1/k with k
    accumulation steps). A regression head (MSE), a multi-label head, logits post-processed after the output layer
    or another loss give a clear error instead of values of a loss nobody trained.

    Args:
        reported: scalar tensor, the loss the trainer got. logits: (B, C) the output layer's output. targets: (B,)
            integer labels. weight, label_smoothing: the valued loss (as :class:`chg.EpochValuer`). scales: the
            factors the reported loss may carry relative to the batch mean. what: how to name the reported loss.
    Raises:
        ValueError: the reported loss matches none of ``mean · scale`` (relative tolerance 1e-4, 2e-2 for half
            precision logits).
    """
    z = logits.detach()
    with torch.no_grad():
        mean = float(per_sample_loss(z.float() if z.dtype in (torch.float16, torch.bfloat16) else z,
                                     targets.to(z.device), weight, label_smoothing, reduction="mean"))
    got = float(reported.detach().float())
    rtol = 2e-2 if z.dtype in (torch.float16, torch.bfloat16) else 1e-4
    if not any(math.isclose(got, mean * s, rel_tol=rtol, abs_tol=1e-7) for s in scales):
        loss = ("binary cross-entropy" if z.shape[1] == 1 else "cross-entropy") + \
            ("" if weight is None else " with class weights") + \
            ("" if not label_smoothing else f" with label smoothing {label_smoothing}")
        raise ValueError(f"{what} ({got:.6g}) is not the mean {loss} of the output layer's logits ({mean:.6g}): CHG "
                         "values the cross-entropy of the output nn.Linear's logits. A regression or multi-label "
                         "head, logits changed after that layer (a temperature) or another loss cannot be valued; "
                         "class weights or label smoothing go to the callback (weight=, label_smoothing=). If your "
                         "loss only adds terms that do not depend on the rows (weight decay, an auxiliary penalty), "
                         "pass check_loss=False")


def head_error(tap) -> Optional[str]:
    """Why the hooked output layer saw no forward pass, when the reason is that it left the model.

    Args:
        tap: the callback's :class:`chg.lastlayer.LastLayerTap`.
    Returns:
        a message when the tap's layer was replaced (:attr:`chg.lastlayer.LastLayerTap.replaced`: timm's
        ``reset_classifier``, a reassigned head), else None.
    """
    if not tap.replaced:
        return None
    return (f"the output layer {tap.name!r} was replaced during training (e.g. timm's model.reset_classifier or a new "
            "head assigned): values of different heads are not averaged. Start a new training run (and callback) "
            "for the new head")


class ValuesOfRun:
    """What both trainer callbacks give their user: :meth:`index` (the training set with each row's position riding
    along), :attr:`values` and :attr:`epoch_values`. A subclass sets ``SOURCE`` (the trainer's name) and ``FIT``
    (the call that trains), and keeps its :class:`chg.EpochValuer` in ``self.valuer`` (None before training)."""
    SOURCE, FIT = "a trainer", "train"

    def index(self, train_dataset) -> IndexedRows:
        """The training set with each row's position riding along (``Trainer(train_dataset=cb.index(ds))``).

        Args:
            train_dataset: a map-style data set of dict items or ``(x, y, ...)`` tuples.
        Returns:
            :class:`IndexedRows` over it; the callback values its ``len`` rows.
        Raises:
            TypeError: an iterable-style data set (see :class:`IndexedRows`).
        """
        self.dataset = IndexedRows(train_dataset)
        return self.dataset

    @property
    def values(self) -> Values:
        """Each row's value averaged over the epochs ended so far, with the per-epoch history.

        Returns:
            :class:`chg.Values` of the ``len(train_set)`` rows.
        Raises:
            ValueError: no epoch has ended yet.
        """
        if self.valuer is None or not self.valuer.epochs:
            raise ValueError(f"CHGCallback.values: no training epoch has ended yet (call trainer.{self.FIT}() first)")
        return self.valuer.values(source=self.SOURCE, mode="ride")

    @property
    def epoch_values(self) -> list:
        """The values of each ended epoch: a list of (n,) float64 tensors (NaN: a row not valued that epoch)."""
        return [] if self.valuer is None else list(self.valuer.epoch_values)
