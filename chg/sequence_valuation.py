"""Collection over a training run: :class:`SequenceValuer`, CHG Shapley values of the sequences (or tokens) of a
data set with :class:`chg.EpochValuer`'s verbs — the exact two-sweep pass (:meth:`SequenceValuer.value_epoch`) and
ride-along (:meth:`SequenceValuer.add_logits`, :meth:`SequenceValuer.end_epoch`).

The per-batch maths it calls: :mod:`chg.sequence_maths`; the derivation, the modes and the batch format:
:mod:`chg.sequence` (which re-exports :class:`SequenceValuer`); train and value in one call: :mod:`chg.sequence_loop`.
"""
from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Optional

import numpy as np
import torch
from torch import nn

from .factored import GroupStats, Options, group_stats, values_from_factors
from .io import check_state
from .lastlayer import (LastLayerTap, carries_index, forward_batch, model_device, sequential_loader as _sequential,
                        split_batch, unknown_index)
from .progress import progress as progress_bar
from .sequence_maths import (REDUCTIONS, UNITS, UTILITIES, SequenceBatch, _vocab_chunks, causal_shift, sequence_batch,
                             sequence_stats, sequence_values, token_factors)
from .values import Values

__all__ = ["SequenceValuer"]


def _n_rows(n) -> int:
    try:
        if isinstance(n, bool):
            raise TypeError
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"SequenceValuer: n must be a positive integer (the number of sequences), got {n!r}") from None
    if n < 1:
        raise ValueError(f"SequenceValuer: n must be a positive integer (the number of sequences), got {n}")
    return n


def _choice(name: str, value, allowed: tuple):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


