r"""CHG Shapley values of every training row during ``transformers.Trainer.train()``, by ride-along.

Three lines in a Trainer script (docs/trainers.md)::

    cb = CHGCallback()                                                                        # 1
    trainer = Trainer(model, args, train_dataset=cb.index(train_set), callbacks=[cb])         # 2
    trainer.train()
    values = cb.values                                                                        # 3: a chg.Values

**What is valued.** Each training forward pass's logits :math:`z_i` and the features :math:`h_i` entering the
model's output ``nn.Linear`` (the last one registered, e.g. ``classifier``; or ``layer=``) are handed to
:meth:`chg.EpochValuer.add_logits` — the same path as the library's own ride-along loop — and each epoch ends with
:meth:`chg.EpochValuer.end_epoch`: eq. (3) with :math:`x_i = l_i\,e_i \otimes [h_i; 1]`, :math:`l_i` the
cross-entropy of row *i* (with ``TrainingArguments.label_smoothing_factor``, and the class ``weight=`` and
``label_smoothing=`` your loss uses; binary cross-entropy for one logit), at the parameters of the step that row
was trained in (ride-along: within an epoch rows are seen at different :math:`\theta`, in train mode). The loss the
Trainer actually optimises (the model's own, a ``compute_loss_func`` or a ``compute_loss`` override alike) is
checked by the gradient it brings to the logits in the backward pass (:class:`chg.integrations.rows.LossCheck`),
batch after batch until one is conclusive: a loss the callback was not told of is an error.

**How rows are indexed.** ``cb.index(train_set)`` appends a ``"chg_index"`` entry to each item
(:class:`chg.integrations.rows.IndexedRows`). At ``on_train_begin`` the callback wraps the training DataLoader's
collate function: it takes the entries out of the items *before* the Trainer's collator (so
``remove_unused_columns`` and any custom ``data_collator`` never see them), collates, and puts the rows' indices
(and a reference to the labels) back into the batch under ``"chg_index"``. A forward pre-hook on the model pops that
entry before ``forward`` runs; a forward hook reads the output layer through :class:`chg.LastLayerTap`. Labels are
taken from the collated batch, so a ``compute_loss_func`` or label smoothing (which pop ``"labels"`` before the
forward) are covered. Gradient accumulation: every micro-batch's forward pass adds its rows. Shuffling and any
sampler: the index travels with the row.

**Multi-process** (``torchrun`` / ``accelerate launch``): each process adds its shard's rows; :meth:`chg.EpochValuer.
end_epoch` all-reduces the statistics (a row padded onto two ranks is one player), and every rank holds all values.
``nn.DataParallel`` (several GPUs in one process) is refused: use ``torchrun``.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Optional

import torch
from torch import nn
from transformers import TrainerCallback

from ..distributed import is_distributed
from ..lastlayer import LastLayerTap
from .rows import (INDEX_KEY, IndexedRows, LossCheck, ValuesOfRun, check_settings, end_epoch, head_error,
                   inconclusive_warning, make_valuer)

__all__ = ["CHGCallback", "IndexCollator"]


class IndexCollator:
    """Wraps a training collate function: strips ``"chg_index"`` from each item, calls the wrapped collator (the
    Trainer's, which may drop unused columns), then stores ``{"index": (B,) int64, "labels": the batch's labels}``
    under ``"chg_index"`` in the collated batch. Picklable (DataLoader workers).

    Args:
        collate_fn: the DataLoader's collate function (it returns a dict-like batch with ``"labels"``).
    """

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, features: list):
        """Collate one batch, keeping the rows' indices.

        Args:
            features: the items of one batch (dicts with ``"chg_index"``).
        Returns:
            the wrapped collator's batch with ``"chg_index"`` added.
        Raises:
            ValueError: an item without ``"chg_index"`` (the data set was not passed through ``cb.index``), or a
                collated batch that is not a dict with ``"labels"``.
        """
        rows, stripped = [], []
        for f in features:
            if not isinstance(f, Mapping) or INDEX_KEY not in f:
                raise ValueError("a training item has no 'chg_index': pass the training set through the callback, "
                                 "Trainer(train_dataset=cb.index(train_set), callbacks=[cb])")
            rows.append(int(f[INDEX_KEY]))
            stripped.append({k: v for k, v in f.items() if k != INDEX_KEY})
        batch = self.collate_fn(stripped)
        if not isinstance(batch, Mapping) or "labels" not in batch:
            got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(f"the collated training batch has no 'labels' (got {got}); CHG values a classifier "
                             "trained on integer class labels under 'labels' (or 'label' in the items)")
        batch[INDEX_KEY] = {"index": torch.tensor(rows, dtype=torch.int64), "labels": batch["labels"]}
        return batch


def _base_loader(loader):
    """The torch DataLoader under accelerate's wrappers (``DataLoaderShard`` / ``DataLoaderDispatcher`` keep it as
    ``base_dataloader``): the object whose ``collate_fn`` an epoch's iterator uses."""
    while getattr(loader, "base_dataloader", None) is not None and loader.base_dataloader is not loader:
        loader = loader.base_dataloader
    return loader


