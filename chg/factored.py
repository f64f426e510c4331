r"""Theorem 1 from last-layer factors, never materialising per-sample gradients.

For a final ``nn.Linear`` (weight W: (C, D), bias b: (C,)) under cross-entropy, the gradient of sample i is
:math:`g_i = e_i \otimes \tilde h_i` with :math:`e_i = \mathrm{softmax}(z_i) - \mathrm{onehot}(y_i)` (C,) and
:math:`\tilde h_i = [h_i; 1]` (D+1,), laid out as the (C, D+1) matrix ``[∇W | ∇b]``. The player vectors are
:math:`x_i = w_i g_i` with :math:`w_i = l_i` (CHG), :math:`w_i = 1` (Gradient Shapley). With ``feat=None`` only the bias
gradient :math:`x_i = w_i e_i` is used (what the official code does).

All that eq. (3) needs are the six inner products, each cheap in factored form:

.. math::  \|x_i\|^2 = w_i^2\|e_i\|^2(\|h_i\|^2+1),\quad s = E^\top\mathrm{diag}(w)\tilde H\ (C\times(D+1)),\quad
           \langle M, x_j\rangle = w_j\, e_j^\top M \tilde h_j .

Cost O(n·C·D): two passes over the features, in chunks of CHUNK_ROWS rows; extra memory O(n + CHUNK_ROWS·(C+D)).
Products run in the features' dtype (float32 features: float32 GEMMs per chunk), every sum accumulates in float64.
The group statistics (n, s, Σ‖x_i‖²) are sums, so per-class groups and multi-process runs just add them up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .shapley import _check_finite, _check_n, coefficients

__all__ = ["GroupStats", "group_stats", "values_from_factors", "factored_shapley", "shapley_from_factors"]

CHUNK_ROWS = 4096  # rows processed at a time: a chunk of features stays in cache between its two uses


@dataclass
class GroupStats:
    """Sufficient statistics of a player group: its size, Σ x_i as a (C, D+1) [or (C,)] tensor, and Σ‖x_i‖²."""
    n: int
    sum: torch.Tensor
    sum_sq_norms: torch.Tensor

    def __add__(self, other: "GroupStats") -> "GroupStats":
        return GroupStats(self.n + other.n, self.sum + other.sum, self.sum_sq_norms + other.sum_sq_norms)

    def all_reduce(self) -> "GroupStats":
        """Sum the statistics over all ranks of the default ``torch.distributed`` process group (in place)."""
        import torch.distributed as dist
        flat = torch.cat([torch.tensor([float(self.n)], dtype=torch.float64, device=self.sum.device),
                          self.sum.reshape(-1), self.sum_sq_norms.reshape(1)])
        dist.all_reduce(flat)
        self.n = int(round(flat[0].item()))
        self.sum = flat[1:-1].reshape(self.sum.shape)
        self.sum_sq_norms = flat[-1]
        return self


def _validate(err, feat, weight):
    """Shapes only: finiteness is checked per chunk on O(n) reductions (a full isfinite would copy the features)."""
    if not isinstance(err, torch.Tensor):
        raise ValueError(f"err must be a torch.Tensor, got {type(err).__name__}")
    if err.ndim != 2:
        raise ValueError(f"err must be 2-D (n, C), got shape {tuple(err.shape)}")
    n = err.shape[0]
    if feat is not None:
        if feat.ndim != 2:
            raise ValueError(f"feat must be 2-D (n, D), got shape {tuple(feat.shape)}")
        if feat.shape[0] != n:
            raise ValueError(f"feat has {feat.shape[0]} rows but err has {n}")
    if weight is not None and (weight.ndim != 1 or weight.shape[0] != n):
        raise ValueError(f"weight must be 1-D with n = {n} entries, got shape {tuple(weight.shape)}")
    return n


def _chunks(n: int):
    for start in range(0, n, CHUNK_ROWS):
        yield slice(start, min(n, start + CHUNK_ROWS))


def _weighted_err(err, feat, weight, rows):
    dtype = torch.float64 if feat is None else feat.dtype
    we = err[rows].to(dtype)  # (m, C)
    return we if weight is None else we * weight[rows].to(dtype)[:, None]


def _chunk_factors(err, feat, weight, rows):
    """One chunk: weighted error w·e (m, C) in the features' dtype, ‖w·e‖² and ‖h̃‖² = ‖h‖²+1 (m,) in float64.

    Non-finite inputs show up in these O(m) reductions (NaN/Inf propagate), so they are checked here.
    """
    if weight is not None:
        _check_finite(weight[rows], "weight (per-sample loss)")
    we = _weighted_err(err, feat, weight, rows)  # (m, C)
    e_sq = torch.linalg.vector_norm(we, dim=1, dtype=torch.float64) ** 2  # (m,)
    _check_finite(e_sq, "err (softmax error)")
    if feat is None:
        return we, e_sq, None
    h_sq = torch.linalg.vector_norm(feat[rows], dim=1, dtype=torch.float64) ** 2 + 1  # (m,)
    _check_finite(h_sq, "feat (penultimate features)")
    return we, e_sq, h_sq


def group_stats(err: torch.Tensor, feat: Optional[torch.Tensor] = None,
                weight: Optional[torch.Tensor] = None) -> GroupStats:
    """n, s = Σ w_i e_i ⊗ [h_i;1] and Σ‖x_i‖² of the rows given.

    Products run in the features' dtype chunk by chunk (a chunk stays in cache); chunk sums accumulate in float64.
    With float64 inputs everything is float64; with float32 features each chunk's product is a float32 GEMM.
    """
    return _stats_and_sq_norms(err, feat, weight)[0]


def _stats_and_sq_norms(err, feat, weight):
    """Pass 1 over the features: the group statistics and every ‖x_i‖² (n,) float64."""
    n = _validate(err, feat, weight)
    _check_n(n)
    C = err.shape[1]
    shape = (C,) if feat is None else (C, feat.shape[1] + 1)
    s = torch.zeros(shape, dtype=torch.float64, device=err.device)
    sq_norms = torch.empty(n, dtype=torch.float64, device=err.device)
    for rows in _chunks(n):
        we, e_sq, h_sq = _chunk_factors(err, feat, weight, rows)
        if feat is None:
            s += we.sum(0)
            sq_norms[rows] = e_sq
        else:
            s[:, :-1] += (we.T @ feat[rows]).to(torch.float64)  # (C, D)
            s[:, -1] += we.sum(0, dtype=torch.float64)
            sq_norms[rows] = e_sq * h_sq
    return GroupStats(n, s, sq_norms.sum()), sq_norms


def values_from_factors(err: torch.Tensor, feat: Optional[torch.Tensor], weight: Optional[torch.Tensor],
                        stats: GroupStats, alpha: Optional[torch.Tensor] = None,
                        sq_norms: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Eq. (3) for the rows given, players of the group described by ``stats`` (which may span more rows or ranks).

    ``alpha`` has the shape of ``stats.sum`` (or is its flattening); default ``stats.sum / stats.n``.
    ``sq_norms``: the rows' ‖x_i‖² if already known (saves one norm per row in this pass).
    """
    _validate(err, feat, weight)
    s = stats.sum
    if alpha is None:
        a = s / stats.n
    elif alpha.numel() == s.numel():
        a = alpha.to(device=s.device, dtype=torch.float64).reshape(s.shape)
    else:
        raise ValueError(f"alpha has {alpha.numel()} entries; expected {s.numel()} (shape {tuple(s.shape)}: "
                         "C rows, D+1 columns with the bias last)")
    _check_finite(a, "alpha")
    c = coefficients(stats.n)
    m = c.dot_sum * s + c.dot_alpha * a  # (C, D+1): c2⟨s,x_j⟩ + c5⟨x_j,α⟩ = w_j e_jᵀ m h̃_j
    const = (c.sum_norm_sq * (s * s).sum() + c.sum_sq_norms * stats.sum_sq_norms
             + c.sum_dot_alpha * (s * a).sum())
    out = torch.empty(err.shape[0], dtype=torch.float64, device=err.device)
    if feat is not None:
        m_feat = m[:, :-1].to(feat.dtype).contiguous()  # (C, D)
    for rows in _chunks(err.shape[0]):
        if sq_norms is None:
            we, e_sq, h_sq = _chunk_factors(err, feat, weight, rows)
            sq = e_sq if feat is None else e_sq * h_sq
        else:
            we, sq = _weighted_err(err, feat, weight, rows), sq_norms[rows]
        if feat is None:
            out[rows] = c.sq_norm * sq + we @ m + const
        else:
            hm = F.linear(feat[rows], m_feat).to(torch.float64) + m[:, -1]  # (m, C) = (m h̃_j)ᵀ
            out[rows] = c.sq_norm * sq + (we.to(torch.float64) * hm).sum(1) + const
    return out