class SequenceValuer:
    """CHG Shapley values of the sequences (or tokens) of a data set over a training run, with
    :class:`chg.EpochValuer`'s verbs: :meth:`value_epoch` (the exact two-sweep pass), :meth:`add_logits` /
    :meth:`add` and :meth:`end_epoch` (ride-along, against the previous epoch's statistics), :meth:`add_validation`
    (α from a validation set), :meth:`values`. Single process (no ``torch.distributed``). An epoch that an error
    cuts short is dropped with :meth:`discard_epoch` (a rerun would otherwise add its sequences twice); a long run
    checkpoints :meth:`state_dict` after an epoch and resumes with :meth:`load_state_dict`.

    Args:
        n: the number of sequences (indices 0..n-1), ≥ 1.
        unit: "sequence" (each sequence a player, :math:`x_i = l_i G_i`) or "token" (each valid token a player,
            :math:`x_t = \\ell_t e_t\\otimes\\tilde h_t`; values in (sequence, position) order, :attr:`token_index`).
        reduction: "mean" (default: :math:`l_i` = the sequence's mean token cross-entropy) or "sum".
        utility: "chg" (:math:`x = l\\,G`) or "gradient" (Gradient Shapley, :math:`x = G`).
        alpha: "train" (α = the mean of the players' x, Algorithm 1 line 4) or "valid" (the mean of the validation
            players' x: :meth:`add_validation`, or ``value_epoch(..., valid_loader)``).
        shift: the causal-LM shift (logits at t predict label t+1); None: decided from the model in
            :meth:`value_epoch` (:func:`causal_shift`), required for :meth:`add_logits`.
        skip_epochs: the first k epochs left out of :meth:`values` (kept in ``epoch_values``).
        vocab_chunk: vocabulary columns per chunk (default: about 2^19 elements per chunk).
    Raises:
        ValueError: an invalid n, option or skip_epochs.
    """

    def __init__(self, n: int, unit: str = "sequence", reduction: str = "mean", utility: str = "chg",
                 alpha: str = "train", shift: Optional[bool] = None, skip_epochs: int = 0,
                 vocab_chunk: Optional[int] = None):
        self.n = _n_rows(n)
        self.unit = _choice("unit", unit, UNITS)
        self.reduction = _choice("reduction", reduction, REDUCTIONS)
        options = Options(utility=utility, alpha=alpha)  # the one validator of the options (types and values)
        if options.utility not in UTILITIES:
            raise ValueError(f"utility={utility!r} is not available for sequences (Hardness Shapley's mean-loss game "
                             f"is the classifier's only); choose one of {UTILITIES}")
        self.utility, self.alpha = options.utility, options.alpha
        if shift is not None and not isinstance(shift, (bool, np.bool_)):
            raise ValueError(f"shift must be True, False or None (decided from the model), got {shift!r}")
        self.shift = None if shift is None else bool(shift)
        if isinstance(skip_epochs, bool) or not isinstance(skip_epochs, (int, np.integer)) or skip_epochs < 0:
            raise ValueError(f"skip_epochs must be an integer >= 0, got {skip_epochs!r}")
        self.skip_epochs = int(skip_epochs)
        _vocab_chunks(1, 1, vocab_chunk)  # validates it
        self.vocab_chunk = vocab_chunk
        self.epoch_values: list = []  # (N,) float64 per finished epoch (N = n, or the number of tokens)
        self._prev: Optional[tuple] = None  # (GroupStats, alpha or None) of the last finished epoch
        self._tokens: Optional[list] = None  # unit="token": per sequence (positions, targets), from the first sight
        self._reset_epoch()

    epochs = property(lambda self: len(self.epoch_values), doc="the epochs ended so far")

    def _reset_epoch(self) -> None:
        self._seen = torch.zeros(self.n, dtype=torch.bool)
        self._stats: Optional[GroupStats] = None
        self._valid: Optional[GroupStats] = None
        self._vals = self._empty()

    def discard_epoch(self) -> int:
        """Drop the ride-along epoch under way (the sequences and validation rows added since the last
        :meth:`end_epoch`), e.g. of an epoch that an error cut short, so that the epoch can be run again; the ended
        epochs are kept (as :meth:`chg.EpochValuer.discard_epoch`).

        Returns:
            the number of sequences dropped (0: no epoch was under way).
        """
        dropped = int(self._seen.sum())
        self._reset_epoch()
        return dropped

    # ---- per batch ----------------------------------------------------------------------------------------------
    def _rows(self, indices, batch: SequenceBatch, seen: torch.Tensor, what: str) -> torch.Tensor:
        """The batch's row indices (CPU int64), checked: one per sequence, in [0, n), each once per sweep."""
        t = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"{what}: indices must be integers, got dtype {t.dtype}")
        idx = t.reshape(-1).to(device="cpu", dtype=torch.int64)
        B = batch.loss.shape[0]
        if idx.shape[0] != B:
            raise ValueError(f"{what}: {idx.shape[0]} indices for {B} sequences")
        if B and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
            raise ValueError(f"{what}: indices must lie in [0, {self.n}), got [{int(idx.min())}, {int(idx.max())}]")
        if torch.unique(idx).shape[0] != B or bool(seen[idx].any()):
            raise ValueError(f"{what}: a sequence was added twice in one epoch (each is one player, once per epoch)")
        seen[idx] = True
        return idx

    def _note_tokens(self, idx: torch.Tensor, batch: SequenceBatch) -> None:
        """unit="token": record each sequence's token positions (first sight) or check they did not change."""
        if self.unit != "token":
            return
        if self._tokens is None:
            self._tokens = [None] * self.n
        counts = batch.counts.cpu()
        start = None if batch.start is None else batch.start.cpu()
        for k, i in enumerate(idx.tolist()):  # positions in the document: left padding not counted
            pos = batch.valid[k].nonzero().squeeze(1).cpu() + int(bool(self.shift)) - (0 if start is None
                                                                                       else int(start[k]))
            known = self._tokens[i]
            if known is None:
                self._tokens[i] = (pos, batch.target[k][batch.valid[k]].cpu())
            elif known[0].shape[0] != int(counts[k]) or not torch.equal(known[0], pos):
                raise ValueError(f"unit='token': sequence {i} has other scored positions than when first seen "
                                 f"({known[0].tolist()[:8]} then, {pos.tolist()[:8]} now, counted from its first "
                                 "attended token): the players must stay the same — the same tokens scored in every "
                                 "epoch")

    def _batch_stats(self, batch: SequenceBatch) -> tuple:
        """(GroupStats of the batch's players, what :meth:`_batch_values` reuses: ‖x‖² or the token factors)."""
        if self.unit == "sequence":
            return sequence_stats(batch, self.utility, self.vocab_chunk)
        f = token_factors(batch)
        return group_stats(f.err, f.feat, f.loss if self.utility == "chg" else None, f.bias), f

    def _batch_values(self, batch: SequenceBatch, reuse, stats: GroupStats, alpha) -> torch.Tensor:
        if self.unit == "sequence":
            return sequence_values(batch, stats, alpha, self.utility, reuse, self.vocab_chunk)
        f = reuse if reuse is not None else token_factors(batch)
        return values_from_factors(f.err, f.feat, f.loss if self.utility == "chg" else None, stats, alpha,
                                   bias=f.bias)

    def _empty(self):
        """An epoch's value store: (n,) NaN (sequence unit) or n per-sequence slots (token unit)."""
        return torch.full((self.n,), float("nan"), dtype=torch.float64) if self.unit == "sequence" else [None] * self.n

    def _store(self, store, idx: torch.Tensor, batch: SequenceBatch, vals: torch.Tensor) -> None:
        vals = vals.detach().cpu()
        if self.unit == "sequence":
            store[idx] = vals
            return
        for i, v in zip(idx.tolist(), torch.split(vals, batch.counts.cpu().tolist())):
            store[i] = v

    def add(self, indices, batch: SequenceBatch) -> None:
        """Ride-along's step with a batch's factors: its players are valued at once against the previous epoch's
        statistics (nothing in the first epoch) and its statistics are summed for the next.

        Args:
            indices: (B,) the sequences' row indices in [0, n) (integer tensor, array or list).
            batch: the batch's :class:`SequenceBatch` (:func:`sequence_batch`, under this valuer's reduction).
        Raises:
            ValueError: indices of another count, out of range or repeated within the epoch; a change of head
                (C, D or bias) since the previous epoch; unit="token" with other scored positions than before.
        """
        if not isinstance(batch, SequenceBatch):
            raise ValueError(f"add: batch must be a SequenceBatch (chg.sequence.sequence_batch), got "
                             f"{type(batch).__name__}")
        idx = self._rows(indices, batch, self._seen, "add")
        self._note_tokens(idx, batch)
        stats, reuse = self._batch_stats(batch)
        self._stats = stats if self._stats is None else self._stats + stats
        if self._prev is not None:
            self._store(self._vals, idx, batch, self._batch_values(batch, reuse, *self._prev))

    def add_logits(self, indices, logits: torch.Tensor, labels: torch.Tensor, feat: torch.Tensor,
                   attention_mask=None, bias: bool = True) -> None:
        """Ride-along's step in a training loop: ``logits, feat = tap.read(out)`` (a
        ``LastLayerTap(model, sequence=True)``), then ``valuer.add_logits(idx, logits, labels, feat, mask,
        tap.bias)`` — :meth:`add` of :func:`sequence_batch` under the valuer's shift and reduction.

        Args:
            indices: (B,) row indices. logits: (B, T, C) (its graph is not kept). labels: (B, T) integer (-100: not
                scored). feat: (B, T, D). attention_mask: (B, T) 0/1 or None. bias: whether the head has a bias.
        Raises:
            ValueError: the valuer's ``shift`` is None (say whether the model is a causal LM), and as
                :func:`sequence_batch` and :meth:`add`.
        """
        if self.shift is None:
            raise ValueError("add_logits: the valuer does not know whether the model is a causal LM: build it with "
                             "shift=True (logits at t predict label t+1, e.g. GPT-2) or shift=False (a token "
                             "classifier); chg.sequence.causal_shift(model) tells")
        self.add(indices, sequence_batch(logits, labels, feat, attention_mask, self.shift, self.reduction, bias,
                                         self.vocab_chunk, rows=indices))

    def add_validation(self, batch: SequenceBatch) -> None:
        """Validation players into this epoch's α (``alpha="valid"``): α = the mean of their x (per sequence or per
        token, as the valuer's unit). In ride-along it is the next epoch's α; :meth:`value_epoch` uses its own.

        Args:
            batch: the validation batch's :class:`SequenceBatch`.
        Raises:
            ValueError: the valuer was built with ``alpha="train"``.
        """
        if self.alpha != "valid":
            raise ValueError("add_validation: this valuer was built with alpha='train'; use alpha='valid'")
        stats = self._batch_stats(batch)[0]
        self._valid = stats if self._valid is None else self._valid + stats

    # ---- ends of epochs ---------------------------------------------------------------------------------------
    def _check_complete(self, seen: torch.Tensor, what: str) -> None:
        missing = self.n - int(seen.sum())
        if missing:
            first = (~seen).nonzero().squeeze(1)[:5].tolist()
            raise ValueError(f"{what}: {missing} of the {self.n} sequences were not added this epoch (e.g. rows "
                             f"{first}): every sequence enters each epoch's game once (a DataLoader with "
                             "drop_last=True, or a sampler over a subset?)")

    def _alpha_from(self, valid: Optional[GroupStats], what: str) -> Optional[torch.Tensor]:
        if self.alpha == "train":
            return None
        if valid is None or valid.n == 0:
            raise ValueError(f"{what}: alpha='valid' but no validation rows were given (add_validation, or "
                             "value_epoch(..., valid_loader))")
        return valid.sum / valid.n

    def _history_row(self, store, valued: bool) -> torch.Tensor:
        if self.unit == "sequence":
            return store.clone()
        if valued:
            return torch.cat(store)
        return torch.full((self.token_count,), float("nan"), dtype=torch.float64)

    def end_epoch(self) -> torch.Tensor:
        """Ride-along's end of an epoch: the epoch's values (valued batch by batch against the previous epoch's
        statistics; NaN in the first epoch, which only gathers them), and its statistics kept for the next.

        Returns:
            the epoch's values, (n,) float64 (unit="token": one per token, :attr:`token_index`), on the CPU.
        Raises:
            ValueError: no row was added, a sequence missing, alpha="valid" without validation rows.
        """
        if self._stats is None:
            raise ValueError("end_epoch: no training rows were added this epoch (add_logits / add)")
        self._check_complete(self._seen, "end_epoch")
        row = self._history_row(self._vals, self._prev is not None)
        alpha = self._alpha_from(self._valid, "end_epoch")
        self.epoch_values.append(row)
        self._prev = (self._stats, alpha)
        self._reset_epoch()
        return row

    @torch.no_grad()
    def value_epoch(self, model: nn.Module, loader, valid_loader=None, layer: Optional[nn.Linear] = None,
                    progress: Optional[bool] = None) -> torch.Tensor:
        """Algorithm 1's exact epoch values by two no-grad sweeps over ``loader`` at the current parameters (model
        in eval mode, its mode restored after): sweep 1 sums s and keeps every ‖x_i‖², sweep 2 values every
        player with eq. (3). With ``alpha="valid"`` a sweep over ``valid_loader`` first gives α.

        Args:
            model: a language model or token classifier whose output layer is an ``nn.Linear`` applied per position
                (``layer``: that layer, if not the last ``nn.Linear`` registered), returning its logits (a tensor,
                or a tuple / dict / ``ModelOutput`` holding them). loader: batches (see :mod:`chg.sequence`) with
                each row's index — a dict's ``"index"``; a tuple's third element from a DataLoader over
                :class:`chg.IndexedDataset` or a list of batches written so (:func:`chg.lastlayer.carries_index`) —
                or a plain sequential DataLoader (rows numbered in order, a third element not read). valid_loader:
                validation
                batches (``alpha="valid"``). progress: a bar over the batches (True | False | None: on a terminal).
        Returns:
            the epoch's values (n,) float64 on the CPU (unit="token": one per token).
        Raises:
            ValueError: a head that is not an ``nn.Linear`` applied per position, batches without labels, a
                sequence missing or added twice, a shuffled loader whose tuple batches' third element is not known
                to be the index, alpha="valid" without ``valid_loader``, and as
                :func:`sequence_batch`.
        """
        if self.alpha == "valid" and valid_loader is None:
            raise ValueError("value_epoch: alpha='valid' needs valid_loader")
        if self._stats is not None:
            raise ValueError("value_epoch: a ride-along epoch is under way (add/add_logits since the last end_epoch); "
                             "call end_epoch first")
        shift = causal_shift(model, layer) if self.shift is None else self.shift
        if self.shift is None:
            self.shift = shift
        was_training = model.training
        model.eval()
        try:
            with LastLayerTap(model, layer, sequence=True) as tap:
                alpha = None
                if self.alpha == "valid":
                    valid = None
                    for _, batch in _batches(model, tap, valid_loader, self, "valid", progress, need_index=False):
                        stats = self._batch_stats(batch)[0]
                        valid = stats if valid is None else valid + stats
                    alpha = self._alpha_from(valid, "value_epoch")
                seen = torch.zeros(self.n, dtype=torch.bool)
                total, sq = None, torch.full((self.n,), float("nan"), dtype=torch.float64)
                for idx, batch in _batches(model, tap, loader, self, "sweep 1", progress):  # s and every ‖x‖²
                    idx = self._rows(idx, batch, seen, "value_epoch")
                    self._note_tokens(idx, batch)
                    stats, reuse = self._batch_stats(batch)
                    total = stats if total is None else total + stats
                    if self.unit == "sequence":
                        sq[idx] = reuse.cpu()
                self._check_complete(seen, "value_epoch")
                seen, store = torch.zeros(self.n, dtype=torch.bool), self._empty()
                for idx, batch in _batches(model, tap, loader, self, "sweep 2", progress):  # ⟨m, x_j⟩ and eq. (3)
                    idx = self._rows(idx, batch, seen, "value_epoch (sweep 2)")
                    reuse = sq[idx].to(batch.loss.device) if self.unit == "sequence" else None
                    self._store(store, idx, batch, self._batch_values(batch, reuse, total, alpha))
                self._check_complete(seen, "value_epoch (sweep 2: the loader gave other rows than in sweep 1)")
        finally:
            model.train(was_training)
        row = self._history_row(store, True)
        self.epoch_values.append(row)
        self._prev = (total, alpha)
        return row

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def _options(self) -> tuple:
        return self.unit, self.reduction, self.utility, self.alpha

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume after a finished epoch: the epochs' values, the last epoch's statistics
        and α (ride-along values the next epoch against them), the options, the causal shift, and (unit="token")
        each sequence's scored positions and targets.

        Returns:
            a dict of ``n``, ``options`` (unit, reduction, utility, alpha), ``shift``, ``skip_epochs``,
            ``epoch_values``, ``previous`` ((n, Σx, Σ‖x‖², α or None), None before the first epoch) and ``tokens``
            (``torch.load`` reads it weights-only).
        """
        prev = None
        if self._prev is not None:
            st, a = self._prev
            prev = (int(st.n), st.sum.detach().cpu().clone(), st.sum_sq_norms.detach().cpu().clone(),
                    None if a is None else a.detach().cpu().clone())
        tokens = None if self._tokens is None else [None if t is None else (t[0].clone(), t[1].clone())
                                                    for t in self._tokens]
        return {"n": self.n, "options": self._options(), "shift": self.shift, "skip_epochs": self.skip_epochs,
                "epoch_values": [v.clone() for v in self.epoch_values], "previous": prev, "tokens": tokens}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict` after a finished epoch, dropping the epoch under way.

        Args:
            state: a dict from :meth:`state_dict`.
        Raises:
            ValueError: it is of a valuer with another n, options, skip_epochs or shift; an epoch's values of
                another length than the players' (n sequences, or the tokens recorded); statistics missing.
        """
        shift, tokens = state["shift"], state["tokens"]
        players = self.n if self.unit == "sequence" else (
            None if tokens is None or any(t is None for t in tokens) else sum(t[0].shape[0] for t in tokens))
        epoch_values = check_state(state, self, self._options(), players, f"{self.unit}s")
        if self.shift is not None and shift is not None and shift != self.shift:
            raise ValueError(f"load_state_dict: the checkpoint's valuer has shift={shift}, this one shift={self.shift}")
        prev = state["previous"]
        if (prev is None) != (len(state["epoch_values"]) == 0):
            raise ValueError(f"load_state_dict: the checkpoint holds {len(state['epoch_values'])} epoch(s) but "
                             f"{'no' if prev is None else 'some'} statistics of the last one: it is damaged")
        self.epoch_values = epoch_values
        self._prev = None if prev is None else (GroupStats(int(prev[0]), prev[1].clone(), prev[2].clone()),
                                                None if prev[3] is None else prev[3].clone())
        self._tokens = None if tokens is None else [None if t is None else (t[0].clone(), t[1].clone())
                                                    for t in tokens]
        self.shift = self.shift if shift is None else bool(shift)
        self._reset_epoch()

    # ---- results --------------------------------------------------------------------------------------------
    @property
    def token_count(self) -> int:
        """unit="token": the number of token players N (known once every sequence was seen)."""
        if self.unit != "token" or self._tokens is None or any(t is None for t in self._tokens):
            raise ValueError("token_count: unit='token' and every sequence seen once are needed")
        return sum(t[0].shape[0] for t in self._tokens)

    @property
    def token_index(self) -> np.ndarray:
        """unit="token": (N, 2) int64, each token player's (sequence, position in the sequence's labels from its
        first attended position: left padding, which changes with a batch's other rows, is not counted)."""
        self.token_count  # noqa: B018  (raises when not known)
        return torch.cat([torch.stack([torch.full_like(pos, i), pos], 1)
                          for i, (pos, _) in enumerate(self._tokens)]).numpy()

    def values(self, **meta) -> Values:
        """Each player's value averaged over the epochs it was valued in (after ``skip_epochs``), with the history.

        Args:
            **meta: settings to keep with the values (JSON-ready).
        Returns:
            :class:`chg.Values` — n sequences, or N tokens (``labels``: each token's target class; row order as
            :attr:`token_index`).
        Raises:
            ValueError: no epoch valued yet (ride-along values its first epoch as NaN: train two epochs), or only
                epochs among the first ``skip_epochs``.
        """
        history = torch.stack(self.epoch_values).numpy() if self.epoch_values else None
        kept = history[self.skip_epochs:] if history is not None else None
        if kept is None or kept.shape[0] == 0 or bool(np.isnan(kept).all()):
            raise ValueError(f"values: no epoch has been valued yet ({self.epochs} ended, skip_epochs="
                             f"{self.skip_epochs}); ride-along values start at the second epoch (the first only "
                             "gathers the statistics)")
        info = {"unit": self.unit, "reduction": self.reduction, "utility": self.utility, "alpha": self.alpha,
                "shift": self.shift, **meta}
        labels = torch.cat([t[1] for t in self._tokens]).numpy() if self.unit == "token" else None
        return Values(history, self.skip_epochs, labels=labels, meta=info)


