r"""CHG Shapley values of every training row during ``lightning.pytorch.Trainer.fit()``, by ride-along.

Three lines in a Lightning script (docs/trainers.md)::

    cb = CHGCallback()                                                              # 1
    loader = DataLoader(cb.index(train_set), batch_size=64, shuffle=True)           # 2 (the data set indexed)
    trainer = Trainer(max_epochs=5, callbacks=[cb]); trainer.fit(module, loader)    #   (callbacks=[cb])
    values = cb.values                                                              # 3: a chg.Values

**What is valued.** The ``LightningModule``'s output ``nn.Linear`` (the last one registered, or ``layer=``) is
found once when training starts and hooked by :class:`chg.LastLayerTap`; after each training step its logits and
input features go to :meth:`chg.EpochValuer.add_logits` with the batch's labels, and each training epoch ends with
:meth:`chg.EpochValuer.end_epoch` — the cross-entropy of the logits (binary for one logit), with the class
``weight`` and ``label_smoothing`` your ``training_step`` uses given to the callback. The loss backpropagated
(automatic or manual optimisation) is checked by the gradient it brings to the logits
(:class:`chg.integrations.rows.LossCheck`, from ``on_before_backward``), batch after batch until one is conclusive:
a regression head, a temperature, weights or smoothing the callback was not told of, or another loss is an error.

**How rows are indexed.** ``cb.index(train_set)`` appends each row's position to its item (``(x, y)`` →
``(x, y, i)``; dict items get ``"chg_index"``), the DataLoader's collate function batches it like the rest, and
``on_train_batch_start`` takes it out of the batch again (the collated list or dict, changed in place) before
``training_step`` sees it — so ``training_step`` is unchanged, with shuffling, workers and ``DistributedSampler``
alike. A collate function of your own must pass a tuple item's last element through as the batch's last element.

**Multi-process** (``strategy="ddp"``, any number of devices): each rank adds the rows of its shard (the sampler
Lightning puts in); :meth:`chg.EpochValuer.end_epoch` all-reduces the statistics (a row that ``DistributedSampler``
pads onto two ranks is one player) and every rank holds all values.

**When an epoch is valued**: right after its last training batch (``on_train_batch_end`` of batch
``trainer.num_training_batches``), before the epoch's validation and the checkpoint saved after it; an epoch cut short
(``max_steps``, a stop) at ``on_train_epoch_end``.

**Checkpoints and resuming.** The callback's state travels in Lightning's checkpoints (:meth:`CHGCallback.state_dict`,
under the key ``"CHGCallback"``): the valuer's (:meth:`chg.EpochValuer.state_dict`: n, options, loss, skip_epochs and
every valued epoch's values) and the trainer epoch of each. ``trainer.fit(module, loader, ckpt_path=...)`` with a
new callback continues that history: after a resume from an epoch's end the values average every epoch, as an
uninterrupted fit's; a second ``trainer.fit()`` of the same trainer with more epochs continues it too. Refused (a
``ValueError`` when training starts, or at the first batch for a checkpoint made without the callback): a checkpoint
saved mid-epoch (``ModelCheckpoint(every_n_train_steps=...)``, validation within an epoch) — its epoch's earlier rows
are not in it, and Lightning resumes the epoch without them — and a checkpoint of a callback with other settings or
another training set. A checkpoint made without the callback is resumed with a warning: the epochs trained before
the resume are not valued, and ``values.meta["trainer_epochs"]`` lists the trainer epochs that are.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Optional

import torch
from lightning.pytorch import Callback
from torch import nn

from ..lastlayer import LastLayerTap, split_batch
from ..values import Values
from .rows import (INDEX_KEY, IndexedRows, LossCheck, ValuesOfRun, check_settings, end_epoch, head_error,
                   inconclusive_warning, make_valuer)

__all__ = ["CHGCallback"]

STATE_FORMAT = "chg.integrations.lightning.CHGCallback/1"  # the state's "format" entry in a checkpoint


def _pop_index(batch):
    """The rows' positions taken out of a collated batch, in place (see the module docstring)."""
    if isinstance(batch, dict) and INDEX_KEY in batch:
        return batch.pop(INDEX_KEY)
    if isinstance(batch, list) and len(batch) >= 3:
        return batch.pop()
    if isinstance(batch, (dict, list)):
        raise ValueError("CHGCallback: the training batch carries no row index: pass the training set through the "
                         "callback, DataLoader(cb.index(train_set), ...)")
    raise ValueError(f"CHGCallback: the training batch is a {type(batch).__name__}; the row index rides in a list "
                     "or dict batch (torch's default collate makes lists of tuple items): return a list or a dict "
                     "from your collate function")