def factored_shapley(err: torch.Tensor, feat: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None,
                     alpha: Optional[torch.Tensor] = None, groups: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""Theorem 1 values of :math:`x_i = w_i\, e_i\otimes[h_i;1]` (or :math:`w_i e_i` when ``feat`` is None).

    ``err`` (n, C) softmax − onehot; ``feat`` (n, D) penultimate features; ``weight`` (n,) per-sample loss for CHG
    Shapley, None (all ones) for Gradient Shapley. ``groups`` (n,) integer labels: values are then computed within
    each group separately (the per-class approximation of Algorithm 2), each with α = its group mean unless ``alpha``
    is given as a dict {group: alpha}. Returns float64 values (n,) on ``err``'s device.
    """
    if groups is None:
        stats, sq_norms = _stats_and_sq_norms(err, feat, weight)
        return values_from_factors(err, feat, weight, stats, alpha, sq_norms)
    if groups.ndim != 1 or groups.shape[0] != err.shape[0]:
        raise ValueError(f"groups must be 1-D with {err.shape[0]} entries, got shape {tuple(groups.shape)}")
    out = torch.empty(err.shape[0], dtype=torch.float64, device=err.device)
    for g in torch.unique(groups).tolist():
        idx = (groups == g).nonzero().squeeze(1)
        e, h = err[idx], None if feat is None else feat[idx]
        w = None if weight is None else weight[idx]
        a = None if alpha is None else alpha[g]
        stats, sq_norms = _stats_and_sq_norms(e, h, w)
        out[idx] = values_from_factors(e, h, w, stats, a, sq_norms)
    return out


WEIGHTINGS = ("chg", "gradient", "hardness")
GRADIENTS = ("full", "bias")


def shapley_from_factors(factors, weighting: str = "chg", gradient: str = "full",
                         alpha: Optional[torch.Tensor] = None, groups: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Values of every sample from :class:`chg.lastlayer.Factors` under one of the paper's three utilities.

    ``weighting``: "chg" (x_i = l_i g_i, CHG Shapley), "gradient" (x_i = g_i, Gradient Shapley) or "hardness"
    (U(S) = mean loss over S, Hardness Shapley). ``gradient``: "full" (weight and bias of the last layer) or "bias"
    (bias only, as the official code). ``groups``: per-group (e.g. per-class) values; ``alpha`` as in
    :func:`factored_shapley`.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    if weighting == "hardness":
        from .shapley import hardness_shapley
        if groups is None:
            return hardness_shapley(factors.loss)
        out = torch.empty(factors.loss.shape[0], dtype=torch.float64, device=factors.loss.device)
        for g in torch.unique(groups).tolist():
            idx = (groups == g).nonzero().squeeze(1)
            out[idx] = hardness_shapley(factors.loss[idx])
        return out
    feat = factors.feat if gradient == "full" else None
    weight = factors.loss if weighting == "chg" else None
    return factored_shapley(factors.err, feat, weight, alpha=alpha, groups=groups)
