r"""The contract every selection method shares: its input and output records, the budgets, the registry.

A selection method is a plain function ``select_xxx(inp: SelectionInput) -> Selection``, registered under the name
the trainer and the reproduce scripts use with :func:`register` (the function, whether it needs the last-layer
factors of the pool, whether it is re-run every R epochs or only once at the start). This module imports nothing
else from :mod:`chg.selection`: Algorithm 2 (:mod:`chg.selection.algorithm2`) and the baselines
(:mod:`chg.selection.random_subset`, :mod:`chg.selection.glister`, :mod:`chg.selection.gradmatch`) import it, and
:mod:`chg.selection` imports all of them, so :data:`SELECTORS` is complete once ``chg.selection`` is imported and a
broken method fails at import time.

**One budget for every method.** A pool of n points at fraction a keeps :math:`k = \mathrm{round}(a\,n)` points
(:func:`budget`: half up, at least 1, at most n). Algorithm 2 shares k out over the classes (:func:`class_budgets`,
largest remainder), so :math:`\sum_c k_c = k` exactly and every method trains on the same number of points.
"""
from __future__ import annotations

import math
from fractions import Fraction
import numbers
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..lastlayer import Factors
from ..renames import renamed

__all__ = ["SelectionInput", "Selection", "Selector", "SELECTORS", "register", "get_selector", "check_fraction",
           "budget", "class_budgets", "check_selection", "make_selection", "pool_size", "as_labels"]


def as_labels(labels, name: str = "labels", *, n: int | None = None, num_classes: int | None = None) -> torch.Tensor:
    """Class labels as a 1-D int64 tensor: the one label validator of chg's consumers (selection, detection).

    Args:
        labels: a torch tensor of any integer dtype (its device kept), a NumPy array of any integer dtype, a pandas
            Series or a list of ints. name: what the messages call them.
        n: the number of labels expected (one per row of the data they go with); None: any.
        num_classes: C, when given the labels must lie in [0, C); None: not checked.
    Returns:
        (n,) int64 tensor (a CPU copy for NumPy and lists).
    Raises:
        ValueError: floating-point, boolean, complex or non-numeric labels (naming the dtype and what to pass),
            labels that are not 1-D, not ``n`` of them, or outside [0, num_classes).
    """
    if isinstance(labels, torch.Tensor):
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"{name} must be integer class labels, got a tensor of dtype {labels.dtype}; pass "
                             f"integer labels, e.g. {name}.long() if the values are whole numbers")
        out = labels.long()
    else:
        try:
            arr = np.asarray(labels)
        except Exception as exc:  # noqa: BLE001 - re-raised with the cause
            raise ValueError(f"{name} must be integer class labels (a tensor, NumPy array or list of ints), got "
                             f"{type(labels).__name__}") from exc
        if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
            raise ValueError(f"{name} must be integer class labels, got {type(labels).__name__} of dtype "
                             f"{arr.dtype}; pass an integer array, e.g. {name}.astype('int64')")
        out = torch.from_numpy(arr.astype(np.int64, copy=True))
    if out.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per pool point), got shape {tuple(out.shape)}")
    if n is not None and out.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one label per row), got {tuple(out.shape)}")
    if num_classes is not None and out.numel() and (int(out.min()) < 0 or int(out.max()) >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got range [{int(out.min())}, {int(out.max())}]")
    return out


def _as_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


@renamed("0.2.0", epoch=None)
@dataclass
class SelectionInput:
    """What a selection method is given about the candidate pool of n points.

    Attributes:
        factors: last-layer factors of the pool (:class:`chg.Factors`: loss (n,), err (n, C), feat (n, D)), or None
            for methods that do not need them.
        labels: (n,) class labels of the pool (possibly noisy); any integer dtype, torch or NumPy (stored as int64,
            on the tensor's device).
        num_classes: C.
        fraction: a in (0, 1]: the share of the pool to keep, k = round(a·n) points (:func:`budget`).
        generator: the method's only source of randomness (seeded by the trainer).
        val_factors, val_labels: the validation set's factors and labels (GLISTER; GradMatch-PB with target "val").
        batch_size: GradMatch-PB's mini-batch size (consecutive chunks of a fixed permutation of the pool).
        lr: the trainer's learning rate: GLISTER's look-ahead step η (as CORDS sets it); None for GLISTER's default.

    Raises:
        ValueError: labels or val_labels that are not 1-D integer labels (see :func:`as_labels`), a non-integer
            ``num_classes``, or a fraction outside (0, 1] (:func:`check_fraction`).
    """
    factors: Factors | None
    labels: torch.Tensor
    num_classes: int
    fraction: float
    generator: torch.Generator
    val_factors: Factors | None = None
    val_labels: torch.Tensor | None = None
    batch_size: int = 128
    lr: float | None = None

    def __post_init__(self):
        self.labels = as_labels(self.labels, "labels")
        if self.val_labels is not None:
            self.val_labels = as_labels(self.val_labels, "val_labels")
        self.num_classes = _as_int(self.num_classes, "num_classes")
        check_fraction(self.fraction)


@dataclass
class Selection:
    """A method's output.

    Attributes:
        indices: (k,) int64 indices into the pool, unique.
        weights: (k,) float32 sample weights >= 0 (all ones for unweighted methods; Algorithm 2's min-max weights).
    """
    indices: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class Selector:
    """A registered method.

    Attributes:
        fn: ``fn(inp: SelectionInput) -> Selection``.
        needs_factors: the trainer computes the pool's factors before calling.
        adaptive: re-run every R epochs (True) or once at the start (False).
        needs_val: needs ``val_factors`` / ``val_labels``.
        ride_along: the pool's factors come from the training forward passes since the last selection (train mode,
            the training batches as augmented) instead of a separate eval-mode pass; rows not trained on since then
            from a train-mode pass without parameter or running-statistics updates
            (:func:`chg.experiments.train.train`).
    """
    fn: Callable[[SelectionInput], Selection]
    needs_factors: bool
    adaptive: bool
    needs_val: bool = False
    ride_along: bool = False

    def __call__(self, inp: SelectionInput) -> Selection:
        """Run the method: ``SELECTORS[name](inp)`` is ``SELECTORS[name].fn(inp)``.

        Args:
            inp: the pool's :class:`SelectionInput`.
        Returns:
            the method's :class:`Selection`.
        Raises:
            ValueError: as the method raises for inputs it cannot use (e.g. no factors for a method that needs them).
        """
        return self.fn(inp)


SELECTORS: dict[str, Selector] = {}  # filled by @register as chg.selection imports its method modules


def register(name: str, *, needs_factors: bool, adaptive: bool, needs_val: bool = False, ride_along: bool = False):
    """Decorator: put ``fn`` into :data:`SELECTORS` under ``name``.

    Args:
        name: the method's name (``TrainConfig.method``). needs_factors, adaptive, needs_val: as in :class:`Selector`.
    Returns:
        the decorator; it returns ``fn`` unchanged.
    Raises:
        ValueError: ``name`` is already registered (two methods under one name).
    """
    def add(fn: Callable[[SelectionInput], Selection]):
        if name in SELECTORS:
            raise ValueError(f"selection method {name!r} is registered twice")
        SELECTORS[name] = Selector(fn, needs_factors=needs_factors, adaptive=adaptive, needs_val=needs_val,
                                   ride_along=ride_along)
        return fn
    return add


def get_selector(name: str) -> Selector:
    """The registered method called ``name``.

    Args:
        name: a key of :data:`SELECTORS`.
    Returns:
        its :class:`Selector`.
    Raises:
        ValueError: an unknown name (the message lists the known methods).
    """
    if name not in SELECTORS:
        raise ValueError(f"unknown selection method {name!r}; choose one of {sorted(SELECTORS)}")
    return SELECTORS[name]


# ---------------------------------------------------------------------------------------------------------------
# budgets

def check_fraction(fraction) -> float:
    """The one fraction check of every method.

    Args:
        fraction: a real number (Python or NumPy, not a bool).
    Returns:
        ``fraction`` as a float in (0, 1].
    Raises:
        ValueError: a bool, a non-number, NaN/Inf, or a value outside (0, 1].
    """
    if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, numbers.Real) \
            or not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    return float(fraction)


