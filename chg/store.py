r"""Where ride-along keeps an epoch's rows: one append-only store of the factors, written once, read in chunks.

A training step hands over a batch's row indices, targets, the output layer's output (its logits — or, from
:meth:`chg.EpochValuer.add`, the loss and error already made) and its input (the features). :class:`RowStore` copies
them into contiguous buffers at a running offset: slice copies only — no indexing by row, no reduction, no host-device
synchronisation, so an accelerator's training pipeline never stalls on the valuation. The features are stored centred
on a reference point (the mean of the epoch's first rows, ``RowStore.offset``): the subtraction rides on the copy, and
the passes of eq. (3) then never subtract (their precision needs it: :mod:`chg.factored`). Everything that needs a
value on the host (index and target ranges, NaN) is checked once over the epoch by :func:`check_rows`, and the
logits become errors in place, chunk by chunk (:func:`materialise`): the factors are kept once, never logits and
errors side by side. Bytes kept per row: ``s·(C + D) + 8 + 8 + 4`` for storage dtype size ``s`` (index, target,
loss); what each batch holds (logits or errors) is kept per batch.

Three homes for the buffers (``offload``):

* ``None`` — the device of the first batch (a GPU's memory on a GPU);
* ``"host"`` — host memory (pinned when the batches come from CUDA; copies are non-blocking), for epochs larger than
  the accelerator's memory;
* ``"disk"`` — memory-mapped files in ``directory`` (a temporary directory by default), for epochs larger than the
  host's memory: ImageNet's 1.28 M rows × (1000 + 2048) float32 is 15.6 GB. The chunked passes read it back once each.

Storage dtype (``dtype``): float32 by default; ``torch.bfloat16`` / ``torch.float16`` halve the bytes per row. The
passes compute in float64 / float32 whatever the storage (:mod:`chg.factored`); what half-precision storage costs in
value error is measured in ``benchmarks/results/memory.md`` and bounded in the tests.
"""
from __future__ import annotations

import os
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from .distributed import lowest_rank
from .lastlayer import BAD_TARGET

__all__ = ["RowStore", "OFFLOADS", "STORAGE_DTYPES"]

OFFLOADS = (None, "host", "disk")
STORAGE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_KIND_LOGITS, _KIND_ERR = 0, 1  # what a row's C-vector holds until materialise(): logits, or loss + error already


_HUGE = 2 << 20  # a transparent huge page of x86-64 and arm64 Linux (2 MiB)
_madvise = None  # libc's madvise, found at the first large buffer (False: none here)


