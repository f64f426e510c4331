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

Precision: a group that fits in one chunk (a batch, a class of a small data set) is computed in float64 throughout.
Larger groups: float64 features → float64 throughout; float32 features → each chunk's (C×m)·(m×D) product is a
float32 GEMM (relative error ~1e-7, the precision of the model that produced the features), chunk sums and every
per-sample scalar (norms, values) are accumulated in float64; half precision is raised to float32. Autocast is
switched off inside. Pass float64 tensors when you need float64 end to end (about twice the time).
The group statistics (n, s, Σ‖x_i‖²) are sums, so per-class groups and multi-process runs just add them up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .shapley import _check_finite, _check_n, coefficients

__all__ = ["GroupStats", "group_stats", "values_from_factors", "factored_shapley", "shapley_from_factors"]

CHUNK_BYTES = 4 << 20  # on CPU, a chunk of features (~4 MiB) stays in cache between its two uses in a pass
CHUNK_ROWS = None  # override the CPU chunk size in rows (tests use tiny chunks)
CHUNK_ROWS_ACCELERATOR = 1 << 18  # on GPU, large chunks: launch overhead dominates, memory is plentiful


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
    """Types, dtypes, shapes and devices. Finiteness is checked once on O(n) results (NaN/Inf propagate into them)."""
    for name, t in (("err", err), ("feat", feat), ("weight", weight)):
        if t is None and name != "err":
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.device != err.device:
            raise ValueError(f"{name} is on {t.device} but err is on {err.device}: put all factors on one device")
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


def _require_finite(result: torch.Tensor, err, feat, weight, what: str) -> None:
    """One check on an O(n) result; only on failure are the inputs scanned to name the culprit."""
    if bool(torch.isfinite(result).all()):
        return
    for name, t in (("weight (per-sample loss)", weight), ("err (softmax error)", err),
                    ("feat (penultimate features)", feat)):
        if t is not None:
            _check_finite(t, name)
    raise ValueError(f"{what} overflowed although every input is finite: rescale the features or losses")


