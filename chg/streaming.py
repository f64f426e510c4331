r"""Streaming ride-along values: memory independent of n, an approximation of Algorithm 1 (beyond the paper).

:class:`chg.EpochValuer` keeps every row's factors until the epoch ends, because eq. (3) for a row needs the whole
epoch's statistics (n, :math:`s = \sum_i x_i`, :math:`\sum_i \|x_i\|^2`, α): 4·(C + D) bytes per row, 15.6 GB for
ImageNet's 1.28 M rows with C = 1000, D = 2048. :class:`StreamingValuer` keeps none: each batch is valued the moment
it arrives, against the statistics of the **previous** epoch's game (in the first epoch: of the epoch so far, this
batch included), while the batch's own statistics are summed for the next epoch. What it keeps is the statistics
(one C × (D+1) matrix per group) and the values themselves (8 bytes per row per epoch).

This is an approximation, not the paper's Algorithm 1: a row's value is eq. (3) for its current vector
:math:`x_j = l_j g_j` in a game whose other players are last epoch's. When the parameters do not move (learning rate
0) every epoch after the first gives exactly Algorithm 1's ride-along values (tested); how far it is from them in a
real run — Spearman, overlap of the lowest 10%, detection AUC — is measured by ``benchmarks/bench_streaming.py``
(``benchmarks/results/streaming.md``), so that a user can decide.

Every row enters each epoch's game once, as with :class:`chg.EpochValuer` (the same rule,
:func:`chg.valuation.check_complete`): a row not added is an error at :meth:`StreamingValuer.end_epoch` unless
``partial_epochs=True`` (then a warning naming how many). An epoch that an error cuts short is dropped with
:meth:`StreamingValuer.discard_epoch`; a long run checkpoints :meth:`StreamingValuer.state_dict` after an epoch and
resumes with :meth:`StreamingValuer.load_state_dict` to the values of an uninterrupted run.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

from .distributed import is_distributed
from .factored import GroupStats, Options, stats_by_group, utility_values
from .lastlayer import Factors, as_targets, check_logits, check_loss, loss_and_error, upcast
from .renames import OPTIONS_REMOVED, renamed
from .valuation import (SKIP_MEANING, RepeatedRowsWarning, check_bias, check_complete, check_same_head, check_state,
                        count, flag, head_of, int_tensor, loss_record)
from .values import Values

__all__ = ["StreamingValuer"]


def _one_process(verb: str) -> None:
    """Refuse torch.distributed with several processes: each rank would value its batches against its own shard's
    statistics (another game on every rank, and a wrong one), not the epoch's."""
    if is_distributed():
        import torch.distributed as dist
        raise RuntimeError(f"StreamingValuer.{verb}: torch.distributed is initialised with {dist.get_world_size()} "
                           "processes, but StreamingValuer values each batch as it arrives against the statistics of "
                           "this process's rows alone: every rank would value another game, and none the epoch's. "
                           "Under torchrun use chg.EpochValuer (its end_epoch all-reduces the epoch's statistics; "
                           "docs/torchrun.md), or run in one process")


