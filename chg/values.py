r"""``chg.Values``: what every route to CHG Shapley values returns.

:func:`chg.value_data`, :meth:`chg.EpochValuer.values`, the OpenDataVal plugin, the integrations and ``chg value``
all hand back one :class:`Values`: each training row's value (Algorithm 1, line 7: the average over epochs), the
per-epoch history it is the average of, and what a user does next — the suspects, a table, a plot, a file::

    values = chg.value_data(model, (X, y), epochs=5)
    values.suspects()                 # rows most likely mislabeled or harmful, lowest value first
    values.to_csv("values.csv")       # row, label, value, rank, std, epochs
    values.plot("values")             # values.png + values.pdf
    values.save("values.npz"); chg.Values.load("values.npz")   # exact round trip, no pickle

**Higher is better**: a row's value is its average contribution to the CHG utility
:math:`U(S) = \|\alpha\|^2 - \|\bar x_S - \alpha\|^2` (the paper's eq. (3)); below zero, it moves the mean away from
α. ``numpy.asarray(values)``, ``values[i]`` and ``len(values)`` give the numbers.
"""
from __future__ import annotations

import io
import json
import operator
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .report import DEFAULT_THRESHOLD, ValuationReport, as_values
from .io import atomic_write, write_csv_atomic

__all__ = ["Values"]

FORMAT = "chg.Values/1"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive's first bytes (what np.savez writes)


def _column(a, name: str, n: int) -> Optional[np.ndarray]:
    """A per-row column as a NumPy array of length n (tensors moved to the CPU), or None."""
    if a is None:
        return None
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) like the values, got {a.shape}")
    return a


def _as_ids(index):
    """Row ids as given: a list of mixed kinds (``["a", 1]``, ``[0, False]``) stays objects, not made all strings or
    all numbers by NumPy."""
    if hasattr(index, "shape"):
        return index
    items = list(index)
    kinds = {"str" if isinstance(i, str) else "bool" if isinstance(i, (bool, np.bool_)) else "other" for i in items}
    return np.array(items, dtype=object) if len(kinds) > 1 else items


def is_missing(i) -> bool:
    """A missing entry (a row id, a label): None, NaN, NaT or ``pd.NA`` (which is not equal to itself, or cannot
    say)."""
    if i is None:
        return True
    try:
        return bool(i != i)
    except TypeError:  # pd.NA: "boolean value of NA is ambiguous"
        return True


def storable(a: np.ndarray) -> Optional[np.ndarray]:
    """An object array of row ids or labels as :meth:`Values.save` stores it (without pickle): all strings or all
    numbers, as an array of their own dtype; None for anything else (tuples, periods, dates with a time zone, a mix).

    Args:
        a: (n,) a NumPy array of dtype object.
    Returns:
        the array to store, or None.
    """
    items = a.tolist()
    if all(isinstance(i, str) for i in items) or all(
            isinstance(i, (int, float, np.number)) and not isinstance(i, bool) for i in items):
        return np.array(items)
    return None


def _sum_meta(a: dict, b: dict, epochs: int) -> dict:
    """The meta of a sum of two :class:`Values` (see :meth:`Values.__add__`): the keys equal in both, ``"epochs"``
    recounted as the sum's ``epochs`` history rows, and ``"parts"`` (each part's meta) when the two differ."""
    out = {k: v for k, v in a.items() if k not in ("epochs", "parts") and k in b and b[k] == v}
    if "epochs" in a or "epochs" in b:
        out["epochs"] = int(epochs)
    if a != b:
        out["parts"] = [dict(m) for part in (a, b) for m in (part["parts"] if isinstance(part.get("parts"), list)
                                                                  else [part])]
    return out