def huge_pages(t: torch.Tensor) -> torch.Tensor:
    """Ask Linux to back a large CPU buffer with transparent huge pages (``madvise(MADV_HUGEPAGE)`` over the whole
    2 MiB pages inside it; nothing else is touched): its first writes — an epoch's rows, batch by batch — then take a
    page fault per 2 MiB instead of per 4 KiB: what a fresh valuer's first epoch costs with and without is measured
    in ``benchmarks/results/first_epoch.md`` (``benchmarks/bench_first_epoch.py``). A no-op elsewhere (another OS,
    a GPU tensor, a buffer under 4 MiB, huge pages off: ``madvise`` then fails, and the buffer is used as it is).

    Args:
        t: a tensor just allocated.
    Returns:
        ``t`` itself.
    """
    global _madvise
    nbytes = t.numel() * t.element_size()
    if nbytes < 2 * _HUGE or t.device.type != "cpu" or not sys.platform.startswith("linux"):
        return t
    if _madvise is None:
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _madvise = libc.madvise
        except (OSError, AttributeError):
            _madvise = False
    if _madvise:
        start = -(-t.data_ptr() // _HUGE) * _HUGE  # the whole huge pages inside the buffer
        end = (t.data_ptr() + nbytes) // _HUGE * _HUGE
        if end > start:
            _madvise(start, end - start, 14)  # MADV_HUGEPAGE (Linux); a failure leaves 4 KiB pages
    return t


def _np_dtype(dtype: torch.dtype):
    return {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
            torch.bfloat16: np.uint16, torch.int64: np.int64, torch.uint8: np.uint8}[dtype]


class RowStore:
    """Append-only rows of one epoch in contiguous buffers (see the module docstring).

    Args:
        n: the number of training rows (the first capacity; it grows when a row is added twice).
        dtype: storage dtype of the C- and D-vectors, one of :data:`STORAGE_DTYPES`; None: float32 (float64 input
            stays float64).
        offload: None | "host" | "disk" (:data:`OFFLOADS`). directory: for "disk", where the memory-mapped files go
            (default: a new temporary directory, removed with the store).
    Raises:
        ValueError: an unknown ``offload`` or ``dtype``; a ``directory`` without ``offload="disk"``, or one that cannot
            be made.
    """

    def __init__(self, n: int, dtype: Optional[torch.dtype] = None, offload: Optional[str] = None,
                 directory=None):
        if offload not in OFFLOADS:
            raise ValueError(f"offload must be one of {OFFLOADS}, got {offload!r}")
        if dtype is not None and dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
        self.n, self.dtype, self.offload = n, dtype, offload
        if directory is not None and offload != "disk":
            raise ValueError(f"directory={str(directory)!r} is where offload='disk' keeps its files, but offload is "
                             f"{offload!r}: pass offload='disk' too, or no directory")
        if offload == "disk" and directory is not None:  # made now (a file in its place: a clear error now)
            directory = Path(directory).expanduser()  # "~/store" is the home's
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ValueError(f"offload='disk': cannot use {str(directory)!r} as the directory of the store's "
                                 f"files ({e.strerror or e})") from None
        self.directory = directory
        self._tmp = None
        self.size = 0  # rows appended
        self.batches = 0
        self.starts: list = []  # each batch's first row (to name a batch in a message)
        self.kinds: list = []  # each batch's C-vectors: _KIND_LOGITS or _KIND_ERR
        self.bias: Optional[bool] = None
        self.offset: Optional[torch.Tensor] = None  # (D,) the features' reference point this epoch (see append)
        self.idx = self.target = self.z = self.feat = self.loss = None
        self._sig = None  # (C, D, dtypes, device) of the buffers, to reuse them in the next epoch
        self._nb = self._here = False  # this epoch: non-blocking copies; the buffers on the batches' device
        self._generation, self._files = 0, []  # "disk": the memory-mapped files made (removed when dropped)
        # the files go with the store even when it is never closed (a user's directory is not removed, its files are)
        weakref.finalize(self, _remove, self._files)

    # ---- buffers ---------------------------------------------------------------------------------------------
    def _alloc(self, shape: tuple, dtype: torch.dtype, device, name: str) -> torch.Tensor:
        if self.offload == "disk":
            if self.directory is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="chg-store-")
                self.directory = self._tmp.name
            self._generation += 1  # a new file for each buffer made: growing copies from the old file to the new
            path = Path(self.directory) / f"{name}-{os.getpid()}-{id(self)}-{self._generation}.bin"
            arr = np.memmap(path, dtype=_np_dtype(dtype), mode="w+", shape=shape)
            self._files.append(path)
            t = torch.from_numpy(arr)
            return t.view(dtype) if dtype == torch.bfloat16 else t
        if self.offload == "host":
            pin = torch.device(device).type == "cuda"
            return huge_pages(torch.empty(shape, dtype=dtype, pin_memory=pin))
        return huge_pages(torch.empty(shape, dtype=dtype, device=device))

    def _make(self, cap: int, C: int, D: int, zdtype, fdtype, device) -> None:
        self.idx = self._alloc((cap,), torch.int64, device, "idx")
        self.target = self._alloc((cap,), torch.int64, device, "target")
        self.z = self._alloc((cap, C), zdtype, device, "z")
        self.feat = self._alloc((cap, D), fdtype, device, "feat")
        self.loss = self._alloc((cap,), torch.float32 if zdtype != torch.float64 else torch.float64, device, "loss")

    def _grow(self, need: int) -> None:
        """Capacity for ``need`` rows (doubling; rare: a row added twice in one epoch, e.g. a padded sampler)."""
        old, old_files = (self.idx, self.target, self.z, self.feat, self.loss), list(self._files)
        self._files.clear()  # (the same list object: the finaliser removes what it holds)
        cap = max(need, 2 * old[0].shape[0])
        self._make(cap, self.z.shape[1], self.feat.shape[1], self.z.dtype, self.feat.dtype, self.z.device)
        for new, t in zip((self.idx, self.target, self.z, self.feat, self.loss), old):
            new[:self.size].copy_(t[:self.size])
        del old, new, t
        _remove(old_files)

    @property
    def capacity(self) -> int:
        """Rows the buffers hold now (0 before the first batch)."""
        return 0 if self.idx is None else self.idx.shape[0]

    def nbytes(self) -> int:
        """The memory the store holds.

        Returns:
            bytes the buffers take (all five, at their capacity), an int.
        """
        if self.idx is None:
            return 0
        return sum(t.numel() * t.element_size() for t in (self.idx, self.target, self.z, self.feat, self.loss))

    def _dtypes(self, z: torch.Tensor, feat: torch.Tensor) -> tuple:
        """Storage dtypes of the C- and D-vectors: the store's ``dtype``, else float32 (float64 stays float64)."""
        return tuple(self.dtype or (torch.float64 if t.dtype == torch.float64 else torch.float32) for t in (z, feat))

    # ---- writing ---------------------------------------------------------------------------------------------
    def append(self, idx: torch.Tensor, target: torch.Tensor, z: torch.Tensor, feat: torch.Tensor, bias: bool,
               loss: Optional[torch.Tensor] = None) -> None:
        """Copy one batch in at the running offset: ``z`` logits (``loss`` None) or errors (with ``loss``); the
        features less :attr:`offset` (the mean of the finite entries of the epoch's first ≤ 32 rows, set by its first
        non-empty batch).

        Args:
            idx: (B,) int64 row indices. target: (B,) int64 targets. z: (B, C) floating, detached. feat: (B, D)
                floating, detached. bias: the output layer has a bias. loss: (B,) floating, or None.
        Raises:
            ValueError: row counts that differ; C, D or ``bias`` differ from the first batch's.
        """
        B = z.shape[0]
        if idx.shape[0] != B or feat.shape[0] != B or (loss is not None and loss.shape[0] != B):
            raise ValueError(f"{idx.shape[0]} indices, {B} rows of logits and {feat.shape[0]} of feat" if loss is None
                             else f"{idx.shape[0]} indices but factors have loss {tuple(loss.shape)}, err "
                             f"{tuple(z.shape)}, feat {tuple(feat.shape)}")
        if self.size == 0:  # an epoch's first batch: buffers of its shape (those of the last epoch when they fit)
            sig = (z.shape[1], feat.shape[1], *self._dtypes(z, feat), z.device if self.offload is None else None)
            if self.idx is not None and sig != self._sig:
                self.close()
            if self.idx is None:
                self._make(max(self.n, B), *sig[:4], z.device)
                self._sig = sig
            self.bias, self.offset = bool(bias), None
            self._nb = self.offload == "host" and z.device.type == "cuda"  # pinned host buffer: asynchronous copies
            self._here = self.feat.device == feat.device  # centre straight into the buffer
        elif z.shape[1] != self._sig[0] or feat.shape[1] != self._sig[1]:
            raise ValueError(f"this batch has C={z.shape[1]}, D={feat.shape[1]} but earlier batches had "
                             f"C={self._sig[0]}, D={self._sig[1]}")
        elif bias is not self.bias and bool(bias) != self.bias:
            raise ValueError("factors of a head with bias and of a head without bias in one epoch")
        end = self.size + B
        if B:  # (an empty batch writes nothing, and sets no offset)
            if self.offset is None:  # on the batch's device, no synchronisation
                f = feat[:32].to(torch.float64 if feat.dtype == torch.float64 else torch.float32)
                self.offset = torch.where(torch.isfinite(f), f, 0.0).mean(0)
            if end > self.idx.shape[0]:
                self._grow(end)
            nb, s = self._nb, slice(self.size, end)
            if loss is None and z.shape[1] > 1 and self.z.dtype in (torch.float16, torch.bfloat16):
                # half-precision storage keeps each row's logits less the row's largest: the softmax and the loss
                # are unchanged by that shift, the rounding is not (logits near 1,000 keep ~3 significant bits in
                # bfloat16, their differences near the top ~8)
                zf = z.float()
                z = zf - zf.amax(1, keepdim=True)
            self.idx[s].copy_(idx, non_blocking=nb)
            self.target[s].copy_(target, non_blocking=nb)
            self.z[s].copy_(z, non_blocking=nb)
            if self._here:
                torch.sub(feat, self.offset, out=self.feat[s])
            else:  # to pinned host memory or a memory-mapped file: centre on the batch's device, then copy
                self.feat[s].copy_(feat - self.offset, non_blocking=nb)
            if loss is not None:
                self.loss[s].copy_(loss, non_blocking=nb)
        self.starts.append(self.size)
        self.kinds.append(_KIND_LOGITS if loss is None else _KIND_ERR)
        self.size, self.batches = end, self.batches + 1

    # ---- reading ---------------------------------------------------------------------------------------------
    def chunks(self, rows: int) -> Iterator[slice]:
        """The appended rows in pieces.

        Args:
            rows: the most rows per piece (≥ 1).
        Yields:
            ``slice`` objects of the store's rows, in order.
        """
        for a in range(0, self.size, max(1, rows)):
            yield slice(a, min(self.size, a + rows))

    def logit_rows(self) -> Optional[torch.Tensor]:
        """Which rows hold logits (from ``append`` without ``loss``), not errors.

        Returns:
            None when every row does (the common case: nothing is built), else a (size,) bool tensor on the
            buffers' device.
        """
        if all(k == _KIND_LOGITS for k in self.kinds):
            return None
        sizes = torch.tensor([b - a for a, b in zip(self.starts, self.starts[1:] + [self.size])])
        kinds = torch.tensor(self.kinds) == _KIND_LOGITS
        return torch.repeat_interleave(kinds, sizes).to(self.idx.device)

    def reset(self) -> None:
        """Empty the store for the next epoch, keeping its buffers (no new allocation, no page faults)."""
        self.size = self.batches = 0
        self.starts, self.kinds = [], []
        self.bias = self.offset = None

    def close(self) -> None:
        """Drop the buffers (and the files of the "disk" store, with its temporary directory)."""
        self.idx = self.target = self.z = self.feat = self.loss = None
        _remove(self._files)
        self._files.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.directory = None


