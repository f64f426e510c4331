r"""Algorithm 2 (CHG Shapley data selection) and the common interface of every selection method.

A selection method is a plain function ``select_xxx(inp: SelectionInput) -> Selection``. :data:`SELECTORS` maps the
names used by the trainer and the reproduce scripts to a :class:`Selector` record (the function, whether it needs the
last-layer factors of the pool, and whether it is re-run every R epochs or only once at the start).

Algorithm 2, as printed (lines 3–10), every R epochs:

1. per class c, the values :math:`\phi_j` (eq. 3) of the class's points, players :math:`x_i = l_i\,g_i` with
   :math:`g_i = e_i\otimes[h_i;1]` (last-layer gradient, weights and bias), :math:`\alpha = \frac1{N_c}\sum_{i\in N_c}
   x_i`;
2. keep the top :math:`k_c` of each class, :math:`k_c = \min(N_c, \max(1, \lfloor aN_c + \tfrac12\rfloor))`
   (round half up; every class present in the pool keeps at least one point — the paper writes ":math:`aN_c`" and is
   silent on rounding); ties are broken by the lower pool index, and values within 1e-9·max|φ| of each other count as
   ties (equal in exact arithmetic, different by rounding — e.g. a 2-point class, whose two values are always equal);
3. the values of the kept set S (all classes together, :math:`\alpha = \frac1{|S|}\sum_{i\in S} x_i`), min-max
   normalised: :math:`w_j = (\phi_j - \min\phi)/(\max\phi - \min\phi)`, so the weights lie in [0, 1], the best point
   gets 1 and **the lowest kept point gets weight 0 — it is kept but effectively dropped**, exactly as printed. When
   all values in S are equal (including |S| = 1) every weight is 1.

``chg_unweighted`` is the official code's variant (the same subset, all weights 1), an ablation. ``hardness`` and
``gradient`` are the paper's two ablations (Table 2): the same two steps with the Hardness utility
(:math:`U(S)` = mean loss over S) or the Gradient utility (:math:`x_i = g_i`, no loss weighting).
Values come from :func:`chg.shapley_from_factors` — no per-sample autograd.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Callable

import torch

from .factored import shapley_from_factors
from .lastlayer import Factors

__all__ = ["SelectionInput", "Selection", "Selector", "SELECTORS", "class_budgets", "top_k_per_class",
           "minmax_weights", "algorithm2", "select_full", "select_chg", "select_chg_unweighted", "select_hardness",
           "select_gradient", "get_selector", "check_selection"]


@dataclass
class SelectionInput:
    factors: Factors | None       # last-layer factors (loss, err, feat) of the whole candidate pool, (n,)
    labels: torch.Tensor          # (n,) int64 labels of the pool (possibly noisy)
    num_classes: int
    fraction: float               # a in (0, 1]: budget per class round(a·N_c) (Algorithm 2) or round(a·n)
    epoch: int
    generator: torch.Generator    # the only source of randomness (seeded by the trainer)
    val_factors: Factors | None = None   # factors of the validation set (GLISTER)
    val_labels: torch.Tensor | None = None
    batch_size: int = 128         # GradMatch-PB: pool batches are consecutive chunks of a fixed permutation
    lr: float | None = None       # the trainer's learning rate: GLISTER's look-ahead step η (as CORDS sets it)


@dataclass
class Selection:
    indices: torch.Tensor         # (k,) int64 indices into the pool, unique
    weights: torch.Tensor         # (k,) float32 sample weights >= 0 (all ones for unweighted methods)


@dataclass(frozen=True)
class Selector:
    fn: Callable[[SelectionInput], Selection]
    needs_factors: bool           # the trainer computes the pool's (and validation set's) factors before calling
    adaptive: bool                # re-run every R epochs (True) or once at the start (False)
    needs_val: bool = False       # needs val_factors / val_labels


# ---------------------------------------------------------------------------------------------------------------
# the pieces of Algorithm 2

def _check_fraction(fraction: float) -> None:
    if not (isinstance(fraction, (int, float)) and 0.0 < fraction <= 1.0 and math.isfinite(fraction)):
        raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")


def class_budgets(labels: torch.Tensor, num_classes: int, fraction: float) -> torch.Tensor:
    """(num_classes,) int64: k_c = min(N_c, max(1, floor(a·N_c + 1/2))) for classes present, 0 for absent ones."""
    _check_fraction(fraction)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]")
    counts = torch.bincount(labels.cpu(), minlength=num_classes)
    k = torch.floor(fraction * counts.double() + 0.5).long().clamp_min(1)
    return torch.minimum(k, counts)


def top_k_per_class(values: torch.Tensor, labels: torch.Tensor, num_classes: int, fraction: float) -> torch.Tensor:
    """Indices of the top k_c values of every class (:func:`class_budgets`), ties to the lower index; sorted."""
    if values.shape != labels.shape:
        raise ValueError(f"values {tuple(values.shape)} and labels {tuple(labels.shape)} must have the same shape")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("selection values contain NaN or Inf")
    budgets = class_budgets(labels, num_classes, fraction)
    values, labels = values.cpu(), labels.cpu()
    kept = []
    for c in range(num_classes):
        if budgets[c] == 0:
            continue
        idx = (labels == c).nonzero().squeeze(1)  # ascending
        order = torch.sort(_tie_keys(values[idx]), descending=True, stable=True).indices  # ties: index order
        kept.append(idx[order[: int(budgets[c])]])
    if not kept:
        raise ValueError("the pool is empty: nothing to select")
    return torch.sort(torch.cat(kept)).values


TIE_RTOL = 1e-9


def _tie_keys(v: torch.Tensor) -> torch.Tensor:
    """Values snapped to a grid of TIE_RTOL·max|v|: values equal up to floating-point rounding (e.g. the two points of
    a 2-point class, whose values are equal in exact arithmetic) become exact ties, which then go to the lower index."""
    v = v.double()
    scale = v.abs().max()
    if scale == 0:
        return v
    return torch.round(v / (TIE_RTOL * scale))


def minmax_weights(values: torch.Tensor) -> torch.Tensor:
    """(v − min)/(max − min) as float32; all ones when max == min (incl. a single value)."""
    if values.ndim != 1 or values.numel() == 0:
        raise ValueError(f"minmax_weights needs a non-empty 1-D tensor, got shape {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("minmax_weights: values contain NaN or Inf")
    v = values.double()
    lo, hi = v.min(), v.max()
    if hi == lo:
        return torch.ones_like(v, dtype=torch.float32)
    return ((v - lo) / (hi - lo)).float()


def _values(factors: Factors, weighting: str, gradient: str, groups=None) -> torch.Tensor:
    """float64 factors: the ranking and the min-max weights do not depend on float32 rounding (chunking, BLAS)."""
    f64 = Factors(factors.loss.double(), factors.err.double(), factors.feat.double())
    return shapley_from_factors(f64, weighting=weighting, gradient=gradient, groups=groups)


def algorithm2(inp: SelectionInput, weighting: str = "chg", weighted: bool = True,
               gradient: str = "full") -> Selection:
    """Algorithm 2, lines 4–10: per-class values (α = class mean), per-class top k_c, then min-max weights from the
    values of the kept set (α = its mean). ``weighted=False``: all weights 1 (the official code's variant)."""
    if inp.factors is None:
        raise ValueError("Algorithm 2 needs the last-layer factors of the pool (SelectionInput.factors is None)")
    n = inp.labels.shape[0]
    if inp.factors.loss.shape[0] != n:
        raise ValueError(f"factors have {inp.factors.loss.shape[0]} rows but there are {n} labels")
    labels = inp.labels.to(inp.factors.loss.device)
    values = _values(inp.factors, weighting, gradient, groups=labels)  # (n,) per-class values
    kept = top_k_per_class(values, labels, inp.num_classes, inp.fraction)  # (k,)
    if weighted:
        kept_dev = kept.to(inp.factors.loss.device)
        weights = minmax_weights(_values(inp.factors[kept_dev], weighting, gradient).cpu())
    else:
        weights = torch.ones(kept.numel(), dtype=torch.float32)
    return Selection(kept, weights)


def select_chg(inp: SelectionInput) -> Selection:
    """CHG Shapley, Algorithm 2 exactly as printed (min-max weights)."""
    return algorithm2(inp, "chg", weighted=True)


def select_chg_unweighted(inp: SelectionInput) -> Selection:
    """Ablation: the official code's variant — the subset of Algorithm 2, trained with all weights 1."""
    return algorithm2(inp, "chg", weighted=False)


def select_hardness(inp: SelectionInput) -> Selection:
    """Hardness Shapley (Table 2 ablation): Algorithm 2 with U(S) = mean loss over S."""
    return algorithm2(inp, "hardness", weighted=True)


def select_gradient(inp: SelectionInput) -> Selection:
    """Gradient Shapley (Table 2 ablation): Algorithm 2 with x_i = g_i (no loss weighting)."""
    return algorithm2(inp, "gradient", weighted=True)


def select_full(inp: SelectionInput) -> Selection:
    """The whole pool, weights 1 (``fraction`` is ignored)."""
    n = inp.labels.shape[0]
    return Selection(torch.arange(n), torch.ones(n, dtype=torch.float32))


def check_selection(sel: Selection, n: int) -> Selection:
    """Validate a method's output against the contract; returns it with CPU int64 / float32 tensors."""
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


# ---------------------------------------------------------------------------------------------------------------
# registry (the baselines live in chg.baselines, written separately; imported lazily so this module never breaks)

def _lazy(name: str) -> Callable[[SelectionInput], Selection]:
    def call(inp: SelectionInput) -> Selection:
        return getattr(importlib.import_module("chg.baselines"), name)(inp)
    call.__name__ = name
    call.__doc__ = f"chg.baselines.{name} (imported on first use)"
    return call


SELECTORS: dict[str, Selector] = {
    "full": Selector(select_full, needs_factors=False, adaptive=False),
    "random": Selector(_lazy("select_random"), needs_factors=False, adaptive=False),
    "adaptive_random": Selector(_lazy("select_adaptive_random"), needs_factors=False, adaptive=True),
    "glister": Selector(_lazy("select_glister"), needs_factors=True, adaptive=True, needs_val=True),
    "gradmatch_pb": Selector(_lazy("select_gradmatch_pb"), needs_factors=True, adaptive=True),
    "chg": Selector(select_chg, needs_factors=True, adaptive=True),
    "chg_unweighted": Selector(select_chg_unweighted, needs_factors=True, adaptive=True),
    "hardness": Selector(select_hardness, needs_factors=True, adaptive=True),
    "gradient": Selector(select_gradient, needs_factors=True, adaptive=True),
}


def get_selector(name: str) -> Selector:
    if name not in SELECTORS:
        raise ValueError(f"unknown selection method {name!r}; choose one of {sorted(SELECTORS)}")
    return SELECTORS[name]
