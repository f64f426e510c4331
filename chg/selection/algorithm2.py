r"""Algorithm 2 (CHG Shapley data selection), its ablations, and the whole pool.

Algorithm 2, as printed (lines 3–10), every R epochs:

1. per class c, the values :math:`\phi_j` (eq. 3) of the class's points, players :math:`x_i = l_i\,g_i` with
   :math:`g_i = e_i\otimes[h_i;1]` (last-layer gradient, weights and bias), :math:`\alpha = \frac1{N_c}\sum_{i\in N_c}
   x_i`;
2. keep the top :math:`k_c` of each class — the per-class shares of the one budget :math:`k = \mathrm{round}(a\,n)`
   (:func:`chg.selection.class_budgets`: largest remainder, :math:`\sum_c k_c = k`, one point per present class
   where the budget allows it; the paper writes ":math:`aN_c`" and is silent on rounding); ties are broken by the
   lower pool index, and values within 1e-9·max|φ| of each other count as ties (equal in exact arithmetic,
   different by rounding — e.g. a 2-point class, whose two values are always equal);
3. the values of the kept set S (all classes together, :math:`\alpha = \frac1{|S|}\sum_{i\in S} x_i`), min-max
   normalised: :math:`w_j = (\phi_j - \min\phi)/(\max\phi - \min\phi)`, so the weights lie in [0, 1], the best point
   gets 1 and **the lowest kept point gets weight 0 — it is kept but effectively dropped**, exactly as printed. When
   all values in S are equal (including |S| = 1) every weight is 1.

``chg_unweighted`` is the official code's variant (the same subset, all weights 1), an ablation. ``hardness`` and
``gradient`` are the paper's two ablations (Table 2): the same two steps with the Hardness utility
(:math:`U(S)` = mean loss over S) or the Gradient utility (:math:`x_i = g_i`, no loss utility).
Values come from :func:`chg.shapley_from_factors` — no per-sample autograd.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..factored import shapley_from_factors
from ..lastlayer import Factors
from ..renames import renamed
from .interface import Selection, SelectionInput, as_labels, class_budgets, pool_size, register

__all__ = ["TIE_RTOL", "top_k_per_class", "minmax_weights", "algorithm2", "select_full", "select_chg",
           "select_chg_unweighted", "select_hardness", "select_gradient"]

TIE_RTOL = 1e-9


def top_k_per_class(values: torch.Tensor, labels, num_classes: int, fraction: float) -> torch.Tensor:
    """Algorithm 2 line 6: the indices of the top k_c values of every class (:func:`class_budgets`).

    Args:
        values: (n,) float values of the pool's points.
        labels: (n,) integer class labels in [0, num_classes) (torch or NumPy, any integer dtype).
        num_classes: C.
        fraction: a in (0, 1].

    Returns:
        (k,) int64 CPU tensor of pool indices, sorted ascending, k = round(a·n); ties (values within
        ``TIE_RTOL``·max|v|) go to the lower index.

    Raises:
        ValueError: shapes differ, NaN/Inf values, bad labels or fraction (see :func:`class_budgets`).
    """
    labels = as_labels(labels)
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
    return torch.sort(torch.cat(kept)).values


def _tie_keys(v: torch.Tensor) -> torch.Tensor:
    """Values snapped to a grid of TIE_RTOL·max|v|: values equal up to floating-point rounding (e.g. the two points of
    a 2-point class, whose values are equal in exact arithmetic) become exact ties, which then go to the lower index."""
    v = v.double()
    scale = v.abs().max()
    if scale == 0:
        return v
    return torch.round(v / (TIE_RTOL * scale))


def minmax_weights(values: torch.Tensor) -> torch.Tensor:
    """Algorithm 2 line 9: min-max normalised values as sample weights, (v − min)/(max − min).

    Args:
        values: (k,) floating values of the kept points.
    Returns:
        (k,) float32 weights in [0, 1] (computed in float64); all ones when max == min (incl. a single value).
    Raises:
        ValueError: an empty or non-1-D tensor, or NaN/Inf values.
    """
    if values.ndim != 1 or values.numel() == 0:
        raise ValueError(f"minmax_weights needs a non-empty 1-D tensor, got shape {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("minmax_weights: values contain NaN or Inf")
    v = values.double()
    lo, hi = v.min(), v.max()
    if hi == lo:
        return torch.ones_like(v, dtype=torch.float32)
    return ((v - lo) / (hi - lo)).float()


def _values(factors: Factors, utility: str, gradient: str, groups=None) -> torch.Tensor:
    """float64 factors: the ranking and the min-max weights do not depend on float32 rounding (chunking, BLAS)."""
    return shapley_from_factors(factors.to(torch.float64), utility=utility, gradient=gradient, groups=groups)


@renamed("0.2.0", weighting="utility")
def algorithm2(inp: SelectionInput, utility: str = "chg", weighted: bool = True,
               gradient: str = "full") -> Selection:
    """Algorithm 2, lines 4–10: per-class values (α = class mean), per-class top k_c, then min-max weights from the
    values of the kept set (α = its mean).

    Args:
        inp: the pool; ``inp.factors`` required, ``inp.labels`` on any device (moved to the factors' device).
        utility: the utility, "chg" (x_i = l_i g_i), "gradient" (x_i = g_i) or "hardness" (mean loss).
        weighted: False gives all weights 1 (the official code's variant).
        gradient: "full" (weights and bias of the last layer) or "bias".

    Returns:
        :class:`Selection` of round(a·n) sorted CPU indices and float32 weights in [0, 1].

    Raises:
        ValueError: no factors, factors and labels of different lengths, NaN/Inf in the factors or values.
    """
    if inp.factors is None:
        raise ValueError("Algorithm 2 needs the last-layer factors of the pool (SelectionInput.factors is None)")
    pool_size(inp)
    device = inp.factors.loss.device
    labels = inp.labels.to(device)
    values = _values(inp.factors, utility, gradient, groups=labels)  # (n,) per-class values
    kept = top_k_per_class(values, labels, inp.num_classes, inp.fraction)  # (k,) CPU
    if weighted:
        weights = minmax_weights(_values(inp.factors[kept.to(device)], utility, gradient).cpu())
    else:
        weights = torch.ones(kept.numel(), dtype=torch.float32)
    return Selection(kept, weights)


def _variant(name: str, utility: str, weighted: bool, summary: str,
             ride_along: bool = False) -> Callable[[SelectionInput], Selection]:
    """``select_<name>``: :func:`algorithm2` under ``utility``, registered as method ``name`` (``ride_along``: the
    trainer gives it the factors of the training forward passes, see :class:`chg.selection.Selector`)."""
    def select(inp: SelectionInput) -> Selection:
        return algorithm2(inp, utility, weighted=weighted)
    select.__name__ = select.__qualname__ = f"select_{name}"
    select.__doc__ = summary + _VARIANT_DOC
    return register(name, needs_factors=True, adaptive=True, ride_along=ride_along)(select)


_VARIANT_DOC = """

    Args:
        inp: the pool (:class:`chg.selection.SelectionInput`); ``inp.factors`` required.
    Returns:
        :class:`Selection` of round(a·n) sorted CPU int64 indices and float32 weights (see :func:`algorithm2`).
    Raises:
        ValueError: as :func:`algorithm2` (no factors, factors and labels of different lengths, NaN/Inf).
    """

select_chg = _variant("chg", "chg", True, "CHG Shapley, Algorithm 2 exactly as printed (min-max weights, lines 4–10).")
select_chg_ride = _variant("chg_ride", "chg", True, "CHG Shapley, Algorithm 2 with ride-along factors: the rows "
                           "trained on since the last selection are valued from those training forward passes (train "
                           "mode, BatchNorm batch statistics), the others from a train-mode pass without updates.",
                           ride_along=True)
select_chg_unweighted = _variant("chg_unweighted", "chg", False, "Ablation: the official code's variant — the subset "
                                 "of Algorithm 2, trained with all weights 1.")
select_hardness = _variant("hardness", "hardness", True, "Hardness Shapley (Table 2 ablation): Algorithm 2 with U(S) = "
                           "mean loss over S.")
select_gradient = _variant("gradient", "gradient", True, "Gradient Shapley (Table 2 ablation): Algorithm 2 with x_i = "
                           "g_i (no loss factor).")


@register("full", needs_factors=False, adaptive=False)
def select_full(inp: SelectionInput) -> Selection:
    """The whole pool, weights 1 (``fraction`` is ignored).

    Args:
        inp: the pool (:class:`chg.selection.SelectionInput`).
    Returns:
        :class:`Selection` of every index 0..n-1, weights 1.
    """
    n = inp.labels.shape[0]
    return Selection(torch.arange(n), torch.ones(n, dtype=torch.float32))
