"""What the trainer callbacks share (no optional dependency): the row index a data set carries, the valuer they
fill, and the check that the loss trained on is the loss valued (:class:`LossCheck`).

**How rows are indexed.** A callback values row *i* of the training set, so every training batch must say which rows
it holds, whatever the sampler did to the order (shuffling, ``DistributedSampler`` shards and padding, length
grouping, a resumed loader). Reconstructing the order from the sampler breaks with prefetching, workers and skipped
batches; so the index travels *with the data*: :class:`IndexedRows` (``callback.index(train_set)``) appends each
item's position — a ``"chg_index"`` entry to a dict item, a last element to a tuple item — and the callback takes it
out again before the model or the user's ``training_step`` sees the batch.
"""
from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Mapping
from typing import Optional

import torch
from torch.utils.data import Dataset, IterableDataset

from ..lastlayer import check_loss, check_targets, per_sample_loss
from ..renames import unexpected_keyword
from ..valuation import EpochValuer, RepeatedRowsWarning
from ..values import Values

__all__ = ["INDEX_KEY", "IndexedRows", "make_valuer", "check_settings", "LossCheck", "end_epoch",
           "inconclusive_warning", "head_error"]

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

    carries_index = True  # a tuple item's last element is its position (chg.lastlayer.carries_index)

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


_HALF = (torch.float16, torch.bfloat16)


def _mean_loss_grad(z: torch.Tensor, y: torch.Tensor, weight, label_smoothing: float) -> torch.Tensor:
    """∂/∂z of the batch's mean training loss (:func:`chg.lastlayer.per_sample_loss`, reduction "mean"), float64."""
    zz = z.detach().double().requires_grad_(True)
    with torch.enable_grad():
        loss = per_sample_loss(zz, y, weight, label_smoothing, reduction="mean")
    return torch.autograd.grad(loss, zz)[0]


def _pooled_grad(grad: torch.Tensor, z: torch.Tensor) -> Optional[tuple]:
    """(∂L/∂z_i, z_i) (B, C) at each row's pooled position from the gradient (B, T, C) at a head run at every
    position: the one position per row the loss reached; None when a row's loss reached several positions or none."""
    reached = grad.detach().abs().sum(2) > 0  # (B, T)
    if not bool((reached.sum(1) == 1).all()):
        return None
    rows, pos = torch.arange(z.shape[0], device=z.device), reached.to(torch.int8).argmax(1)
    return grad[rows, pos], z[rows, pos]


def _off_line(a: torch.Tensor, b: torch.Tensor) -> tuple:
    """(r, c): c the least-squares scale of ``b`` onto ``a`` and r = ‖a − c·b‖ / ‖a‖ (0: a ∝ b; 1: orthogonal)."""
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return (0.0 if na == nb else 1.0), 0.0
    c = float((a * b).sum()) / nb ** 2
    return float((a - c * b).norm()) / na, c


