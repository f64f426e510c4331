r"""What to do with data values: save them, rank them, list the suspects, plot them.

CHG Shapley values (:func:`chg.value_data`, :class:`chg.EpochValuer`) say how much each training point adds to the
CHG utility — **higher is better**; the lowest-valued points are the likely mislabeled or harmful ones. This module
turns the ``(n,)`` values into something a user acts on::

    report = ValuationReport.from_values(values, labels=y, loss=final_loss)   # index defaults to 0..n-1
    report.suspects()                  # row positions with value < threshold, lowest first
    report.to_csv("values.csv")        # row, label, value, rank (1 = lowest = most suspect)[, loss]
    report.plot("report")              # report.png + report.pdf: histogram, lowest rows, loss vs value

and for image data, :func:`plot_lowest_images` draws the k lowest-valued images with their given labels.

**Which threshold.** :data:`DEFAULT_THRESHOLD` = 0: a value below zero (eq. (3) of the paper) means that, averaged
over the subsets it can join, the point lowers the CHG utility :math:`U(S) = \|\alpha\|^2 - \|\bar x_S -
\alpha\|^2`: its loss-weighted last-layer gradient :math:`x_j = l_j g_j` moves the subset's mean away from
:math:`\alpha`, the mean over all points (the values sum to :math:`U(N)`). How well the rule finds flipped labels
(flagged share, precision, recall; and the k-lowest rule) is measured by ``benchmarks/bench_thresholds.py`` and
written to ``benchmarks/results/thresholds.md``: there ``value < 0`` is a conservative default — most rows it flags
are mislabeled, it misses some — and the k-lowest rule is the one to use when the number of bad labels can be guessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .io import atomic_write, write_csv_atomic

__all__ = ["DEFAULT_THRESHOLD", "ValuationReport", "as_values", "rank", "suspects", "plot_histogram",
           "plot_lowest_images"]

DEFAULT_THRESHOLD = 0.0


def as_values(values, name: str = "values") -> np.ndarray:
    """Data values as a float64 NumPy array, checked.

    Args:
        values: (n,) array, list or tensor (torch tensors are moved to the CPU). name: what the messages call it.
    Returns:
        (n,) float64 NumPy array (a copy when converted).
    Raises:
        ValueError: not 1-D, empty, or some entries are NaN (a row never valued) or infinite.
    """
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (one value per row), got shape {v.shape}")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ValueError(f"{name} has {bad.size} NaN/Inf entries (rows never valued, or a diverged run), first rows: "
                         f"{bad[:10].tolist()}")
    return v


def rank(values) -> np.ndarray:
    """Each row's rank by value.

    Args:
        values: (n,) data values (see :func:`as_values`).
    Returns:
        (n,) int64 ranks: 1 = lowest value = most suspect, n = highest; ties broken by row position.
    """
    v = as_values(values)
    out = np.empty(v.size, dtype=np.int64)
    out[np.argsort(v, kind="stable")] = np.arange(1, v.size + 1)
    return out


def suspects(values, k: Optional[int] = None, threshold: Optional[float] = DEFAULT_THRESHOLD) -> np.ndarray:
    """Positions of the likely mislabeled or harmful rows, lowest value first.

    Args:
        values: (n,) data values (numpy or torch), higher = better.
        k: keep at most the ``k`` lowest-valued rows (``None``: no limit).
        threshold: keep only rows with value ``< threshold`` (``None``: no threshold). The default 0 flags rows
            whose contribution to the CHG utility is negative (``benchmarks/results/thresholds.md`` measures how many
            of them are mislabeled). When you know roughly how many rows are bad (say 5%),
            ``k=round(0.05 * n), threshold=None`` is the rule to use.

    Returns:
        (m,) int64 row positions (0-based, into ``values``), sorted by value ascending (ties: lower position first).

    Raises:
        ValueError: NaN/Inf values; ``k`` not a non-negative integer (a bool, NaN, 2.5, -1); ``threshold`` not a
            number (NaN, a bool).
    """
    v = as_values(values)
    if k is not None:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, float, np.integer, np.floating)) \
                or not np.isfinite(k) or int(k) != k or k < 0:
            raise ValueError(f"k must be a non-negative integer (or None: no limit), got {k!r}")
    if threshold is not None and (isinstance(threshold, (bool, np.bool_)) or not isinstance(
            threshold, (int, float, np.integer, np.floating)) or np.isnan(threshold)):
        raise ValueError(f"threshold must be a number (or None: no threshold), got {threshold!r}")
    order = np.argsort(v, kind="stable")
    if threshold is not None:
        order = order[v[order] < threshold]
    if k is not None:
        order = order[:int(k)]
    return order.astype(np.int64)


def _numpy(a, name: str, n: int) -> Optional[np.ndarray]:
    if a is None:
        return None
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) like the values, got {a.shape}")
    return a


@dataclass(frozen=True)
class ValuationReport:
    """Data values with the rows they belong to. Build with :meth:`from_values` (validates and converts).

    Attributes:
        values: (n,) float64 data values, higher = better.
        index: (n,) row ids of the dataset (default ``0..n-1``; any hashable ids, e.g. a DataFrame's index).
        labels: (n,) the labels the rows were trained with (any dtype), or None.
        loss: (n,) float per-row training loss (e.g. at the end of training), or None; plotted against the value.
    """
    values: np.ndarray
    index: np.ndarray
    labels: Optional[np.ndarray] = None
    loss: Optional[np.ndarray] = None

    @classmethod
    def from_values(cls, values, labels=None, index=None, loss=None) -> "ValuationReport":
        """Validate and wrap.

        Args:
            values: (n,) NumPy array or tensor, higher = better. labels, index, loss: (n,) each, or None (index
                default ``0..n-1``).
        Returns:
            :class:`ValuationReport`.
        Raises:
            ValueError: NaN/Inf values or loss, mismatched lengths, or repeated row ids in ``index``.
        """
        v = as_values(values)
        n = v.size
        idx = np.arange(n) if index is None else _numpy(index if hasattr(index, "shape") else list(index), "index", n)
        if len(set(idx.tolist())) != n:
            raise ValueError("index has repeated row ids: each row must be named once")
        lab = _numpy(labels, "labels", n)
        lo = None if loss is None else as_values(_numpy(loss, "loss", n), "loss")
        return cls(v, idx, lab, lo)

    def __len__(self) -> int:
        return self.values.size

    def rank(self) -> np.ndarray:
        """Each row's rank (see :func:`rank`).

        Returns:
            (n,) int64, 1 = lowest value.
        """
        return rank(self.values)

    def suspects(self, k: Optional[int] = None, threshold: Optional[float] = DEFAULT_THRESHOLD) -> np.ndarray:
        """The suspects (see :func:`suspects`).

        Args:
            k, threshold: as in :func:`suspects`.
        Returns:
            row ids (from ``index``) of the suspects, lowest value first.
        """
        return self.index[suspects(self.values, k, threshold)]

    def to_frame(self):
        """The report as a table.

        Returns:
            pandas DataFrame in row order: ``row`` (the index), ``label``, ``value``, ``rank`` [, ``loss``].
        """
        import pandas as pd
        cols = {"row": self.index}
        if self.labels is not None:
            cols["label"] = self.labels
        cols["value"] = self.values
        cols["rank"] = self.rank()
        if self.loss is not None:
            cols["loss"] = self.loss
        return pd.DataFrame(cols)

    def to_csv(self, path) -> Path:
        """Write :meth:`to_frame` as CSV atomically (values with 17 significant digits: they read back exactly).

        Args:
            path: the file.
        Returns:
            ``path`` as a ``Path``.
        """
        return write_csv_atomic(path, self.to_frame())

    def to_npz(self, path) -> Path:
        """Write ``values``, ``index``, ``rank`` (and ``labels``, ``loss`` if present) to a ``.npz`` atomically.

        Args:
            path: the file (written as named: no ``.npz`` is appended).
        Returns:
            ``path`` as a ``Path``.
        """
        path = Path(path)
        arrays = {"values": self.values, "index": self.index, "rank": self.rank()}
        if self.labels is not None:
            arrays["labels"] = self.labels
        if self.loss is not None:
            arrays["loss"] = self.loss

        def write(tmp):
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
                np.savez(fh, **arrays)
        atomic_write(path, write)
        return path

    @classmethod
    def read_csv(cls, path) -> "ValuationReport":
        """Read a file written by :meth:`to_csv` back (labels come back as pandas parses them).

        Args:
            path: the CSV file.
        Returns:
            :class:`ValuationReport`.
        Raises:
            ValueError: no ``row`` or ``value`` column, or as :meth:`from_values`.
        """
        import pandas as pd
        frame = pd.read_csv(path)
        for col in ("row", "value"):
            if col not in frame.columns:
                raise ValueError(f"{path}: not a values file (no {col!r} column; columns are {list(frame.columns)})")
        return cls.from_values(frame["value"].to_numpy(), frame["label"].to_numpy() if "label" in frame else None,
                               frame["row"].to_numpy(), frame["loss"].to_numpy() if "loss" in frame else None)

    def plot(self, path=None, k: int = 15, threshold: Optional[float] = DEFAULT_THRESHOLD, images=None,
             title: Optional[str] = None):
        """One figure: value histogram, table of the ``k`` lowest-valued rows, loss vs value scatter (if ``loss``),
        and, with ``images`` ((n, H, W), (n, C, H, W), (n, H, W, C) or a Dataset of (image, label)), a grid of the
        lowest-valued images. ``path``: write ``path.png`` and ``path.pdf`` (suffix ignored) atomically, without
        pyplot (the backend is left alone); without ``path`` the figure is made with pyplot, to be shown.

        Args:
            path: file stem to write, or None. k: rows in the table. threshold: marked on the histogram (None:
                none). images: see above, or None. title: the figure's title, or None.
        Returns:
            the matplotlib Figure.
        """
        from matplotlib.figure import Figure
        panels = 2 + (self.loss is not None)
        rows = 2 if images is not None else 1
        size = dict(figsize=(5.2 * panels, 4.4 * rows), layout="constrained")
        if path is None:  # shown by the user's backend (a notebook, a window)
            import matplotlib.pyplot as plt
            fig = plt.figure(**size)
        else:  # written to files only: no pyplot, no backend switch, nothing left open
            fig = Figure(**size)
        grid = fig.add_gridspec(rows, panels)
        plot_histogram(self.values, fig.add_subplot(grid[0, 0]), threshold)
        self._plot_table(fig.add_subplot(grid[0, 1]), k)
        if self.loss is not None:
            self._plot_scatter(fig.add_subplot(grid[0, 2]), k, threshold)
        if images is not None:
            sub = fig.add_subfigure(grid[1, :])
            plot_lowest_images(images, self.values, self.labels, k=min(16, len(self)), fig=sub)
        if title:
            fig.suptitle(title)
        if path is not None:
            stem = Path(path).with_suffix("")
            for ext in (".png", ".pdf"):
                atomic_write(stem.with_suffix(ext), lambda tmp, e=ext: fig.savefig(tmp, format=e[1:], dpi=120))
        return fig

    def _plot_table(self, ax, k: int) -> None:
        low = suspects(self.values, k, threshold=None)
        head = ["rank", "row"] + (["label"] if self.labels is not None else []) + ["value"] + \
            (["loss"] if self.loss is not None else [])
        cells = []
        for r, i in enumerate(low, 1):
            row = [str(r), _short(self.index[i])] + ([_short(self.labels[i])] if self.labels is not None else [])
            row += [f"{self.values[i]:.3g}"] + ([f"{self.loss[i]:.3g}"] if self.loss is not None else [])
            cells.append(row)
        ax.axis("off")
        ax.set_title(f"the {len(low)} lowest-valued rows (most suspect)")
        if cells:
            table = ax.table(cellText=cells, colLabels=head, loc="upper center", cellLoc="right")
            table.auto_set_font_size(False)
            table.set_fontsize(8)
            table.scale(1.0, 1.1)

    def _plot_scatter(self, ax, k: int, threshold: Optional[float]) -> None:
        flagged = np.zeros(len(self), dtype=bool)
        flagged[suspects(self.values, None, threshold if threshold is not None else -np.inf)] = True
        ax.scatter(self.loss[~flagged], self.values[~flagged], s=6, alpha=0.5, color="tab:blue",
                   label="not flagged")
        ax.scatter(self.loss[flagged], self.values[flagged], s=8, alpha=0.7, color="tab:red",
                   label=f"value < {threshold:g} ({int(flagged.sum())})" if threshold is not None else "flagged")
        ax.set_xlabel("training loss")
        ax.set_ylabel("CHG value (higher = better)")
        ax.set_title("loss vs value")
        ax.legend(fontsize=8)


def _short(x, width: int = 14) -> str:
    s = str(x.item() if hasattr(x, "item") else x)
    return s if len(s) <= width else s[:width - 1] + "…"


def plot_histogram(values, ax=None, threshold: Optional[float] = DEFAULT_THRESHOLD, bins: int = 50):
    """Histogram of the values (log count axis), with the threshold marked.

    Args:
        values: (n,) data values. ax: matplotlib Axes to draw on (a new figure if None). threshold: marked with a
            line and the count below it (None: not marked). bins: histogram bins.
    Returns:
        the Axes.
    """
    import matplotlib.pyplot as plt
    v = as_values(values)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(v, bins=bins, color="tab:blue", alpha=0.8)
    ax.set_yscale("log")  # the few very negative values (the suspects) stay visible beside the bulk
    if threshold is not None:
        below = int((v < threshold).sum())
        ax.axvline(threshold, color="tab:red", lw=1)
        ax.text(0.02, 0.95, f"{below} of {v.size} below {threshold:g}", transform=ax.transAxes, va="top",
                fontsize=9, color="tab:red")
    ax.set_xlabel("CHG value (higher = better)")
    ax.set_ylabel("rows (log scale)")
    ax.set_title("distribution of the values")
    return ax


def _image(x) -> np.ndarray:
    """One image as (H, W) or (H, W, 3) floats in [0, 1] for imshow (per-image min-max)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)  # (C, H, W) → (H, W, C)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"an image must be (H, W), (C, H, W) or (H, W, C) with C in (1, 3); got shape {a.shape}")
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def plot_lowest_images(images, values, labels=None, k: int = 16, fig=None, classes=None, cols: int = 8):
    """Grid of the ``k`` lowest-valued images, each titled with its row, given label and value.

    Args:
        images: (n, H, W), (n, C, H, W) or (n, H, W, C) array/tensor, or a Dataset whose item ``i`` is
            ``(image, label, ...)`` with a tensor, array or PIL image (only the k shown are read).
        values: (n,) data values.
        labels: (n,) given labels; None takes them from a Dataset's items.
        k: how many images.
        fig: a matplotlib Figure or SubFigure to draw into (a new Figure if None).
        classes: optional names of the classes, indexed by label.
        cols: images per row.

    Returns:
        the Figure (or SubFigure).

    Raises:
        ValueError: as many images as values are not given, or an image of an unknown shape.
    """
    import matplotlib.pyplot as plt
    v = as_values(values)
    if len(images) != v.size:
        raise ValueError(f"{len(images)} images but {v.size} values")
    low = suspects(v, k, threshold=None)
    cols = max(1, min(cols, len(low)))
    nrows = max(1, -(-len(low) // cols))
    if fig is None:
        fig = plt.figure(figsize=(1.6 * cols, 1.9 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    from_dataset = not hasattr(images, "shape")
    for ax, i in zip(axes, low):
        item = images[int(i)]
        img, lab = (item[0], item[1]) if from_dataset else (item, None)
        if labels is not None:
            lab = labels[int(i)]
        lab = _short(lab, 10) if lab is not None else "?"
        if classes is not None and lab != "?":
            lab = _short(classes[int(lab)], 10)
        a = _image(np.asarray(img) if not hasattr(img, "detach") else img)
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None)
        ax.set_title(f"#{int(i)} {lab}\n{v[i]:.3g}", fontsize=7)
    fig.suptitle(f"the {len(low)} lowest-valued images: row, given label, value", fontsize=9)
    return fig