class Values:
    """Data values of n training rows, with the per-epoch history they average.

    Args:
        history: (E, n) floating array or tensor, E ≥ 1 epochs: row i's value in epoch k, NaN where the row was not
            valued that epoch. A (n,) array is one epoch.
        skip_epochs: the first k epochs (0 ≤ k < E) left out of :attr:`values` (kept in :attr:`history`).
        index: (n,) row ids (default 0..n-1), e.g. a DataFrame's index; numbers or strings.
        labels: (n,) the labels the rows were trained with, or None.
        meta: a JSON-serialisable dict of settings (utility, mode, epochs, ...), kept in files.
    Raises:
        ValueError: an empty history, a history that is not 1- or 2-D, ``skip_epochs`` outside [0, E), columns of
            another length, or repeated or missing (NaN) row ids.
        TypeError: ``skip_epochs`` not an integer.
    """

    def __init__(self, history, skip_epochs: int = 0, *, index=None, labels=None, meta: Optional[dict] = None):
        if isinstance(history, torch.Tensor):  # (bfloat16 and float16 too: read in float64)
            history = history.detach().cpu()
            history = history.double() if history.is_floating_point() else history
        h = history.numpy() if isinstance(history, torch.Tensor) else np.asarray(history)
        h = np.array(h, dtype=np.float64, ndmin=2)  # own copy
        if h.ndim != 2 or h.shape[0] == 0 or h.shape[1] == 0:
            raise ValueError(f"history must be (epochs, n) with at least one epoch and one row, got shape {h.shape}")
        if np.isinf(h).any():
            raise ValueError("history holds Inf: a diverged run (values are finite, or NaN for a row not valued)")
        self._history = h
        self._history.flags.writeable = False
        self._skip = self._check_skip(skip_epochs, h.shape[0])
        n = h.shape[1]
        self.index = np.arange(n) if index is None else _column(_as_ids(index), "index", n)
        if index is not None and (bool(np.isnan(self.index).any()) if self.index.dtype.kind in "fcmM" else
                                  self.index.dtype == object and any(is_missing(i) for i in self.index.tolist())):
            raise ValueError("index has missing row ids (None, NaN, NaT, pd.NA): each row must be named")
        if index is not None and len(set(self.index.tolist())) != n:
            seen: dict = {}
            for i in self.index.tolist():
                if i in seen:
                    which = f"{i!r} twice" if repr(i) == repr(seen[i]) else \
                        f"{seen[i]!r} and {i!r}: equal in Python, so one id"
                    raise ValueError(f"index has repeated row ids ({which}): each row must be named once")
                seen[i] = i
            raise ValueError("index has repeated row ids: each row must be named once")
        self.labels = _column(labels, "labels", n)
        self.meta = dict(meta or {})
        json.dumps(self.meta)  # fails early (TypeError) when not serialisable

    @staticmethod
    def _check_skip(k, epochs: int) -> int:
        if isinstance(k, bool):
            raise TypeError(f"skip_epochs must be an integer, got {k!r}")
        try:
            k = operator.index(k)
        except TypeError:
            raise TypeError(f"skip_epochs must be an integer, got {k!r}") from None
        if not 0 <= k < epochs:
            raise ValueError(f"skip_epochs must lie in [0, {epochs}) (the number of first epochs left out of the "
                             f"average; {epochs} epoch(s) were valued), got {k}")
        return k

    # ---- the numbers -----------------------------------------------------------------------------------------
    @property
    def history(self) -> np.ndarray:
        """(E, n) float64, read-only: every epoch's values (NaN: the row was not valued that epoch)."""
        return self._history

    @property
    def shape(self) -> tuple:
        """``(n,)``, the shape of :attr:`values`."""
        return (self._history.shape[1],)

    @property
    def skipped(self) -> int:
        """The number of first epochs left out of :attr:`values`."""
        return self._skip

    @property
    def epochs(self) -> int:
        """E, the epochs in :attr:`history`."""
        return self._history.shape[0]

    @property
    def count(self) -> np.ndarray:
        """(n,) int64: the epochs (after the skipped ones) in which each row was valued."""
        return np.sum(~np.isnan(self._history[self._skip:]), axis=0)

    @property
    def values(self) -> np.ndarray:
        """(n,) float64: each row's value averaged over the epochs it was valued in (after the skipped ones); NaN for
        a row never valued."""
        h, c = self._history[self._skip:], self.count
        total = np.where(np.isnan(h), 0.0, h).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, total / np.maximum(c, 1), np.nan)

    @property
    def std(self) -> np.ndarray:
        """(n,) float64: the standard deviation of each row's value over those epochs (0 for one epoch; NaN never)."""
        h, c, v = self._history[self._skip:], self.count, self.values
        dev = np.where(np.isnan(h), 0.0, h - v) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, np.sqrt(dev.sum(axis=0) / np.maximum(c, 1)), np.nan)

    def skip_epochs(self, k: int) -> "Values":
        """The same history with the first ``k`` epochs left out of the average (a view: nothing is recomputed).

        Args:
            k: 0 ≤ k < :attr:`epochs`.
        Returns:
            :class:`Values`.
        Raises:
            ValueError / TypeError: as the constructor's ``skip_epochs``.
        """
        out = object.__new__(Values)
        out.__dict__.update(self.__dict__)
        out._skip = self._check_skip(k, self.epochs)
        return out

    def __add__(self, other: "Values") -> "Values":
        """Values of two runs of the same rows combined, each row's mean weighted by its count: a resumed run's two
        parts, or shards of one data set (NaN where a shard did not value a row). The epochs each left out are
        dropped; the history is the two histories one after the other.

        The sum's :attr:`meta` says what is true of the sum: the settings both parts share (a key with the same
        value in both); ``"epochs"``, when a part has it, recounted as the sum's history (the epochs it averages);
        and, when the parts' metas differ in anything, ``"parts"``: each part's meta as it was (the parts of a part
        that was itself a sum listed in its place), so a setting that differs (two learning rates, two modes) is
        kept there, never passed off as the whole sum's.

        Raises:
            TypeError: ``other`` is not a :class:`Values`. ValueError: another n, index or labels.
        """
        if not isinstance(other, Values):
            return NotImplemented
        if len(other) != len(self) or not np.array_equal(self.index, other.index):
            raise ValueError(f"Values of different rows cannot be added (n = {len(self)} and {len(other)}, or other "
                             "row ids)")
        if (self.labels is None) != (other.labels is None) or (
                self.labels is not None and not np.array_equal(self.labels, other.labels)):
            raise ValueError("Values with different labels cannot be added")
        h = np.concatenate([self._history[self._skip:], other._history[other._skip:]])
        return Values(h, 0, index=self.index, labels=self.labels, meta=_sum_meta(self.meta, other.meta, h.shape[0]))

    def __radd__(self, other) -> "Values":
        """``0 + values`` is ``values``, so that ``sum(runs)`` combines a list of runs (:meth:`__add__`).

        Raises:
            TypeError: ``other`` is anything but the integer 0.
        """
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __len__(self) -> int:
        return self._history.shape[1]

    def __getitem__(self, i):
        return self.values[i]

    def __iter__(self):
        return iter(self.values)

    def __array__(self, dtype=None, copy=None):
        v = self.values
        return v if dtype is None else v.astype(dtype)

    def numpy(self) -> np.ndarray:
        """The values as NumPy.

        Returns:
            :attr:`values`, (n,) float64.
        """
        return self.values

    def to_tensor(self):
        """The values as torch.

        Returns:
            :attr:`values` as a (n,) float64 CPU ``torch.Tensor``.
        """
        import torch
        return torch.from_numpy(self.values)

    def __repr__(self) -> str:
        v = self.values
        ok = v[~np.isnan(v)]
        return (f"Values(n={len(self)}, epochs={self.epochs}, skip_epochs={self._skip}, valued={ok.size}, "
                f"below 0={int((ok < 0).sum())}, mean={ok.mean() if ok.size else float('nan'):.4g})")

    # ---- acting on them --------------------------------------------------------------------------------------
    def report(self, loss=None) -> ValuationReport:
        """The rows as a :class:`chg.report.ValuationReport` (its image and histogram plots take more options).

        Args:
            loss: (n,) per-row loss to plot against the value, or None.
        Returns:
            :class:`chg.report.ValuationReport` of the rows that were valued (rows never valued — NaN, possible with
            ``partial_epochs`` — are left out of it: they are not suspects).
        Raises:
            ValueError: no row was valued, or ``loss`` of another length or not finite.
        """
        v = self.values
        seen = ~np.isnan(v)
        if not seen.any():
            raise ValueError("no row was valued (every value is NaN)")
        if seen.all():
            return ValuationReport.from_values(as_values(v), self.labels, self.index, loss)
        if loss is not None:
            loss = np.asarray(loss.detach().cpu() if hasattr(loss, "detach") else loss, dtype=np.float64)
            if loss.shape != v.shape:
                raise ValueError(f"loss must have one entry per row, shape {v.shape}, got {loss.shape}")
            loss = loss[seen]
        return ValuationReport.from_values(as_values(v[seen]), None if self.labels is None else self.labels[seen],
                                           self.index[seen], loss)

    def rank(self) -> np.ndarray:
        """Each row's rank by value.

        Returns:
            (n,) int64 ranks in row order: 1 = lowest value = most suspect (ties by row position); 0 for a row never
            valued (NaN, possible with ``partial_epochs``).
        Raises:
            ValueError: no row was valued.
        """
        seen = ~np.isnan(self.values)
        out = np.zeros(len(seen), dtype=np.int64)
        out[seen] = self.report().rank()
        return out

    def suspects(self, k: Optional[int] = None, threshold: Optional[float] = DEFAULT_THRESHOLD) -> np.ndarray:
        """Row ids (from :attr:`index`) of the likely mislabeled or harmful rows, lowest value first.

        Args:
            k: at most the ``k`` lowest (None: no limit). threshold: only values below it (None: none; default 0, a
                negative contribution to the utility — ``benchmarks/results/thresholds.md`` measures the rule).
        Returns:
            (m,) row ids (rows never valued are not among them).
        Raises:
            ValueError: no row was valued, or k < 0.
        """
        return self.report().suspects(k, threshold)

    def to_pandas(self):
        """The rows as a table.

        Returns:
            a pandas DataFrame in row order: ``row``, [``label``], ``value``, ``rank``, ``std``, ``epochs`` (the
            epochs averaged); NaN values (never valued) get rank NaN.
        """
        import pandas as pd
        v = self.values
        cols = {"row": self.index}
        if self.labels is not None:
            cols["label"] = self.labels
        cols["value"] = v
        order = np.argsort(np.where(np.isnan(v), np.inf, v), kind="stable")
        rank = np.empty(len(v), dtype=np.float64)
        rank[order] = np.arange(1, len(v) + 1)
        rank[np.isnan(v)] = np.nan
        cols["rank"] = pd.array(rank, dtype="Int64") if not np.isnan(v).any() else rank
        cols["std"] = self.std
        cols["epochs"] = self.count
        return pd.DataFrame(cols)

    def to_csv(self, path) -> Path:
        """Write :meth:`to_pandas` as CSV, atomically (17 significant digits: values read back exactly).

        Args:
            path: the file.
        Returns:
            ``path`` as a ``Path``.
        """
        return write_csv_atomic(path, self.to_pandas())

    def plot(self, path=None, k: int = 15, threshold: Optional[float] = DEFAULT_THRESHOLD, images=None,
             title: Optional[str] = None, loss=None):
        """A histogram of the values, a table of the ``k`` lowest rows (and, with ``loss``, loss against value;
        with ``images``, the lowest rows' images): :meth:`chg.report.ValuationReport.plot`.

        Args:
            path: file stem: writes ``path.png`` and ``path.pdf`` atomically; None: a pyplot figure, to be shown.
            k, threshold, images, title: as there. loss: (n,) per-row loss, or None.
        Returns:
            the matplotlib Figure.
        """
        return self.report(loss).plot(path, k=k, threshold=threshold, images=images, title=title)

    # ---- files and checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything, for a training checkpoint (:meth:`from_state_dict` reads it back; ``torch.load`` reads it
        weights-only, as it does :meth:`chg.EpochValuer.state_dict`, when row ids and labels are numbers, strings or
        bools).

        Returns:
            a dict: ``history`` an (E, n) float64 tensor; ``index`` and ``labels`` tensors (numbers, bools) or lists
            (strings), NumPy arrays when they hold anything else (dates); labels None when there are none;
            ``skip_epochs``, ``meta`` and ``format``.
        """
        def plain(a):  # what torch.load reads weights-only: a tensor of numbers or bools, a list of strings
            stored = storable(a) if a.dtype == object else None  # object strings or numbers: of their own dtype
            a = a if stored is None else stored
            if a.dtype.kind in "biuf":
                return torch.from_numpy(a.copy())
            return [str(i) for i in a.tolist()] if a.dtype.kind == "U" else a.copy()
        return {"format": FORMAT, "history": torch.from_numpy(self._history.copy()), "skip_epochs": self._skip,
                "index": plain(self.index), "labels": None if self.labels is None else plain(self.labels),
                "meta": dict(self.meta)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Values":
        """The :class:`Values` of :meth:`state_dict`.

        Args:
            state: a dict from :meth:`state_dict`.
        Returns:
            :class:`Values`.
        Raises:
            ValueError: not a state of this format.
        """
        if state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} state (format {state.get('format')!r})")
        return cls(state["history"], state["skip_epochs"], index=state["index"], labels=state["labels"],
                   meta=state["meta"])

    def save(self, path) -> Path:
        """Write a ``.npz`` file atomically that :meth:`load` reads back exactly, without pickle (row ids and labels
        must be numbers or strings).

        Args:
            path: the file (written as named).
        Returns:
            ``path`` as a ``Path``.
        Raises:
            ValueError: row ids or labels of Python objects (not storable without pickle).
        """
        path = Path(path)
        arrays = {"history": self._history, "skip_epochs": np.int64(self._skip), "index": self.index,
                  "format": np.array(FORMAT), "meta": np.array(json.dumps(self.meta))}
        if self.labels is not None:
            arrays["labels"] = self.labels
        for name in ("index", "labels"):
            if name in arrays and arrays[name].dtype == object:
                stored = storable(arrays[name])
                if stored is None:
                    raise ValueError(f"{name} must hold numbers or strings (all of one kind) to be saved, without "
                                     "pickle")
                arrays[name] = stored
        buf = io.BytesIO()
        np.savez(buf, **arrays)

        def write(tmp):
            Path(tmp).write_bytes(buf.getvalue())
        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path) -> "Values":
        """Read a file written by :meth:`save` (``allow_pickle=False``: a file from someone else cannot run code).

        Args:
            path: the ``.npz`` file.
        Returns:
            :class:`Values`.
        Raises:
            FileNotFoundError: no file at ``path`` (and the other ``OSError`` of opening it).
            ValueError: not a values file (not an ``.npz`` archive — e.g. the CSV of :meth:`to_csv`, which pandas
                reads —, no history, or another format); or an ``.npz`` (zip) archive that cannot be read — a file
                corrupt or truncated (a copy cut short, a full disk), naming the path and the underlying error.
        """
        import zipfile
        import zlib
        with open(path, "rb") as f:  # a missing file is FileNotFoundError naming it, not "not a chg.Values file"
            head = f.read(4)
        if head not in _ZIP_MAGIC and not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not a chg.Values file (Values.load reads the .npz that Values.save writes; the "
                             "CSV of Values.to_csv is a table for people and pandas: pandas.read_csv)")
        try:  # every array read (and its CRC checked) here: a damaged archive fails inside, not in the constructor
            with np.load(path, allow_pickle=False) as z:
                names = z.files
                arrays = {k: z[k] for k in ("history", "meta", "skip_epochs", "index", "labels", "format")
                          if k in names}
            meta = json.loads(str(arrays["meta"])) if "meta" in arrays else None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
            if "allow_pickle" in str(e):  # whole, but holding Python objects: not what Values.save writes
                raise ValueError(f"{path}: not a chg.Values file (it holds pickled Python objects, which Values.load "
                                 "does not read: a file from someone else could run code)") from None
            raise ValueError(f"{path}: a corrupt or truncated .npz file, not readable as chg.Values "
                             f"({type(e).__name__}: {e}); write it again with Values.save (from the run's "
                             "values, or a good copy of the file)") from e
        if any(k not in arrays for k in ("history", "skip_epochs", "index")) or not isinstance(meta, dict):
            raise ValueError(f"{path}: not a chg.Values file (arrays {names})")
        # the format: its own array (after 0.3.0: meta may hold a "format" of its own), or meta's entry (before)
        tag = str(arrays["format"]) if "format" in arrays else meta.pop("format", None)
        if tag != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file")
        return cls(arrays["history"], int(arrays["skip_epochs"]), index=arrays["index"],
                   labels=arrays.get("labels"), meta=meta)