class LossCheck:
    r"""The check that the loss the trainer optimises is the loss the callback values, made on what that loss does
    to the output layer: the gradient :math:`\partial L/\partial z` that reaches the logits in the backward pass
    (a tensor hook, however the loss was computed: the model's own, a ``compute_loss_func``, a ``compute_loss``
    or ``training_step`` of your own). It must be a positive multiple of the gradient of the batch's mean
    cross-entropy under the callback's ``weight`` and ``label_smoothing`` (binary cross-entropy for one logit) —
    any multiple, so gradient accumulation, ``num_items_in_batch`` normalisation, loss scaling and terms that do not
    involve the logits (weight decay, an auxiliary head) all pass.

    A batch can be *inconclusive*: at uniform softmax outputs (an output layer initialised at zero) every label
    smoothing gives the same gradient direction, and a batch pins the class weights of the classes in it only. So
    batches are checked until label smoothing 0.05 more or less would have left the expected line by 3× the tolerance
    in one batch, and every class was in a batch (beside another) where other class weights would have — then never
    again (no per-batch cost after that). In half precision (tolerance 2e-2) small smoothing cannot be told apart:
    the check may run to the end of training and then warn.

    Args:
        weight, label_smoothing: the valued loss (as :class:`chg.EpochValuer`). what: how to name the training loss
            in messages.
    """

    def __init__(self, weight=None, label_smoothing: float = 0.0, what: str = "the training loss", on_error=None):
        self.weight, self.label_smoothing, self.what = weight, float(label_smoothing), what
        self.on_error = on_error  # called before a check raises (the callback removes its hooks from the model)
        self.done = False  # conclusive: no more checks
        self.checked = 0  # batches whose gradient was checked
        self.classes: set = set()  # classes seen in a matching batch that told class weights apart
        self.smoothing_settled = False  # a matching batch told label smoothing apart
        self.num_classes: Optional[int] = None
        self.half = False  # a checked gradient was in half precision
        self._pending: Optional[dict] = None

    def _raise(self, message: str) -> None:
        if self.on_error is not None:
            self.on_error()
        raise ValueError(message)

    def watch(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Check the gradient that will reach ``logits`` in this step's backward pass (a one-shot tensor hook).

        Args:
            logits: (B, C) the output layer's output, in the autograd graph (or (B, T, C) of a head at every
                position whose output the model pools to one position per row: each row's is the position its
                gradient reaches). targets: (B,) the batch's labels.
        Raises:
            ValueError: the previous watched batch's logits got no gradient (:meth:`confirm`); during the backward
                pass, a gradient that is not the valued loss's (:meth:`check`).
        """
        if self.done or not logits.requires_grad:
            return
        self.confirm()
        z, y = logits.detach(), targets.detach().to(logits.device)
        pending = {"fired": False}

        def hook(grad):
            if not pending["fired"]:
                pending["fired"] = True
                if self._pending is pending:
                    self._pending = None
                if z.ndim == 3:  # (B, T, C): a head at every position, the model pooling one position per row
                    pooled = _pooled_grad(grad, z)
                    if pooled is not None:
                        self.done = self.done or self.check(*pooled, y)
                else:
                    self.done = self.done or self.check(grad, z, y)
            return None

        logits.register_hook(hook)
        self._pending = pending

    def confirm(self) -> None:
        """Raise when the logits watched last got no gradient in the backward pass that followed.

        Raises:
            ValueError: the training loss does not depend on the hooked layer's output.
        """
        if self._pending is not None and not self._pending["fired"]:
            self._pending = None
            self._raise(f"{self.what} did not backpropagate through the output layer's logits: CHG values the loss "
                        "of the output nn.Linear's logits. If another nn.Linear is the output layer, pass "
                        "CHGCallback(layer=<the output nn.Linear>)")

    def _loss_name(self, C: int, weight, smoothing: float) -> str:
        if C == 1:
            return "binary cross-entropy"
        return "cross-entropy" + ("" if weight is None else f" with class weights {list(map(float, weight))}") + \
            ("" if not smoothing else f" with label smoothing {smoothing:g}")

    def check(self, grad: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> bool:
        """One batch's check.

        Args:
            grad: (B, C) ∂L/∂z of the loss trained on. logits: (B, C) z. targets: (B,) labels.
        Returns:
            True when the batch was conclusive (and matched), False when it could not tell (or its gradient was not
            finite: a step a loss scaler skips).
        Raises:
            ValueError: the gradient is not on the line of the valued loss's gradient, naming the loss the callback
                values, the plain loss when that one matches, and what to do.
        """
        g = grad.detach().double()
        if not bool(torch.isfinite(g).all()):
            return False
        self.checked += 1
        C = self.num_classes = logits.shape[1]
        self.half = self.half or logits.dtype in _HALF or grad.dtype in _HALF
        targets = check_targets(logits, targets)  # (B,) int64 (a one-logit head's (B, 1) or float 0/1 too)
        w, s = check_loss(C, self.weight, self.label_smoothing), self.label_smoothing  # (C,) float64 or None
        want = _mean_loss_grad(logits, targets, w, s)
        rtol = 2e-2 if logits.dtype in _HALF or grad.dtype in _HALF else 1e-4
        off, c = _off_line(g, want)
        if off > rtol or c < 0:
            valued = self._loss_name(C, w, s)
            hint = ""
            if C > 1 and (w is not None or s):
                plain, cp = _off_line(g, _mean_loss_grad(logits, targets, None, 0.0))
                if plain <= rtol and cp > 0:
                    hint = (" The gradient is that of plain cross-entropy (no class weights, no label smoothing): "
                            "drop weight= / label_smoothing= from CHGCallback, or train with the loss you told it.")
            self._raise(
                f"{self.what} is not the mean {valued} of the output layer's logits: its gradient at the logits is "
                f"off that loss's by {off:.3g} (relative, after the best scale; tolerance {rtol:g}).{hint} CHG values "
                "the loss the callback is told of: class weights and label smoothing your loss uses go to "
                "CHGCallback(weight=..., label_smoothing=...); a one-logit head is valued with binary cross-entropy. "
                "A regression or multi-label head, logits changed after the output layer (a temperature), a penalty "
                "on the logits or another loss cannot be valued (CHGCallback(check_loss=False) skips this check, "
                "and the values are then of the told loss, not of yours)")
        margin = 3 * rtol  # other losses must leave the line by this much for the batch to tell them apart
        if C == 1:  # the one alternative of a one-logit head: squared error (a regression head)
            return _off_line(2 * (logits.detach().double()[:, 0] - targets.double())[:, None], want)[0] > margin
        other_s = _mean_loss_grad(logits, targets, w, s + 0.05 if s <= 0.5 else s - 0.05)  # 0.05 more or less
        self.smoothing_settled = self.smoothing_settled or _off_line(other_s, want)[0] > margin
        # class weights: a batch pins the weights' ratios of the classes in it only (a class absent from every
        # conclusive batch could carry any weight), so the check goes on until every class was in such a batch
        present = torch.unique(targets)
        base = torch.ones(C, dtype=torch.float64) if w is None else w
        other_w = _mean_loss_grad(logits, targets, base + base.mean() * torch.arange(1, C + 1), s)
        if present.numel() >= 2 and _off_line(other_w, want)[0] > margin:
            self.classes.update(present.tolist())
        return self.smoothing_settled and len(self.classes) == C


def inconclusive_warning(check: Optional[LossCheck]) -> None:
    """At the end of training: a warning when the loss check ran but no batch could settle it.

    Args:
        check: the callback's :class:`LossCheck`, or None (``check_loss=False``).
    """
    if check is None or check.done:
        return
    valued = "the loss the callback was told of (weight=, label_smoothing=)"
    if check.checked:
        parts = []
        if not check.smoothing_settled:
            parts.append("label smoothing (no batch told it apart: near-uniform softmax outputs, e.g. an output "
                         "layer at zero that did not train" + (", or gradients in half precision, too coarse to tell "
                                                               "smoothing apart" if check.half else "") + ")")
        missing = sorted(set(range(check.num_classes or 0)) - check.classes) if (check.num_classes or 0) > 1 else []
        if missing:
            parts.append(f"the class weights of classes {missing[:10]}{' …' if len(missing) > 10 else ''} (never in "
                         "a checked batch beside another class whose gradient told weights apart)")
        if not parts:  # a one-logit head
            parts.append("binary cross-entropy against squared error (no batch told them apart)")
        why = f"after {check.checked} training batches checked, these could not be settled: " + "; ".join(parts)
    else:
        why = "no training batch's loss reached the output layer's logits with a finite gradient"
    warnings.warn(f"CHGCallback: the check of the training loss was inconclusive: {why}. The values are of {valued}; "
                  "make sure it is the loss you train on", stacklevel=3)


def end_epoch(valuer: EpochValuer, causes: str, repeats: bool = False) -> torch.Tensor:
    """:meth:`chg.EpochValuer.end_epoch` for a callback: an epoch that missed rows is an error that names the
    callback's setting (``CHGCallback(partial_epochs=True)``) and the trainer's settings that leave rows out.

    Args:
        valuer: the callback's valuer. causes: the trainer settings that drop rows, for the message.
        repeats: rows added twice on one process are expected (the trainer's sampler pads a shard with rows it
            already has): no :class:`chg.valuation.RepeatedRowsWarning`.
    Returns:
        the epoch's values, as :meth:`chg.EpochValuer.end_epoch`.
    Raises:
        ValueError: rows not added this epoch (without ``partial_epochs=True``), and as
            :meth:`chg.EpochValuer.end_epoch`.
    """
    try:
        with warnings.catch_warnings():
            if repeats:
                warnings.simplefilter("ignore", RepeatedRowsWarning)
            return valuer.end_epoch()
    except ValueError as e:
        found = re.search(r"\d+ of the \d+ rows were not added this epoch(?: \(e\.g\. rows \[[^\]]*\]\))?", str(e))
        if valuer.partial_epochs or found is None:
            raise
        raise ValueError(f"CHGCallback: {found.group(0)}: every row of the indexed training set must be trained on in "
                         f"each epoch ({causes} leave rows out). Train on every row, or pass "
                         "CHGCallback(partial_epochs=True) to value the rows each epoch saw") from None


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