def _remove(paths: list) -> None:
    """Delete memory-mapped buffer files (a mapping still open keeps its pages until it is dropped)."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# ---- the epoch's end: every check that needs a value, once; logits become errors in place; who plays --------------

def _batch_of(starts: list, pos: int) -> int:
    """The 0-based batch (of the epoch) that store row ``pos`` came in."""
    import bisect
    return bisect.bisect_right(starts, pos) - 1


def _at(store: RowStore, starts: list, pos: int) -> str:
    """Where store row ``pos`` came in, for a message: its batch, its position in it, its row of the data."""
    b = _batch_of(starts, pos)
    return f"first in batch {b} of this epoch, at its position {pos - starts[b]}, row {int(store.idx[pos])} of the data"


def _name(store: RowStore, pos: int) -> str:
    return "add_logits" if store.kinds[_batch_of(store.starts, pos)] == _KIND_LOGITS else "add"


def check_rows(store: RowStore, n: int, starts: Optional[list] = None, caller: Optional[str] = None) -> None:
    """Indices in [0, n) and, for rows of logits, targets in [0, C) (0/1 for one logit): one vectorised pass over
    the epoch's rows (one host synchronisation per check).

    Args:
        store: the epoch's :class:`RowStore`. n: the number of training rows. starts: each batch's first store row
            (default ``store.starts``). caller: None — the rows came from the user's own loop, and a message names
            the verb that added them (``add_logits``, ``add``) and the batch of the epoch; or the name of the
            function the user called whose separate pass added them (``"value_epoch"``, ``"value_data"``: the
            batches are its own), which a message names with each row of the data.
    Raises:
        ValueError: naming the verb (or ``caller``), the range found, and the first offending batch and its rows (or
            the row of the data); a target out of range says to encode the labels as 0..C-1.
    """
    m, starts = store.size, store.starts if starts is None else starts
    idx = store.idx[:m]
    lo, hi = (int(v) for v in torch.stack(torch.aminmax(idx)).tolist())
    if lo < 0 or hi >= n:
        bad = ((idx < 0) | (idx >= n)).nonzero().squeeze(1)
        b = _batch_of(starts, int(bad[0]))
        in_batch = (bad[(bad >= starts[b]) & (bad < (starts[b + 1] if b + 1 < len(starts) else m))] - starts[b])
        of = "of the loader" if caller else "of this epoch"
        raise ValueError(f"{caller or _name(store, int(bad[0]))}: indices must lie in [0, {n}), got range [{lo}, "
                         f"{hi}] (first in batch {b} {of}, at its positions {in_batch[:5].tolist()})")
    if _KIND_LOGITS not in store.kinds:
        return
    logit_rows = store.logit_rows()
    if logit_rows is None:
        logit_rows = torch.ones(m, dtype=torch.bool, device=idx.device)
    C = store.z.shape[1]
    t = store.target[:m]
    top = 2 if C == 1 else C
    bad = logit_rows & ((t < 0) | (t >= top))
    if bool(bad.any()):
        pos = bad.nonzero().squeeze(1)
        first = int(pos[0])
        if caller is None:  # the user's loop: its batch and the position in it
            b = _batch_of(starts, first)
            end = starts[b + 1] if b + 1 < len(starts) else m
            tb = t[starts[b]:end][logit_rows[starts[b]:end]]  # the offending batch's targets: its range
            where = f"(first in batch {b} of this epoch, at its position {first - starts[b]})"
            verb = "add_logits"
        else:  # the caller's own batches: the data's first row outside the range, and the range over all rows
            tb = t[logit_rows]
            first = int(pos[store.idx[pos].argmin()])
            where = f"(first outside it: row {int(store.idx[first])} of the data, target {int(t[first])})"
            verb = caller
        soft = t[pos] == BAD_TARGET
        if bool(soft.any()):
            if caller is not None:
                where = f"(first: row {int(store.idx[pos][soft].min())} of the data)"
            raise ValueError(f"{verb}: a 1-logit head (binary cross-entropy) needs targets 0 or 1; soft targets "
                             f"are not supported {where}")
        raise label_range_error(verb, C, int(tb.min()), int(tb.max()), where)


def label_range_error(verb: str, C: int, lo: int, hi: int, where: str) -> ValueError:
    """The one message for class labels outside the output layer's range (``check_rows``, ``value_data``'s loop).

    Args:
        verb: the function the user called. C: the output layer's outputs. lo, hi: the labels' range. where: the
            offending row, e.g. "(first outside it: row 100 of the data, target 3)".
    Returns:
        the ``ValueError`` to raise.
    """
    if C == 1:
        return ValueError(f"{verb}: a 1-logit head (binary cross-entropy) needs targets 0 or 1, got range [{lo}, "
                          f"{hi}] {where}; for more classes give the output layer one output per class")
    return ValueError(f"{verb}: targets must lie in [0, {C}), got range [{lo}, {hi}] {where}: class labels must "
                      f"be 0..{C - 1}, one per output of the output layer — encode them (codes, classes = "
                      "pandas.factorize(y), or sklearn.preprocessing.LabelEncoder), or give the output layer one "
                      "output per class")




def materialise(store: RowStore, loss_and_error, weight=None, label_smoothing: float = 0.0,
                starts: Optional[list] = None, caller: Optional[str] = None) -> None:
    """Rows of logits → their loss and error, in place (the C-vector buffer then holds errors), chunk by chunk.

    Args:
        store: the epoch's :class:`RowStore` (after :func:`check_rows`). loss_and_error: the function
            (logits, targets, weight, label_smoothing) → (loss, err) (:func:`chg.lastlayer.loss_and_error`).
        weight, label_smoothing: of the training loss. starts: each batch's first store row (to name the batch of
            the first non-finite row; default ``store.starts``). caller: as :func:`check_rows`.
    Raises:
        ValueError: NaN/Inf logits (naming the verb, the batch and the row's position in it; with ``caller``, it and
            the row of the data).
    """
    if _KIND_LOGITS not in store.kinds:
        return
    starts = store.starts if starts is None else starts
    C, D = store.z.shape[1], store.feat.shape[1]
    rows = max(256, (1 << 20) // max(C + D, 1))
    dev = store.z.device
    logit_rows = store.logit_rows()  # None: every row (no selection)
    for s in store.chunks(rows):
        if logit_rows is None:
            sel, whole = None, True
        else:
            sel = logit_rows[s].nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            whole = sel.numel() == s.stop - s.start
        z = store.z[s] if whole else store.z[s][sel]
        y = store.target[s] if whole else store.target[s][sel]
        try:
            loss, err = loss_and_error(z.to(dev, torch.float32 if z.dtype != torch.float64 else z.dtype),
                                       y.to(dev), weight, label_smoothing)
        except ValueError as e:
            where = "rows given to add_logits this epoch" if caller is None else "rows of the data"
            bad = (~torch.isfinite(z.float()).all(1)).nonzero().squeeze(1)
            if starts and bad.numel():
                pos = s.start + (int(sel[int(bad[0])]) if not whole else int(bad[0]))
                at = _at(store, starts, pos) if caller is None else f"first at row {int(store.idx[pos])} of the data"
                where = f"{'rows given to add_logits this epoch: ' if caller is None else ''}{at}; a NaN/Inf " \
                        f"feature gives NaN logits{_half_hint(store)}"
            raise ValueError(f"{caller or 'end_epoch'}: {e} ({where})") from None
        if whole:
            store.z[s].copy_(err)
            store.loss[s].copy_(loss)
        else:
            store.z[s][sel] = err.to(store.z.dtype).to(store.z.device)
            store.loss[s][sel] = loss.to(store.loss.dtype).to(store.loss.device)
    store.kinds = [_KIND_ERR] * len(store.kinds)


def _half_hint(store: RowStore) -> str:
    """For a message on NaN/Inf: what a float16 store does to finite rows beyond its range ("" for other stores)."""
    if torch.float16 not in (getattr(store.z, "dtype", None), getattr(store.feat, "dtype", None)):
        return ""
    return ("; this store keeps float16, whose largest finite value is 65504: a finite logit spread or feature "
            "beyond it becomes Inf there — store float32 or bfloat16")


def nonfinite_row(store: RowStore) -> Optional[str]:
    """Where the epoch's first row with a NaN/Inf feature, softmax error or loss came in, for a message (None if every
    one is finite). Rows given as logits are read after :func:`materialise` (their error and loss made).

    Args:
        store: the epoch's :class:`RowStore` (before ``reset``).
    Returns:
        ``"a NaN/Inf feature first in batch b of this epoch, at its position p, row i of the data"`` (or "softmax
        error", "loss"), or None.
    """
    m = store.size
    if not m:
        return None
    for what, t in (("feature", store.feat), ("softmax error", store.z), ("loss", store.loss)):
        bad = (~torch.isfinite(t[:m])).reshape(m, -1).any(1).nonzero().squeeze(1)
        if bad.numel():
            return f"a NaN/Inf {what} {_at(store, store.starts, int(bad[0]))}{_half_hint(store)}"
    return None


def players(store: RowStore, n: int, ddp: bool, device=None) -> tuple:
    """Which stored rows play this epoch's game on this process: each training row once — its last row in the store
    (a row added twice is one player), and under torch.distributed only on the lowest rank that has it.

    Args:
        store: the epoch's :class:`RowStore` (it may hold no row: a rank whose shard was empty). n: training rows.
        ddp: torch.distributed is initialised (then a collective: every rank must call it). device: where a store
            that never held a row works (:func:`chg.distributed.collective_device`); default the CPU.
    Returns:
        ``(positions, valued, repeated)``: (p,) int64 store rows playing here, in store order; (n,) bool CPU: the
        rows valued on some process; the number of additions on this process of a row already added this epoch
        (``store.size`` less the distinct rows; 0 when every row came once).
    """
    m = store.size
    idx = store.idx[:m] if store.idx is not None else torch.zeros(0, dtype=torch.int64, device=device or "cpu")
    pos = torch.arange(m, device=idx.device)
    last = torch.full((n,), -1, dtype=torch.int64, device=idx.device).scatter_reduce_(0, idx, pos, "amax")
    mine = last[idx] == pos  # (m,) the row's last appearance
    repeated = m - int(mine.sum())
    seen = last >= 0  # (n,)
    if ddp:
        owner, rank, world = lowest_rank(seen)  # (n,) the lowest rank that has each row (world: none)
        mine &= owner[idx] == rank
        seen = owner < world
    return mine.nonzero().squeeze(1), seen.cpu(), repeated