def _chunk_rows(device: torch.device, row_bytes: int) -> int:
    if device.type != "cpu":
        return CHUNK_ROWS_ACCELERATOR
    return CHUNK_ROWS or max(256, CHUNK_BYTES // max(1, row_bytes))


def _chunks(n: int, device: torch.device, row_bytes: int = 8):
    step = _chunk_rows(device, row_bytes)
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _row_bytes(feat, dtype) -> int:
    return 8 if feat is None else feat.shape[1] * torch.finfo(dtype).bits // 8


def _compute_dtype(feat):
    """float64 without features (bias only); else the features' dtype, half precision raised to float32."""
    if feat is None:
        return torch.float64
    return torch.float32 if feat.dtype in (torch.float16, torch.bfloat16) else feat.dtype


def _weighted_err(err, weight, rows, dtype):
    """w·e of the rows (m, C) in ``dtype``."""
    we = err[rows].to(dtype)  # (m, C)
    return we if weight is None else we * weight[rows].to(dtype)[:, None]


def group_stats(err: torch.Tensor, feat: Optional[torch.Tensor] = None,
                weight: Optional[torch.Tensor] = None) -> GroupStats:
    """n, s = Σ w_i e_i ⊗ [h_i;1] and Σ‖x_i‖² of the rows given (precision: see the module docstring).

    n = 0 is allowed (zeros), so that every rank of a distributed run can take part in the all-reduce.
    """
    return _stats_and_sq_norms(err, feat, weight)[0]


def _stats_and_sq_norms(err, feat, weight, check: bool = True):
    """Pass 1 over the features: the group statistics and every ‖x_i‖² (n,) float64.

    ``check=False`` when the values are computed right after: NaN/Inf reach every value, checked there once.
    """
    n = _validate(err, feat, weight)  # n = 0 is allowed here (an empty shard of a distributed run)
    C = err.shape[1]
    shape = (C,) if feat is None else (C, feat.shape[1] + 1)
    s = torch.zeros(shape, dtype=torch.float64, device=err.device)
    sq_norms = torch.empty(n, dtype=torch.float64, device=err.device)
    dtype = _compute_dtype(feat)
    with torch.autocast(err.device.type, enabled=False):  # inside an AMP step, keep our precision
        for rows in _chunks(n, err.device, _row_bytes(feat, dtype)):
            we = _weighted_err(err, weight, rows, dtype)  # (m, C)
            e_sq = torch.linalg.vector_norm(we, dim=1, dtype=torch.float64) ** 2  # (m,)
            if feat is None:
                s += we.sum(0)
                sq_norms[rows] = e_sq
            else:
                h = feat[rows].to(dtype)  # (m, D)
                s[:, :-1] += (we.T @ h).to(torch.float64)  # (C, D)
                s[:, -1] += we.sum(0, dtype=torch.float64)
                sq_norms[rows] = e_sq * (torch.linalg.vector_norm(h, dim=1, dtype=torch.float64) ** 2 + 1)
    if check:
        _require_finite(sq_norms, err, feat, weight, "‖x_i‖²")
        _require_finite(s, err, feat, weight, "Σ x_i")
    return GroupStats(n, s, sq_norms.sum()), sq_norms


def _eq3_terms(n: int, s: torch.Tensor, alpha):
    """From a group's size and Σx_i (float64): the coefficients c, m = c2·s + c5·α (so that c2⟨s,x_j⟩ + c5⟨x_j,α⟩
    = w_j e_jᵀ m h̃_j) and the constant c3‖s‖² + c6⟨s,α⟩ (the c4·Σ‖x_i‖² term is added by the caller)."""
    _check_n(n)
    if alpha is None:
        a = s / n
    elif torch.as_tensor(alpha).numel() == s.numel():
        a = torch.as_tensor(alpha).to(device=s.device, dtype=torch.float64).reshape(s.shape)
        _check_finite(a, "alpha")
    else:
        raise ValueError(f"alpha has {torch.as_tensor(alpha).numel()} entries; expected {s.numel()} (shape "
                         f"{tuple(s.shape)}: C rows, D+1 columns with the bias last)")
    c = coefficients(n)
    m = c.dot_sum * s + c.dot_alpha * a  # (C, D+1) or (C,)
    return c, m, c.sum_norm_sq * (s * s).sum() + c.sum_dot_alpha * (s * a).sum()


def _values_one_chunk(err, feat, weight, alpha):
    """Both passes fused, for a group whose features fit in one chunk (small batches, per-class groups).

    Small enough to run in float64 throughout whatever the input dtype: exact-as-possible values at no real cost."""
    n = _validate(err, feat, weight)
    dtype = torch.float64
    with torch.autocast(err.device.type, enabled=False):
        we = _weighted_err(err, weight, slice(None), dtype)  # (n, C)
        h = feat.to(dtype)  # (n, D)
        sq = (torch.linalg.vector_norm(we, dim=1, dtype=torch.float64) ** 2
              * (torch.linalg.vector_norm(h, dim=1, dtype=torch.float64) ** 2 + 1))  # (n,) ‖x_i‖²
        s = torch.empty(we.shape[1], h.shape[1] + 1, dtype=torch.float64, device=err.device)
        s[:, :-1] = we.T @ h
        s[:, -1] = we.sum(0, dtype=torch.float64)
        c, m, const = _eq3_terms(n, s, alpha)
        hm = F.linear(h, m[:, :-1].to(dtype)).to(torch.float64) + m[:, -1]  # (n, C)
        out = c.sq_norm * sq + (we.to(torch.float64) * hm).sum(1) + (const + c.sum_sq_norms * sq.sum())
    _require_finite(out, err, feat, weight, "the values")
    return out


def _group_values(err, feat, weight, alpha):
    """Values of one group: fused single pass when it fits in one chunk, else the two chunked passes."""
    _validate(err, feat, weight)
    if feat is not None and err.shape[0] <= _chunk_rows(err.device, _row_bytes(feat, _compute_dtype(feat))):
        return _values_one_chunk(err, feat, weight, alpha)
    stats, sq_norms = _stats_and_sq_norms(err, feat, weight, check=False)
    return values_from_factors(err, feat, weight, stats, alpha, sq_norms)


def values_from_factors(err: torch.Tensor, feat: Optional[torch.Tensor], weight: Optional[torch.Tensor],
                        stats: GroupStats, alpha: Optional[torch.Tensor] = None,
                        sq_norms: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Eq. (3) for the rows given, players of the group described by ``stats`` (which may span more rows or ranks).

    ``alpha`` has the shape of ``stats.sum`` (or is its flattening); default ``stats.sum / stats.n``.
    ``sq_norms``: the rows' ‖x_i‖² if already known (saves one norm per row in this pass).
    """
    _validate(err, feat, weight)
    s = stats.sum
    if feat is not None and s.ndim != 2:
        raise ValueError("stats are of bias-only gradients (shape (C,)) but features were given")
    c, m, const = _eq3_terms(stats.n, s, alpha)
    const = const + c.sum_sq_norms * stats.sum_sq_norms
    out = torch.empty(err.shape[0], dtype=torch.float64, device=err.device)
    dtype = _compute_dtype(feat)
    m_feat = m[:, :-1].to(dtype).contiguous() if feat is not None else None  # (C, D)
    with torch.autocast(err.device.type, enabled=False):
        for rows in _chunks(err.shape[0], err.device, _row_bytes(feat, dtype)):
            we = _weighted_err(err, weight, rows, dtype)  # (m, C)
            e_sq = torch.linalg.vector_norm(we, dim=1, dtype=torch.float64) ** 2 if sq_norms is None else None
            if feat is None:
                out[rows] = c.sq_norm * (e_sq if sq_norms is None else sq_norms[rows]) + we @ m + const
                continue
            h = feat[rows].to(dtype)  # (m, D)
            sq = sq_norms[rows] if sq_norms is not None else \
                e_sq * (torch.linalg.vector_norm(h, dim=1, dtype=torch.float64) ** 2 + 1)
            hm = F.linear(h, m_feat).to(torch.float64) + m[:, -1]  # (m, C) = (m h̃_j)ᵀ
            out[rows] = c.sq_norm * sq + (we.to(torch.float64) * hm).sum(1) + const
    _require_finite(out, err, feat, weight, "the values")
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
        return _group_values(err, feat, weight, alpha)
    groups = torch.as_tensor(groups, device=err.device)
    if groups.ndim != 1 or groups.shape[0] != err.shape[0]:
        raise ValueError(f"groups must be 1-D with {err.shape[0]} entries, got shape {tuple(groups.shape)}")
    out = torch.empty(err.shape[0], dtype=torch.float64, device=err.device)
    for g in torch.unique(groups).tolist():
        idx = (groups == g).nonzero().squeeze(1)
        e, h = err[idx], None if feat is None else feat[idx]
        w = None if weight is None else weight[idx]
        if alpha is not None and g not in alpha:
            raise ValueError(f"alpha is a dict of per-group targets but has no entry for group {g}")
        a = None if alpha is None else alpha[g]
        out[idx] = _group_values(e, h, w, a)
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
        if alpha is not None:
            raise ValueError("weighting='hardness' (mean loss over S) has no target: alpha must be None")
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