def _read(tap: LastLayerTap, output) -> tuple:
    """``tap.read(output)`` with the sequence path's reading of its errors."""
    try:
        return tap.read(output)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"chg.sequence: the model's output layer must be an nn.Linear applied per position (the "
                         f"hooked layer is {tap.name!r}) whose output the model returns as its logits; pass "
                         f"layer=<that nn.Linear> if it is not the last one registered ({exc})") from None


def _batches(model: nn.Module, tap: LastLayerTap, loader, valuer: SequenceValuer, desc: str,
             progress: Optional[bool], need_index: bool = True):
    """(indices, SequenceBatch) of every batch of ``loader`` through ``model`` (no grad, the model's mode as it is).
    A tuple batch's third element is read as the rows' index only when the loader is known to carry it
    (:func:`chg.lastlayer.carries_index`, the rule of :func:`chg.separate_pass`); a dict's ``"index"`` always."""
    device = model_device(model)
    known = carries_index(loader)
    offset = 0
    total = len(loader) if hasattr(loader, "__len__") else None
    for batch in progress_bar(loader, total=total, unit="batch", desc=f"value_epoch {desc}", enabled=progress):
        if isinstance(batch, Mapping) and "labels" not in batch and "label" not in batch:
            raise ValueError(f"a batch needs its labels (B, T) under 'labels' (it has {sorted(batch)}); for a causal "
                             "LM set labels = input_ids, with -100 at padding")
        inputs, labels, idx = split_batch(batch)
        if idx is not None and not known and not isinstance(batch, Mapping):
            if need_index and not _sequential(loader):
                raise ValueError(unknown_index("value_epoch", loader))
            idx = None  # a sequential loader: rows numbered in order, the third element not read
        logits, feat = _read(tap, forward_batch(model, inputs, device))
        mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        labels = torch.as_tensor(labels)
        if idx is None and need_index:
            if not _sequential(loader):
                raise ValueError("value_epoch: batches without an 'index' must come from a plain sequential "
                                 "DataLoader (rows numbered in the order they come; a shuffled loader or a "
                                 "batch_sampler of your own, e.g. length bucketing, reorders them): add each row's "
                                 "index to its item (an 'index' key) otherwise")
            idx = torch.arange(offset, offset + labels.shape[0])
        offset += labels.shape[0]
        yield idx, sequence_batch(logits, labels, feat, mask, valuer.shift, valuer.reduction, tap.bias,
                                  valuer.vocab_chunk, rows=idx)