def _check_whole_epochs(trainer, partial: bool) -> None:
    """Before the first step: a loader or trainer setting that leaves rows out of every epoch is an error that says
    which (the epoch would otherwise fail at its end)."""
    if partial:
        return
    loader = trainer.train_dataloader
    total = len(loader) if hasattr(loader, "__len__") else None
    limited = trainer.num_training_batches
    if isinstance(limited, int) and total is not None and limited < total:
        raise ValueError(f"CHGCallback: Trainer(limit_train_batches={trainer.limit_train_batches}) trains {limited} "
                         f"of the loader's {total} batches per epoch: the other rows are not trained or valued, and "
                         "every row of the indexed training set must enter each epoch's game. Drop "
                         "limit_train_batches, or pass CHGCallback(partial_epochs=True) to value the rows each epoch "
                         "sees")
    sampler, size = getattr(loader, "sampler", None), getattr(loader, "batch_size", None)
    if getattr(loader, "drop_last", False) and size and hasattr(sampler, "__len__") and len(sampler) % size:
        raise ValueError(f"CHGCallback: DataLoader(drop_last=True) drops the last {len(sampler) % size} rows of each "
                         "epoch, untrained and unvalued; every row of the indexed training set must enter each "
                         "epoch's game. Drop drop_last, or pass CHGCallback(partial_epochs=True) to value the rows "
                         "each epoch sees")