@renamed("0.3.0", options=OPTIONS_REMOVED)
class StreamingValuer:
    """Ride-along values with memory independent of n (see the module docstring: an approximation of Algorithm 1).

    Args:
        n: number of training points (indices ``0..n-1``), an integer ≥ 1.
        utility, gradient, per_class: as :class:`chg.Options` (``alpha`` is the group mean; no validation α).
        skip_epochs: the first k epochs left out of :meth:`values`.
        weight, label_smoothing: the training loss (as ``F.cross_entropy`` takes them).
        partial_epochs: as :class:`chg.EpochValuer`: False (default): an epoch in which some row was not added is an
            error at :meth:`end_epoch`; True: the rows seen are the epoch's game, with a warning naming how many
            were not.
    Raises:
        TypeError / ValueError: as :class:`chg.EpochValuer` for the same arguments.
    """

    def __init__(self, n: int, utility: str = "chg", gradient: str = "full", per_class: bool = False,
                 skip_epochs: int = 0, weight=None, label_smoothing: float = 0.0, partial_epochs: bool = False):
        self.n = count(n, "StreamingValuer: n", 1, " (the number of training points)")
        self.options = Options(utility=utility, gradient=gradient, per_class=per_class)
        self.skip_epochs = count(skip_epochs, "skip_epochs", 0, SKIP_MEANING)
        self.weight, self.label_smoothing = weight, label_smoothing
        check_loss(None, weight, label_smoothing)
        self.partial_epochs = flag(partial_epochs, "partial_epochs")
        self.epoch_values: list = []  # (n,) float64 per finished epoch, NaN where a row was not seen
        self._previous: Optional[dict] = None  # group -> GroupStats of the last finished epoch
        self._shape: Optional[tuple] = None  # (C, D, bias) of the head of the ended epochs
        self._start_epoch()

    epochs = property(lambda self: len(self.epoch_values), doc="the epochs ended so far")

    def _start_epoch(self) -> None:
        self._current: dict = {}  # group -> GroupStats summed over this epoch's batches
        self._vals = torch.full((self.n,), float("nan"), dtype=torch.float64)
        self._repeated = 0  # additions of a row already added this epoch
        self._added = 0  # additions this epoch
        self._head: Optional[tuple] = None  # (C, D, bias) of this epoch's first batch

    def discard_epoch(self) -> int:
        """Drop the epoch under way (its values and statistics so far), e.g. of an epoch that an error cut short,
        so that a rerun of the epoch adds each row once; the ended epochs are kept (as
        :meth:`chg.EpochValuer.discard_epoch`).

        Returns:
            the number of rows dropped (additions since the last :meth:`end_epoch`; 0: no epoch was under way).
        """
        dropped = self._added
        self._start_epoch()
        return dropped

    def add_logits(self, indices, logits: torch.Tensor, targets: torch.Tensor, feat: torch.Tensor,
                   bias: bool = True) -> torch.Tensor:
        """Value a training batch now, against the previous epoch's statistics, and add its statistics to this
        epoch's (the same arguments as :meth:`chg.EpochValuer.add_logits`).

        Args:
            indices: (B,) row indices in [0, n). logits: (B, C) floating. targets: (B,) class labels. feat: (B, D)
                floating features. bias: a bool, the output layer has a bias.
        Returns:
            the batch's values (B,) float64 (also kept for :meth:`values`).
        Raises:
            ValueError: indices that are not integers or out of range, row counts that differ, labels, shapes or
                NaN/Inf as :func:`chg.lastlayer.loss_and_error`, a head (C, D, bias) other than the earlier batches'
                and epochs' — before anything is added (a batch that raises leaves the valuer as it was).
            TypeError: a ``bias`` that is not a bool.
            RuntimeError: torch.distributed initialised with several processes (use :class:`chg.EpochValuer`).
        A row added again in the same epoch gets its new value, and both additions count in the next epoch's
        statistics (:meth:`end_epoch` warns); :class:`chg.EpochValuer` keeps its last only. An empty batch adds
        nothing (its values: an empty tensor).
        """
        _one_process("add_logits")
        check_logits(logits)
        if not isinstance(feat, torch.Tensor) or feat.ndim != 2:
            raise ValueError(f"add_logits: feat must be a (B, D) tensor, got {getattr(feat, 'shape', type(feat))}")
        targets = as_targets(targets, logits.device)  # a list, array or Series, as EpochValuer.add_logits
        check_bias(bias, "add_logits")
        idx = int_tensor(indices, "add_logits: indices")
        B = logits.shape[0]
        if idx.shape[0] != B or feat.shape[0] != B:
            raise ValueError(f"add_logits: {idx.shape[0]} indices, {B} rows of logits and {feat.shape[0]} of feat")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
            raise ValueError(f"add_logits: indices must lie in [0, {self.n}), got range [{int(idx.min())}, "
                             f"{int(idx.max())}]")
        head = (logits.shape[1], feat.shape[1], bool(bias))
        check_same_head(self._shape or self._head, head, "add_logits", "StreamingValuer")
        if B == 0:  # an empty batch (the last of a sampler, a filter): nothing to value or to sum
            return torch.empty(0, dtype=torch.float64, device=logits.device)
        loss, err = loss_and_error(logits.detach(), targets, self.weight, self.label_smoothing)
        fac = Factors(loss, err, upcast(feat.detach()), bool(bias))
        groups = targets.reshape(-1).to(device=err.device, dtype=torch.int64) if self.options.per_class else None
        batch = stats_by_group(fac, self.options, groups)
        current = dict(self._current)  # the epoch's statistics with this batch: kept only if the batch is valued
        for g, st in batch.items():
            current[g] = st + current[g] if g in current else st
        if self._previous is not None and any(st.sum.device != err.device for st in self._previous.values()):
            self._previous = {g: GroupStats(st.n, st.sum.to(err.device), st.sum_sq_norms.to(err.device))
                              for g, st in self._previous.items()}  # a checkpoint's, read on the CPU
        games = self._previous if self._previous is not None else current  # the first epoch: so far
        out = torch.empty(err.shape[0], dtype=torch.float64, device=err.device)
        for g in batch:
            rows = torch.arange(err.shape[0], device=err.device) if groups is None else \
                (groups == g).nonzero().squeeze(1)
            stats = games.get(g) or current[g]  # a class not seen last epoch: this epoch's so far
            out[rows] = utility_values(fac[rows], stats, self.options)
        self._current = current
        self._head = self._head or head
        self._repeated += B - int(torch.isnan(self._vals[torch.unique(idx)]).sum())  # B less its new rows
        self._added += B
        self._vals[idx] = out.cpu()
        return out

    def end_epoch(self) -> torch.Tensor:
        """Close the epoch: its statistics become the next epoch's game.

        Returns:
            the epoch's values (n,) float64 (NaN for rows not seen, with ``partial_epochs``).
        Raises:
            ValueError: no row was added this epoch; a row was not added (without ``partial_epochs``: the message
                says how many). Either way the epoch is dropped (the next one starts empty).
            RuntimeError: torch.distributed initialised with several processes (use :class:`chg.EpochValuer`).
        """
        _one_process("end_epoch")
        try:  # whatever is raised, the epoch goes: the next one starts empty
            if not self._current:
                raise ValueError("end_epoch: no training rows were added this epoch")
            check_complete(~torch.isnan(self._vals), self.partial_epochs, "end_epoch", "StreamingValuer",
                           stacklevel=4)
        except ValueError:
            self._start_epoch()
            raise
        if self._repeated:
            warnings.warn(f"StreamingValuer.end_epoch: {self._repeated} addition(s) this epoch were of a row already "
                          "added: each counts in the next epoch's statistics; the row's value is its last. Likely "
                          "causes: the epoch was run again after an error without valuer.discard_epoch() (call it in "
                          "an except around the epoch), a padded sampler, or a row twice in a batch",
                          RepeatedRowsWarning, stacklevel=2)
        self.epoch_values.append(self._vals)
        self._previous = {g: GroupStats(st.n, st.sum.clone(), st.sum_sq_norms.clone())
                          for g, st in self._current.items()}
        self._shape = self._head
        self._start_epoch()
        return self.epoch_values[-1]

    def state_dict(self) -> dict:
        """What a checkpoint needs to resume after a finished epoch: the epochs' values, the last epoch's statistics
        (the next epoch's game), the options, the loss and the head.

        Returns:
            a dict of ``n``, ``epoch_values``, ``skip_epochs``, ``options``, ``loss``, ``head`` and ``previous``
            ({group: (n, Σx, Σ‖x‖²)}, None before the first epoch) (``torch.load`` reads it weights-only).
        """
        previous = None if self._previous is None else {
            int(g): (int(st.n), st.sum.detach().cpu().clone(), st.sum_sq_norms.detach().cpu().clone())
            for g, st in self._previous.items()}
        o = self.options
        return {"n": self.n, "epoch_values": [v.clone() for v in self.epoch_values], "skip_epochs": self.skip_epochs,
                "options": (o.utility, o.gradient, o.per_class), "loss": loss_record(self.weight, self.label_smoothing),
                "head": self._shape, "previous": previous}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict` after a finished epoch, dropping the epoch under way: the next epoch is
        valued against the checkpoint's last epoch, as in an uninterrupted run.

        Args:
            state: a dict from :meth:`state_dict`.
        Raises:
            ValueError: it is of a valuer with another n, options, loss or skip_epochs, or an epoch's values are of
                another length than n (:func:`chg.valuation.check_state`); its statistics are missing or of
                another shape than its head's.
        """
        o = self.options
        values = check_state(state, self, (o.utility, o.gradient, o.per_class))
        previous = state.get("previous")
        if "previous" not in state or (previous is None) != (len(values) == 0):
            raise ValueError(f"load_state_dict: the checkpoint holds {len(values)} epoch(s) but "
                             f"{'no' if previous is None else 'some'} statistics of the last one: it is not a "
                             "StreamingValuer's state_dict, or it is damaged")
        stats = None if previous is None else {int(g): GroupStats(int(m), s.clone().to(torch.float64),
                                                                  q.clone().to(torch.float64))
                                               for g, (m, s, q) in previous.items()}
        self.epoch_values, self._previous, self._shape = values, stats, head_of(state)
        self._start_epoch()

    def values(self, **meta) -> Values:
        """Each row's value averaged over the epochs after the first ``skip_epochs`` (:class:`chg.Values`).

        Args:
            **meta: settings to keep with the values.
        Returns:
            :class:`chg.Values`, its meta saying ``mode="stream"`` (an approximation).
        Raises:
            ValueError: no epoch ended after the first ``skip_epochs``.
        """
        if len(self.epoch_values) <= self.skip_epochs:
            raise ValueError(f"values: {len(self.epoch_values)} epoch(s) ended; skip_epochs={self.skip_epochs}")
        info = {"mode": "stream", "utility": self.options.utility, "gradient": self.options.gradient,
                "per_class": self.options.per_class, **meta}
        return Values(torch.stack(self.epoch_values).numpy(), self.skip_epochs, meta=info)