_BINARY = ("for a one-logit binary head, train with binary cross-entropy: problem_type='multi_label_classification' "
           "with num_labels=1, or a compute_loss_func with F.binary_cross_entropy_with_logits")


def _check_own_loss(model: nn.Module) -> None:
    """The labels reach the model's forward, so the model's own loss is trained on: a HuggingFace head with one label
    and no problem_type (or 'regression') computes MSE there."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "num_labels", 2) == 1 and \
            getattr(config, "problem_type", None) in (None, "regression"):
        raise ValueError(f"{type(model).__name__} is a regression head (num_labels=1: its own loss is MSE): CHG values "
                         f"classifiers trained with cross-entropy; set num_labels >= 2, or {_BINARY}")


def _check_config(model: nn.Module) -> None:
    """A HuggingFace head CHG cannot value (regression, multi-label) is refused before training starts."""
    config = getattr(model, "config", None)
    if config is None:
        return
    kind = getattr(config, "problem_type", None)
    if kind == "regression":
        raise ValueError(f"{type(model).__name__} is a regression head (problem_type='regression', MSE loss): CHG "
                         "values classifiers trained with cross-entropy; set num_labels >= 2 and problem_type=None "
                         f"(single-label cross-entropy), or {_BINARY}")
    if kind == "multi_label_classification" and getattr(config, "num_labels", 2) > 1:  # one label: binary BCE
        raise ValueError(f"{type(model).__name__} is a multi-label head (problem_type='multi_label_classification', "
                         "one sigmoid per label): CHG values one softmax (or one sigmoid) per row")


class CHGCallback(ValuesOfRun, TrainerCallback):
    """``transformers.TrainerCallback`` that values every training row during ``Trainer.train()`` (ride-along; see
    the module docstring): ``cb.values`` is a :class:`chg.Values` after the first epoch (each row's value averaged
    over the epochs so far, the per-epoch history in ``.history``).

    Args:
        layer: the model's output ``nn.Linear``; default the last ``nn.Linear`` registered (``classifier`` for BERT
            and DistilBERT, ``classifier.out_proj`` for RoBERTa).
        weight: (C,) class weights of the cross-entropy your loss uses (a ``compute_loss_func`` or ``compute_loss``
            of your own), or None. label_smoothing: None (default): ``TrainingArguments.label_smoothing_factor``;
            a number in [0, 1] for a loss of your own.
        check_loss: check that the loss the Trainer optimises (whoever computes it) is the valued cross-entropy, by
            its gradient at the output layer's logits (until a batch is conclusive); a mismatch is an error.
        **settings: :class:`chg.EpochValuer` keywords — ``utility``, ``gradient``, ``per_class``, ``skip_epochs``,
            ``partial_epochs``, ``storage_dtype``, ``offload``, ``directory``.
    Raises:
        ValueError: a setting :class:`chg.EpochValuer` refuses, ``layer`` not an ``nn.Linear``. TypeError: an unknown
            setting (a misspelt keyword) or one of the wrong type. All checked when the callback is made.
    """
    SOURCE, FIT = "transformers.Trainer", "train"  # for ValuesOfRun: values' meta, the message before training

    def __init__(self, layer: Optional[nn.Linear] = None, weight=None, label_smoothing: Optional[float] = None,
                 check_loss: bool = True, **settings):
        if layer is not None and not isinstance(layer, nn.Linear):
            raise ValueError(f"layer must be the model's output nn.Linear, got {type(layer).__name__}")
        self.layer, self.weight, self.label_smoothing = layer, weight, label_smoothing
        self.check_loss, self.settings = bool(check_loss), settings
        check_settings(settings, ("layer", "weight", "label_smoothing", "check_loss"))
        try:  # the valuer's settings checked now, not when training begins
            make_valuer(1, weight, label_smoothing or 0.0, **settings)
        except TypeError as e:
            raise TypeError(f"CHGCallback: {e} (its settings are chg.EpochValuer's keywords)") from None
        self.dataset: Optional[IndexedRows] = None
        self.valuer = None
        self._tap = self._model = self._loader = self._pending = None
        self._handles: list = []
        self._batches = self._expected = 0
        self._check: Optional[LossCheck] = None
        self._own_loss_seen = False

    # ---- Trainer events ------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        """Build the valuer, hook the model and make the training loader carry each row's index.

        Args:
            args, state, control: the Trainer's. model: the (unwrapped) model. train_dataloader: the prepared
                training DataLoader. kwargs: the Trainer's other callback arguments.
        Raises:
            ValueError: no ``cb.index(train_set)``, a training loader over another data set, ``dataloader_drop_last``
                that drops rows (without ``partial_epochs=True``), a resumed run, several
                GPUs in one process (``nn.DataParallel``), a regression or multi-label head, a model without an
                ``nn.Linear``.
        """
        if self.dataset is None or getattr(_base_loader(train_dataloader), "dataset", None) is not self.dataset:
            raise ValueError("CHGCallback: the Trainer's training set is not the one the callback indexed: pass "
                             "Trainer(train_dataset=cb.index(train_set), callbacks=[cb])")
        if state.global_step > 0:
            raise ValueError("CHGCallback: this run resumes from a checkpoint (global step "
                             f"{state.global_step}); the callback values whole epochs of one run and keeps no "
                             "checkpointed state: train from the start with it")
        if getattr(args, "n_gpu", 1) > 1:
            raise ValueError(f"CHGCallback: {args.n_gpu} GPUs in one process (nn.DataParallel) run the output layer "
                             "on replicas; launch one process per GPU (torchrun / accelerate launch) instead")
        if getattr(args, "dataloader_drop_last", False) and not self.settings.get("partial_epochs", False) \
                and len(self.dataset) % max(1, int(args.train_batch_size or 1)):
            raise ValueError("CHGCallback: TrainingArguments(dataloader_drop_last=True) leaves the last rows of each "
                             "epoch untrained and unvalued; every row must enter each epoch's game: drop "
                             "dataloader_drop_last, or pass CHGCallback(partial_epochs=True) to value the rows seen")
        _check_config(model)
        smoothing = float(args.label_smoothing_factor)
        if self.label_smoothing is not None:
            if smoothing and float(self.label_smoothing) != smoothing:
                raise ValueError(f"CHGCallback(label_smoothing={self.label_smoothing}) but the Trainer smooths with "
                                 f"label_smoothing_factor={smoothing}; give one")
            smoothing = self.label_smoothing
        self._smoothing = smoothing
        self.valuer = make_valuer(len(self.dataset), self.weight, smoothing, **self.settings)
        self._model = model
        self._tap = LastLayerTap(model, self.layer)
        self.valuer.check_head(model, self._tap.layer)
        self._tap.__enter__()
        self._handles = [model.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
                         model.register_forward_hook(self._post_forward, with_kwargs=True)]
        self._loader = _base_loader(train_dataloader)
        if not isinstance(self._loader.collate_fn, IndexCollator):
            self._loader.collate_fn = IndexCollator(self._loader.collate_fn)
        self._expected = len(train_dataloader) if hasattr(train_dataloader, "__len__") else 0
        self._batches, self._own_loss_seen = 0, False
        self._check = LossCheck(self.weight, smoothing, "the loss the Trainer trains on", on_error=self.close) \
            if self.check_loss else None

    def on_epoch_end(self, args, state, control, **kwargs):
        """Value the epoch (:meth:`chg.EpochValuer.end_epoch`). An epoch cut short because training stops
        (``max_steps``) is not valued (a warning) unless ``partial_epochs=True``.

        Args:
            args, state, control, kwargs: the Trainer's.
        """
        if self.valuer is None:
            return
        short = bool(self._expected) and self._batches < self._expected
        stopping = control.should_training_stop or (state.max_steps > 0 and state.global_step >= state.max_steps)
        if self._check is not None:
            self._check.confirm()
        if short and stopping and not self.valuer.partial_epochs:
            warnings.warn(f"CHGCallback: training stopped after {self._batches} of the epoch's {self._expected} "
                          "batches (TrainingArguments(max_steps=...)); that epoch is not valued (pass "
                          "CHGCallback(partial_epochs=True) to value the rows it saw)", stacklevel=2)
        elif self._batches:  # several processes: accelerate's even_batches pads the last batches of a process
            # with rows from the epoch's start, which may be that process's own: rows added twice there are meant
            end_epoch(self.valuer, "TrainingArguments(dataloader_drop_last=True), max_steps, or a training sampler "
                                   "over a subset", repeats=is_distributed())
        self._batches = 0

    def on_step_end(self, args, state, control, **kwargs):
        """Until the loss check is conclusive: make sure the step's loss reached the output layer's logits.

        Args:
            args, state, control, kwargs: the Trainer's.
        """
        if self._check is not None and not self._check.done:
            self._check.confirm()

    def on_train_end(self, args, state, control, **kwargs):
        """Remove the hooks and close the tap; the training loader gets its collate function back. A loss check
        that no batch could settle is a warning.

        Args:
            args, state, control, kwargs: the Trainer's.
        """
        self.close()
        inconclusive_warning(self._check)

    def close(self) -> None:
        """Remove the callback's hooks from the model and give the training loader its collate function back (done
        at the end of training and before the callback's own errors; call it after another error escaped
        ``Trainer.train()`` to use the model without the callback). An epoch under way (cut short by the error, or
        by ``max_steps``, and not valued) is dropped (:meth:`chg.EpochValuer.discard_epoch`); the ended epochs'
        values stay."""
        if self.valuer is not None:
            self.valuer.discard_epoch()
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._tap is not None:
            self._tap.__exit__(None, None, None)
            self._tap = None
        if self._loader is not None and isinstance(self._loader.collate_fn, IndexCollator):
            self._loader.collate_fn = self._loader.collate_fn.collate_fn
        self._loader = self._pending = None

    # ---- the hooks -----------------------------------------------------------------------------------------------
    def _pre_forward(self, module, args, kwargs):
        rows = kwargs.pop(INDEX_KEY, None)
        training = module.training and torch.is_grad_enabled()
        if training and not self._own_loss_seen and "labels" in kwargs:
            self._own_loss_seen = True
            _check_own_loss(module)
        if rows is None and training:
            raise ValueError("CHGCallback: a training forward pass without the rows' 'chg_index' (the model was "
                             "called on a batch that did not come from the indexed training loader, e.g. twice per "
                             "step in a compute_loss of your own); call it once per training batch. If an error "
                             "stopped an earlier Trainer.train() with this callback, its hooks are still on the "
                             "model: call callback.close() first")
        self._pending = rows if training else None
        return args, kwargs

    def _post_forward(self, module, args, kwargs, output):
        rows, self._pending = self._pending, None
        tap = self._tap
        if rows is None:  # an evaluation pass: let the tap forget it
            if tap.output is not None:
                tap.output = tap.feat = None
                tap.calls = 0
            return
        if tap.output is None:
            raise RuntimeError(head_error(tap) or
                               f"CHGCallback: no forward pass went through the output layer {tap.name!r}; pass "
                               "CHGCallback(layer=<the model's output nn.Linear>)")
        z = tap.output  # (read lets it go)
        logits, feat = tap.read(output)
        y = rows["labels"]
        self.valuer.add_logits(rows["index"], logits, y, feat, tap.bias)
        if self._check is not None and not self._check.done:  # the loss actually trained on, seen in backward
            # pooled logits returned upcast (bf16=True: accelerate's float32 copy, off the loss's path): watch the
            # head's output at every position, whose pooled positions the loss's gradient reaches
            pooled = isinstance(z, torch.Tensor) and z.ndim == 3 and logits.ndim == 2 and z.dtype != logits.dtype
            self._check.watch(z if pooled else logits, y)
        self._batches += 1