class CHGCallback(ValuesOfRun, Callback):
    """``lightning.pytorch.Callback`` that values every training row during ``Trainer.fit()`` (ride-along; see the
    module docstring): ``cb.values`` is a :class:`chg.Values` after the first epoch.

    Args:
        layer: the module's output ``nn.Linear``; default the last ``nn.Linear`` registered in the LightningModule.
        weight: (C,) class weights of the cross-entropy ``training_step`` uses, or None. label_smoothing: its label
            smoothing in [0, 1].
        check_loss: check that the loss backpropagated is the valued cross-entropy (its gradient at the logits;
            until a batch is conclusive); a mismatch is an error.
        **settings: :class:`chg.EpochValuer` keywords — ``utility``, ``gradient``, ``per_class``, ``skip_epochs``,
            ``partial_epochs``, ``storage_dtype``, ``offload``, ``directory``.
    Raises:
        ValueError: ``layer`` not an ``nn.Linear``, a setting of a wrong value. TypeError: an unknown setting (a
            misspelt keyword) or one of the wrong type — checked when the callback is made.

    Its state (:meth:`state_dict`) rides in Lightning's checkpoints, so a fit resumed from an epoch's end continues
    the values of the epochs before it (see the module docstring for what is refused).
    """
    SOURCE, FIT = "lightning.Trainer", "fit"  # for ValuesOfRun: values' meta, the message before training

    def __init__(self, layer: Optional[nn.Linear] = None, weight=None, label_smoothing: float = 0.0,
                 check_loss: bool = True, **settings):
        if layer is not None and not isinstance(layer, nn.Linear):
            raise ValueError(f"layer must be the module's output nn.Linear, got {type(layer).__name__}")
        self.layer, self.weight, self.label_smoothing = layer, weight, label_smoothing
        self.check_loss, self.settings = bool(check_loss), settings
        check_settings(settings, ("layer", "weight", "label_smoothing", "check_loss"))
        try:  # the valuer's settings checked now, not when training starts
            make_valuer(1, weight, label_smoothing, **settings)
        except TypeError as e:
            raise TypeError(f"CHGCallback: {e} (its settings are chg.EpochValuer's keywords)") from None
        self.dataset: Optional[IndexedRows] = None
        self.valuer = None
        self._tap = self._module = self._rows = None
        self._batches = 0
        self._check: Optional[LossCheck] = None
        self._epochs: list = []  # the trainer epoch of each valued epoch (of self.valuer.epoch_values)
        self._restored: Optional[dict] = None  # a checkpoint's state, applied when training starts

    # ---- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The callback's state for Lightning's checkpoint (stored under ``checkpoint["callbacks"]["CHGCallback"]``;
        plain tensors, numbers, strings and lists: a weights-only ``torch.load`` reads it).

        Returns:
            ``{}`` before training starts; else a dict of ``format``, ``valuer`` (:meth:`chg.EpochValuer.state_dict`),
            ``epochs`` (the trainer epoch of each valued epoch) and ``pending`` (training batches of an epoch not yet
            valued: rows that are not in the checkpoint — a resume from it is refused).
        """
        if self.valuer is None:
            return {}
        return {"format": STATE_FORMAT, "valuer": self.valuer.state_dict(), "epochs": list(self._epochs),
                "pending": int(self._batches)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Keep a checkpoint's state (Lightning calls this when ``trainer.fit(..., ckpt_path=...)`` restores the
        checkpoint); it is checked and applied when training starts (:meth:`on_train_start`).

        Args:
            state_dict: what :meth:`state_dict` returned when the checkpoint was saved.
        """
        self._restored = state_dict  # not checked here: trainer.validate / test restore callbacks too

    def _restore(self, trainer) -> None:
        """Apply a checkpoint's state to the new valuer; or, in a fit resumed without one, warn that the epochs
        before the resume are not valued."""
        state, self._restored = self._restored, None
        if state is None:
            if trainer.current_epoch > 0 or trainer.global_step > 0:
                warnings.warn(f"CHGCallback: this fit resumes at epoch {trainer.current_epoch} (global step "
                              f"{trainer.global_step}) from a checkpoint without CHGCallback's state: the epochs "
                              "trained before it are not valued, and the values average the epochs this fit trains "
                              "(values.meta['trainer_epochs'] lists them). To value every epoch, train from the "
                              "start with the callback: its state then travels in the checkpoints", stacklevel=2)
            return
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"CHGCallback: the checkpoint's state under {self.state_key!r} is not of this callback "
                             f"(format {state.get('format')!r}, this one reads {STATE_FORMAT!r}): resume with the "
                             "chg version that saved it, or drop that entry from checkpoint['callbacks']")
        if state["pending"]:
            raise ValueError(f"CHGCallback: the checkpoint was saved in the middle of an epoch, after "
                             f"{state['pending']} of its training batches (ModelCheckpoint(every_n_train_steps=...), "
                             "or validation within an epoch): those batches' rows are not in the checkpoint, and "
                             "Lightning resumes the epoch without them, so the epoch could not be valued whole. Resume "
                             "from a checkpoint saved at an epoch's end (ModelCheckpoint(every_n_epochs=1) / "
                             "save_last at an epoch's end), or train from the start")
        try:
            self.valuer.load_state_dict(state["valuer"])
        except ValueError as e:
            raise ValueError(f"CHGCallback: the checkpoint's values cannot be continued: {e}. Resume with the "
                             "callback settings (per_class, utility, gradient, skip_epochs, weight, label_smoothing) "
                             "and the training set of the fit that saved it") from None
        self._epochs = list(state["epochs"])
        if len(self._epochs) != self.valuer.epochs:
            raise ValueError(f"CHGCallback: the checkpoint's state lists {len(self._epochs)} trainer epochs for "
                             f"{self.valuer.epochs} valued epochs: it is damaged; resume from another checkpoint")

    # ---- Lightning hooks -------------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        """Build the valuer and hook the output layer (found once).

        Args:
            trainer: the Lightning ``Trainer``. pl_module: the ``LightningModule``.
        Warns:
            UserWarning: a fit resumed from a checkpoint without the callback's state (the epochs before the resume
                are not valued).
        Raises:
            ValueError: no ``cb.index(train_set)``, a module without ``nn.Linear``, a setting the valuer refuses; a
                checkpoint saved mid-epoch, of a callback with other settings or another training set, or whose
                callback state is of another format.
        """
        if self.dataset is None:
            raise ValueError("CHGCallback: index the training set first, DataLoader(cb.index(train_set), ...)")
        if self._restored is None and self._epochs and self._epochs[-1] < trainer.current_epoch:
            self._restored = self.state_dict()  # fit() again on the same trainer (more epochs): continue the history
        self.valuer = make_valuer(len(self.dataset), self.weight, self.label_smoothing, **self.settings)
        self._epochs, self._batches = [], 0
        self._restore(trainer)
        self._module = pl_module
        self._tap = LastLayerTap(pl_module, self.layer)
        self.valuer.check_head(pl_module, self._tap.layer)
        self._tap.__enter__()
        self._check = LossCheck(self.weight, self.label_smoothing, "the loss training_step trains on",
                                on_error=self.close) if self.check_loss else None
        _check_whole_epochs(trainer, self.valuer.partial_epochs)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Take the rows' index out of the batch (in place) before ``training_step`` sees it.

        Args:
            trainer, pl_module: as Lightning passes them. batch: the collated batch (a list or dict).
                batch_idx: its position in the epoch.
        Raises:
            ValueError: a batch without the row index, or of a type that cannot be changed in place (a tuple); an
                epoch whose first batch in this fit is not its first (a fit resumed mid-epoch).
        """
        if self._batches == 0 and batch_idx > 0:
            self.close()
            raise ValueError(f"CHGCallback: this fit resumes epoch {trainer.current_epoch} at its batch {batch_idx} "
                             "(a checkpoint saved mid-epoch: ModelCheckpoint(every_n_train_steps=...), or "
                             "validation within an epoch): the rows of its first batches were trained before the "
                             "checkpoint, so the epoch cannot be valued whole. Resume from a checkpoint saved at an "
                             "epoch's end (ModelCheckpoint(every_n_epochs=1) / save_last at an epoch's end), or "
                             "train from the start")
        index = _pop_index(batch)
        _, targets, _ = split_batch(batch)
        self._rows = (index, targets)
        tap = self._tap
        tap.output = tap.feat = None  # forget validation passes since the last training step
        tap.calls = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Hand the step's logits, features, labels and rows to :meth:`chg.EpochValuer.add_logits`; after the
        epoch's last training batch, value the epoch (:meth:`chg.EpochValuer.end_epoch`: before the epoch's validation
        and the checkpoint saved after it, so that the checkpoint holds the epoch).

        Args:
            trainer, pl_module: as Lightning passes them. outputs: what ``training_step`` returned (a ``{"loss":
                ...}`` dict; with ``"logits"`` too the tap checks them). batch, batch_idx: the step's batch.
        Raises:
            RuntimeError: the output layer did not run in the step (replaced, or not the module's output layer).
            ValueError: as :meth:`chg.LastLayerTap.read`, :meth:`chg.EpochValuer.add_logits`,
                :meth:`chg.EpochValuer.end_epoch` (an epoch that missed rows) and the loss check.
        """
        (index, targets), self._rows = self._rows, None
        tap = self._tap
        if tap.output is None:
            raise RuntimeError(head_error(tap) or
                               f"CHGCallback: the training step ran no forward pass through the output layer "
                               f"{tap.name!r}; pass CHGCallback(layer=<the module's output nn.Linear>)")
        given, raw = isinstance(outputs, Mapping) and "logits" in outputs, tap.output
        try:
            logits, feat = tap.read(outputs if given else raw)
        except ValueError as e:
            if given or raw.ndim != 3:
                raise
            raise ValueError(f"{e}. For a head applied at every position whose output your model pools to one "
                             "position per row (a sequence classifier), return {'loss': loss, 'logits': logits} from "
                             "training_step: the callback reads each row's position from the pooled logits") from None
        if not isinstance(targets, torch.Tensor) or targets.device != logits.device:
            targets = torch.as_tensor(targets).to(logits.device)
        self.valuer.add_logits(index, logits, targets, feat, tap.bias)
        if self._check is not None and not self._check.done:
            self._check.confirm()  # the step's backward pass ran: its loss must have reached the logits
        self._batches += 1
        expected = trainer.num_training_batches
        if isinstance(expected, int) and self._batches >= expected:
            self._end_epoch(trainer)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        """Until the loss check is conclusive: watch the gradient that this backward pass brings to the output
        layer's logits (:class:`chg.integrations.rows.LossCheck`; automatic and manual optimisation alike).

        Args:
            trainer, pl_module: as Lightning passes them. loss: the loss about to be backpropagated.
        """
        check, tap = self._check, self._tap
        if check is None or check.done or tap is None or self._rows is None or tap.output is None:
            return
        targets = self._rows[1]
        z = tap.output
        if isinstance(z, torch.Tensor) and z.ndim in (2, 3) and isinstance(targets, torch.Tensor):
            check.watch(z, targets)  # (B, T, C): a head at every position, pooled by the model

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Value an epoch that did not reach its last batch (:meth:`chg.EpochValuer.end_epoch`; a whole epoch was
        valued after its last batch): one cut short by ``max_steps`` or a stop is not valued (a warning) unless
        ``partial_epochs=True``.

        Args:
            trainer, pl_module: as Lightning passes them.
        Raises:
            ValueError: as :meth:`chg.EpochValuer.end_epoch` (an epoch that missed rows).
        """
        if not self._batches:  # valued after its last batch (on_train_batch_end), or no batch in this fit
            return
        expected = trainer.num_training_batches
        short = isinstance(expected, int) and self._batches < expected
        if short and trainer.should_stop or short and 0 < trainer.max_steps <= trainer.global_step:
            if not self.valuer.partial_epochs:
                warnings.warn(f"CHGCallback: training stopped after {self._batches} of the epoch's {expected} "
                              "batches (max_steps, or a stop); that epoch is not valued (pass "
                              "CHGCallback(partial_epochs=True) to value the rows it saw)", stacklevel=2)
                self._batches = 0
                self.valuer.discard_epoch()  # its rows must not play in a later fit's epoch
                return
        self._end_epoch(trainer)

    def _end_epoch(self, trainer) -> None:
        """Value the epoch's rows and note its trainer epoch."""
        self._batches = 0
        end_epoch(self.valuer, "Trainer(limit_train_batches=...), DataLoader(drop_last=True) or a sampler over a "
                               "subset")
        self._epochs.append(int(trainer.current_epoch))

    @property
    def values(self) -> Values:
        """Each row's value averaged over the epochs valued so far (in this fit and the fits it resumed), with the
        per-epoch history; ``meta["trainer_epochs"]`` lists the trainer epoch of each when they are not 0, 1, …
        (a fit resumed from a checkpoint without the callback's state, an epoch left out).

        Returns:
            :class:`chg.Values` of the ``len(train_set)`` rows.
        Raises:
            ValueError: no epoch has ended yet.
        """
        values = ValuesOfRun.values.fget(self)
        if self._epochs != list(range(len(self._epochs))):
            values.meta["trainer_epochs"] = list(self._epochs)
        return values

    def on_train_end(self, trainer, pl_module) -> None:
        """Close the tap (the hook on the output layer is removed).

        Args:
            trainer, pl_module: as Lightning passes them.
        """
        self.close()
        inconclusive_warning(self._check)

    def on_exception(self, trainer, pl_module, exception) -> None:
        """An error stopped ``fit``: the rows of the epoch under way are dropped (a later ``fit`` starts its epoch
        empty, :meth:`chg.EpochValuer.discard_epoch`) and the hook on the output layer is removed (the model trains
        without it).

        Args:
            trainer, pl_module, exception: as Lightning passes them.
        """
        if self.valuer is not None:
            self.valuer.discard_epoch()
            self._batches = 0
        self.close()

    def close(self) -> None:
        """Remove the callback's hook from the output layer (at the end of training, on an error)."""
        if self._tap is not None:
            self._tap.__exit__(None, None, None)
            self._tap = None