def budget(n: int, fraction: float) -> int:
    r"""The subset size of a pool of n points: :math:`k = \mathrm{round}(a\,n)` (half up), at least 1, at most n.
    The product is taken exactly of the fraction as written — a float (Python or NumPy, float32 too) as its shortest
    decimal, a ``Fraction`` as it is: 0.009 · 1500 = 13.5 gives 14, where the binary float product
    13.499999999999998 would give 13; Fraction(1, 6) · 9 = 3/2 gives 2.

    Args:
        n: the pool size. fraction: a in (0, 1].
    Returns:
        k (int).
    Raises:
        ValueError: an empty pool (n < 1) or a fraction outside (0, 1].
    """
    given = fraction
    fraction = check_fraction(fraction)
    if n < 1:
        raise ValueError(f"the candidate pool is empty (n = {n}): nothing to select from")
    # the fraction as written, times n, in exact arithmetic: a Fraction or an int as it is, a float (Python or NumPy,
    # float32 included) as its shortest decimal (str)
    exact = (Fraction(given) if isinstance(given, (Fraction, numbers.Integral)) else Fraction(str(given))) * n
    return min(n, max(1, math.floor(exact + Fraction(1, 2))))


def class_budgets(labels, num_classes: int, fraction: float) -> torch.Tensor:
    r"""Algorithm 2's per-class budgets :math:`k_c`, shares of the one budget :math:`k = \mathrm{round}(a\,n)`
    (:func:`budget`), so that :math:`\sum_c k_c = k` exactly.

    The paper keeps ":math:`aN_c`" points of class c and is silent on rounding; rounding each class on its own drifts
    (100 classes × 450 points at a = 0.05 would keep 2,300 points, not 2,250). Here k is apportioned by **largest
    remainder** (Hamilton's method) on the quotas :math:`q_c = k N_c / n`, in exact integer arithmetic:

    1. **at least one point per class present, where the budget allows it**: if k is at least the number P of
       classes present, every present class whose quota is below 1 gets exactly one point, and the rest of the budget
       is apportioned over the other classes on their own quotas (repeated until every remaining quota is >= 1). If
       k < P, there is no minimum: some classes keep nothing;
    2. every class gets :math:`\lfloor q_c\rfloor`, and the points still left go one each to the classes with the
       largest remainders :math:`q_c - \lfloor q_c\rfloor`; equal remainders go to the lower class index.

    Then :math:`0 \le k_c \le N_c`, :math:`|k_c - q_c| < 1` for every class of step 2, and absent classes get 0.

    Args:
        labels: (n,) integer class labels (torch or NumPy, any integer dtype).
        num_classes: C; labels must lie in [0, C).
        fraction: a in (0, 1].

    Returns:
        (C,) int64 CPU tensor of k_c.

    Raises:
        ValueError: labels not 1-D integers, labels outside [0, C), an empty pool, or a fraction outside (0, 1].
    """
    labels = as_labels(labels, num_classes=_as_int(num_classes, "num_classes")).cpu()
    num_classes = int(num_classes)
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    n = labels.numel()
    k = budget(n, fraction)
    out = [0] * num_classes
    open_ = [c for c in range(num_classes) if counts[c] > 0]
    if k >= len(open_):  # one point per present class fits: classes with quota < 1 get exactly one
        while True:
            rest_k, rest_n = k - sum(out), sum(counts[c] for c in open_)
            low = [c for c in open_ if rest_k * counts[c] < rest_n]
            if not low:
                break
            for c in low:
                out[c] = 1
            open_ = [c for c in open_ if c not in low]
    rest_k, rest_n = k - sum(out), sum(counts[c] for c in open_)
    if open_:
        floors = {c: rest_k * counts[c] // rest_n for c in open_}
        left = rest_k - sum(floors.values())
        by_remainder = sorted(open_, key=lambda c: (-(rest_k * counts[c] % rest_n), c))
        for c in open_:
            out[c] = floors[c]
        for c in by_remainder[:left]:
            out[c] += 1
    result = torch.tensor(out, dtype=torch.int64)
    if int(result.sum()) != k or bool((result > torch.tensor(counts)).any()):  # pragma: no cover - internal check
        raise AssertionError(f"class_budgets: {out} does not share k = {k} within the class sizes {counts}")
    return result


# ---------------------------------------------------------------------------------------------------------------
# the output contract

def pool_size(inp: SelectionInput) -> int:
    """Number of pool points n, from ``inp.labels`` (checked against ``inp.factors`` when present).

    Args:
        inp: the :class:`SelectionInput`.
    Returns:
        n (int).
    Raises:
        ValueError: the factors have another number of rows than the labels.
    """
    n = inp.labels.shape[0]
    if inp.factors is not None and inp.factors.err.shape[0] != n:
        raise ValueError(f"factors have {inp.factors.err.shape[0]} rows but labels have {n}: they must describe the "
                         f"same pool")
    return n


def make_selection(indices: torch.Tensor, weights: torch.Tensor | None = None) -> Selection:
    """A :class:`Selection` in the contract's dtypes.

    Args:
        indices: (k,) integer pool indices. weights: (k,) sample weights, or None for all ones.
    Returns:
        :class:`Selection` of int64 indices and float32 weights, on the indices' device.
    """
    indices = indices.to(torch.int64)
    if weights is None:
        weights = torch.ones(indices.shape[0], dtype=torch.float32, device=indices.device)
    return Selection(indices=indices, weights=weights.to(torch.float32))


def check_selection(sel: Selection, n: int) -> Selection:
    """Validate a method's output against the contract.

    Args:
        sel: the method's :class:`Selection`. n: the pool size.
    Returns:
        the selection with CPU int64 indices and float32 weights.
    Raises:
        ValueError: indices and weights of different or non-1-D shapes, an empty selection, indices outside [0, n)
            or repeated, weights NaN, infinite or negative.
    """
    idx, w = sel.indices.cpu().long(), sel.weights.cpu().float()
    if idx.ndim != 1 or w.shape != idx.shape:
        raise ValueError(f"selection indices {tuple(idx.shape)} and weights {tuple(w.shape)} must be equal 1-D shapes")
    if idx.numel() == 0:
        raise ValueError("selection is empty")
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise ValueError(f"selection indices must lie in [0, {n})")
    if torch.unique(idx).numel() != idx.numel():
        raise ValueError("selection indices are not unique")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("selection weights must be finite and >= 0")
    return Selection(idx, w)
