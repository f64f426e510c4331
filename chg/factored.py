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

Precision: a group of at most SMALL_ROWS rows (a batch, a small class) is computed in float64 throughout, from the
features as given (its cost is the number of operations, not their width). Larger groups follow the features' dtype:
float64 features → float64 throughout; float32 features → the products with the features (Σ w_i e_i h_iᵀ, M h_j,
‖h_i‖²) are float32, taken of the features centred on a reference point of their chunk (μ = the mean of its first
rows; μ's share is added back in float64), so that their rounding scales with the features' spread rather than with
an offset the features share; w·e, the chunk sums, every per-sample combination and the values are float64; half
precision is raised to float32. The values are
then within ~1e-6 of their spread of the float64 ones even for features 1000 ± 0.001 (tested). Autocast is switched
off inside. Pass float64 tensors when you need float64 end to end.
The group statistics (n, s, Σ‖x_i‖²) are sums, so per-class groups and multi-process runs just add them up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .shapley import _check_finite, _check_n, coefficients

__all__ = ["GroupStats", "group_stats", "values_from_factors", "factored_shapley", "shapley_from_factors"]

CHUNK_BYTES = 4 << 20  # on CPU, a chunk of features (~4 MiB) stays in cache between its two uses in a pass
CHUNK_ROWS = None  # override the CPU chunk size in rows (tests use tiny chunks)
CHUNK_ROWS_ACCELERATOR = 1 << 18  # on GPU, large chunks: launch overhead dominates, memory is plentiful
SMALL_ROWS = 256  # groups up to this size: one float64 pass with the fewest operations (see _values_small)


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


def _validate(err, feat, weight, bias=True):
    """Types, dtypes, shapes and devices. Finiteness is checked once on O(n) results (NaN/Inf propagate into them)."""
    if not bias and feat is None:
        raise ValueError("bias=False (a bias-free output layer) needs the features: without them there is no gradient "
                         "left to value (the bias-only gradient does not exist)")
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
    """One check on an O(n) result (its sum: one reduction; elementwise only if the sum is not finite); only on
    failure are the inputs scanned to name the culprit."""
    if math.isfinite(result.sum()) or bool(torch.isfinite(result).all()):
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


def _rows(t, rows):
    return t if rows is None else t[rows]


def _weighted_err(err, weight, rows):
    """w·e of the rows (m, C) in float64 (O(m·C): cheap whatever the input dtype); ``rows`` None: all of them."""
    if weight is None:
        return _rows(err, rows).to(torch.float64)  # (m, C)
    return _rows(weight, rows).to(torch.float64)[:, None] * _rows(err, rows)  # (m, C), promoted to float64


class _Chunk(NamedTuple):
    """One chunk of rows, ready for the products: w·e (m, C) float64; the features centred on their chunk mean,
    h − μ (m, D) in the compute dtype, and μ (D,) float64 (both None when bias only); ‖x_i‖² (m,) float64."""
    we: torch.Tensor
    hc: Optional[torch.Tensor]
    mu: Optional[torch.Tensor]
    sq: torch.Tensor


def _chunk(err, feat, weight, rows, dtype, sq_norms=None, buf=None, bias=True) -> _Chunk:
    """The rows' :class:`_Chunk`; ‖x_i‖² taken from ``sq_norms`` when they are known; ``buf`` (≥ m, D) holds h − μ;
    ``bias``: h̃ = [h; 1] (True) or h (False).

    Centring: every product with the features is taken of h − μ and μ's share is added back in float64, so that the
    rounding of float32 products scales with the features' spread, not with an offset they share (with features
    100 ± 0.01 the uncentred float32 products lose the values entirely)."""
    we = _weighted_err(err, weight, rows)  # (m, C)
    if feat is None:
        return _Chunk(we, None, None, torch.linalg.vecdot(we, we) if sq_norms is None else sq_norms[rows])
    h = _rows(feat, rows).to(dtype)  # (m, D)
    mu = h[:32].mean(0)  # (D,) a reference point, in dtype so that μ + (h − μ) is h up to the difference's rounding
    hc = torch.sub(h, mu, out=None if buf is None else buf[:h.shape[0]])  # (m, D)
    mu64 = mu.to(torch.float64)
    if sq_norms is not None:
        return _Chunk(we, hc, mu64, sq_norms[rows])
    hc_sq = torch.linalg.vector_norm(hc, dim=1).square_()  # (m,) ‖h_i − μ‖², one fused reduction (no temporary)
    h_sq = (torch.addmv(hc_sq, hc, mu, alpha=2).to(torch.float64)
            + (mu64 @ mu64 + bias))  # (m,) ‖h̃_i‖² = ‖h_i − μ‖² + 2μ·(h_i − μ) + ‖μ‖² (+ 1 with a bias)
    return _Chunk(we, hc, mu64, torch.linalg.vecdot(we, we) * h_sq)  # ‖x_i‖² = ‖w_i e_i‖² ‖h̃_i‖²


def _chunk_sum(ch: _Chunk, dtype, bias=True):
    """The chunk's Σ x_i: (C, D+1) float64 (Σ w_i e_i (h_i − μ)ᵀ a GEMM in ``dtype``, plus (Σ w_i e_i) μᵀ; the bias
    column last), (C, D) for a bias-free head, or (C,) when bias only."""
    s_bias = ch.we.sum(0)  # (C,)
    if ch.hc is None:
        return s_bias
    s_feat = torch.addr((ch.we.to(dtype).T @ ch.hc).to(torch.float64), s_bias, ch.mu)  # (C, D)
    return torch.cat([s_feat, s_bias[:, None]], 1) if bias else s_feat


def _chunk_dots(ch: _Chunk, m_feat, m_feat64, m_bias):
    """⟨m, x_j⟩ = w_j e_jᵀ (m_feat (h_j − μ) + m_feat μ + m_bias) of the chunk's rows (m,) float64; ``m_feat``
    (P ≥ C, D) in the compute dtype with zero rows below C (see :func:`_gemm_rows`), ``m_feat64`` its (C, D) block
    in float64."""
    if ch.hc is None:
        return ch.we @ m_bias
    hm = F.linear(ch.hc, m_feat)[:, :m_bias.shape[0]].to(torch.float64)  # (m, C): row j is (m_feat (h_j − μ))ᵀ
    return torch.linalg.vecdot(ch.we, hm.add_(torch.addmv(m_bias, m_feat64, ch.mu)))


def _buffer(feat, dtype, n):
    """Scratch (min(n, chunk rows), D) for the centred features of a chunked pass (None when bias only)."""
    if feat is None:
        return None
    rows = min(n, _chunk_rows(feat.device, _row_bytes(feat, dtype)))
    return torch.empty(rows, feat.shape[1], dtype=dtype, device=feat.device)


def group_stats(err: torch.Tensor, feat: Optional[torch.Tensor] = None,
                weight: Optional[torch.Tensor] = None, bias: bool = True) -> GroupStats:
    """n, s = Σ w_i e_i ⊗ h̃_i and Σ‖x_i‖² of the rows given (precision: see the module docstring); h̃ = [h; 1] with
    ``bias``, h without (a bias-free output layer), nothing when ``feat`` is None (bias gradient only).

    n = 0 is allowed (zeros), so that every rank of a distributed run can take part in the all-reduce.
    """
    _validate(err, feat, weight, bias)
    return _stats_and_sq_norms(err, feat, weight, bias=bias)[0]


def _stats_and_sq_norms(err, feat, weight, check: bool = True, bias: bool = True):
    """Pass 1 over the features (inputs already validated): the group statistics and every ‖x_i‖² (n,) float64.

    ``check=False`` when the values are computed right after: NaN/Inf reach every value, checked there once.
    """
    n, C = err.shape
    s = torch.zeros((C,) if feat is None else (C, feat.shape[1] + bias), dtype=torch.float64, device=err.device)
    sq_norms = torch.empty(n, dtype=torch.float64, device=err.device)
    dtype = _compute_dtype(feat)
    buf = _buffer(feat, dtype, n)
    with torch.autocast(err.device.type, enabled=False):  # inside an AMP step, keep our precision
        for rows in _chunks(n, err.device, _row_bytes(feat, dtype)):
            ch = _chunk(err, feat, weight, rows, dtype, buf=buf, bias=bias)
            sq_norms[rows] = ch.sq
            s += _chunk_sum(ch, dtype, bias)  # accumulated in float64
    if check:
        _require_finite(sq_norms, err, feat, weight, "‖x_i‖²")
        _require_finite(s, err, feat, weight, "Σ x_i")
    return GroupStats(n, s, sq_norms.sum()), sq_norms


def _eq3_terms(n: int, s: torch.Tensor, alpha):
    """From a group's size and Σx_i (float64): the coefficients c, m = c2·s + c5·α (so that c2⟨s,x_j⟩ + c5⟨x_j,α⟩
    = w_j e_jᵀ m h̃_j) and the constant c3‖s‖² + c6⟨s,α⟩ (the c4·Σ‖x_i‖² term is added by the caller)."""
    _check_n(n)
    c = coefficients(n)
    flat = s.reshape(-1)
    if alpha is None:  # α = s/n: m and the constant are multiples of s and ‖s‖²
        return c, (c.dot_sum + c.dot_alpha / n) * s, (c.sum_norm_sq + c.sum_dot_alpha / n) * (flat @ flat)
    if torch.as_tensor(alpha).numel() != s.numel():
        raise ValueError(f"alpha has {torch.as_tensor(alpha).numel()} entries; expected {s.numel()} (shape "
                         f"{tuple(s.shape)}: C rows, D (+1 with a bias, last) columns)")
    a = torch.as_tensor(alpha).to(device=s.device, dtype=torch.float64).reshape(s.shape)
    _check_finite(a, "alpha")
    return c, c.dot_sum * s + c.dot_alpha * a, c.sum_norm_sq * (flat @ flat) + c.sum_dot_alpha * (flat @ a.reshape(-1))


def _gemm_rows(C: int, device: torch.device) -> int:
    """Rows of pass 2's (rows, D) GEMM operand, m's C rows then zero rows: on CPU 5 ≤ C < 16 → 16, whose
    (m, D)·(D, 16) kernel was measured up to 2× faster than (m, D)·(D, 10) (MKL, 2 cores); else C."""
    return 16 if device.type == "cpu" and 5 <= C < 16 else C


def _split_m(m, feat, dtype, bias=True):
    """m (C, D+1) → its feature block in the compute dtype, zero rows padded below (see :func:`_gemm_rows`), the block
    (C, D) in float64, and its bias column (C,); a bias-free head's m (C, D) has a zero bias column; bias only:
    (None, None, m)."""
    if feat is None:
        return None, None, m
    C, D = m.shape[0], feat.shape[1]
    m_feat = m.new_zeros(_gemm_rows(C, m.device), D, dtype=dtype)
    m_feat[:C] = m[:, :D]
    return m_feat, m[:, :D], (m[:, D] if bias else m.new_zeros(C))


def _values_one_chunk(err, feat, weight, alpha, bias=True):
    """Both passes fused, for a group that fits in one chunk (a batch, a class of a small data set): the chunked
    passes' arithmetic with one chunk, and nothing else (for small n, per-operation overhead is the cost)."""
    dtype = _compute_dtype(feat)
    with torch.autocast(err.device.type, enabled=False):
        ch = _chunk(err, feat, weight, None, dtype, bias=bias)
        c, m, const = _eq3_terms(err.shape[0], _chunk_sum(ch, dtype, bias), alpha)
        dots = _chunk_dots(ch, *_split_m(m, feat, dtype, bias))  # (n,) ⟨m, x_j⟩
        out = torch.add(dots, ch.sq, alpha=c.sq_norm) + (const + c.sum_sq_norms * ch.sq.sum())
    _require_finite(out, err, feat, weight, "the values")
    return out


def _values_small(err, feat, weight, alpha, bias=True):
    """A group of at most SMALL_ROWS rows: eq. (3) in float64 from the features as given (no centring needed), in
    about 20 tensor operations — at this size their fixed cost, not their arithmetic, is the time."""
    with torch.autocast(err.device.type, enabled=False):
        we = _weighted_err(err, weight, None)  # (n, C)
        sq = torch.linalg.vecdot(we, we)  # (n,) ‖w_i e_i‖²
        s_bias = we.sum(0)  # (C,)
        if feat is None:
            c, m, const = _eq3_terms(err.shape[0], s_bias, alpha)
            dots = we @ m  # (n,) ⟨m, x_j⟩
        else:
            h = feat.to(torch.float64)  # (n, D)
            sq = sq * torch.linalg.vector_norm(h, dim=1).square_().add_(float(bias))  # ‖w_i e_i‖² ‖h̃_i‖²
            s = torch.cat([we.T @ h, s_bias[:, None]], 1) if bias else we.T @ h  # (C, D+1) or (C, D)
            c, m, const = _eq3_terms(err.shape[0], s, alpha)
            D = h.shape[1]
            m_bias = m[:, D] if bias else m.new_zeros(m.shape[0])
            dots = torch.linalg.vecdot(we, torch.addmm(m_bias, h, m[:, :D].T))  # w_j e_jᵀ (m_feat h_j + m_bias)
        out = torch.add(dots, sq, alpha=c.sq_norm) + (const + c.sum_sq_norms * sq.sum())
    _require_finite(out, err, feat, weight, "the values")
    return out


def _group_values(err, feat, weight, alpha, bias=True):
    """Values of one group: one float64 pass when small, a fused single pass when it fits in one chunk, else the two
    chunked passes."""
    _validate(err, feat, weight, bias)
    if err.shape[0] <= SMALL_ROWS:
        return _values_small(err, feat, weight, alpha, bias)
    if err.shape[0] <= _chunk_rows(err.device, _row_bytes(feat, _compute_dtype(feat))):
        return _values_one_chunk(err, feat, weight, alpha, bias)
    stats, sq_norms = _stats_and_sq_norms(err, feat, weight, check=False, bias=bias)
    return _values(err, feat, weight, stats, alpha, sq_norms, bias)


def values_from_factors(err: torch.Tensor, feat: Optional[torch.Tensor], weight: Optional[torch.Tensor],
                        stats: GroupStats, alpha: Optional[torch.Tensor] = None,
                        sq_norms: Optional[torch.Tensor] = None, bias: bool = True) -> torch.Tensor:
    """Eq. (3) for the rows given, players of the group described by ``stats`` (which may span more rows or ranks).

    ``alpha`` has the shape of ``stats.sum`` (or is its flattening); default ``stats.sum / stats.n``.
    ``sq_norms``: the rows' ‖x_i‖² if already known (saves one norm per row in this pass). ``bias`` as in
    :func:`group_stats` (the same as for ``stats``). Returns (m,) float64 on ``err``'s device.
    """
    _validate(err, feat, weight, bias)
    if feat is not None and (stats.sum.ndim != 2 or stats.sum.shape[1] != feat.shape[1] + bias):
        raise ValueError(f"stats are of gradients of shape {tuple(stats.sum.shape)} but these factors give "
                         f"({err.shape[1]}, {feat.shape[1] + bias}) (features {'with' if bias else 'without'} bias)")
    return _values(err, feat, weight, stats, alpha, sq_norms, bias)


def _values(err, feat, weight, stats, alpha, sq_norms, bias=True):
    """Pass 2 over the features (inputs already validated)."""
    c, m, const = _eq3_terms(stats.n, stats.sum, alpha)
    const = const + c.sum_sq_norms * stats.sum_sq_norms
    out = torch.empty(err.shape[0], dtype=torch.float64, device=err.device)
    dtype = _compute_dtype(feat)
    m_parts = _split_m(m, feat, dtype, bias)
    buf = _buffer(feat, dtype, err.shape[0])
    with torch.autocast(err.device.type, enabled=False):
        for rows in _chunks(err.shape[0], err.device, _row_bytes(feat, dtype)):
            ch = _chunk(err, feat, weight, rows, dtype, sq_norms, buf, bias)
            out[rows] = torch.add(_chunk_dots(ch, *m_parts), ch.sq, alpha=c.sq_norm) + const
    _require_finite(out, err, feat, weight, "the values")
    return out


def factored_shapley(err: torch.Tensor, feat: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None,
                     alpha: Optional[torch.Tensor] = None, groups=None, bias: bool = True) -> torch.Tensor:
    r"""Theorem 1 values of :math:`x_i = w_i\, e_i\otimes[h_i;1]` (or :math:`w_i e_i` when ``feat`` is None).

    ``err`` (n, C) softmax − onehot; ``feat`` (n, D) penultimate features; ``weight`` (n,) per-sample loss for CHG
    Shapley, None (all ones) for Gradient Shapley; ``bias`` False for a bias-free output layer:
    :math:`x_i = w_i\, e_i\otimes h_i` (no "+1"). ``groups`` (n,) integer labels (tensor, array or list): values are
    then computed within each group separately (the per-class approximation of Algorithm 2), each with α = its group
    mean unless ``alpha`` is given as a dict {group: alpha}. Returns float64 values (n,) on ``err``'s device.
    Raises ValueError on shapes, dtypes or devices that do not match, NaN/Inf, an empty group.
    """
    if groups is None:
        return _group_values(err, feat, weight, alpha, bias)
    groups = _groups(groups, err.shape[0], err.device)
    if alpha is not None and not isinstance(alpha, dict):
        raise ValueError(f"with groups, alpha must be a dict {{group: alpha}} (one target per group), got "
                         f"{type(alpha).__name__}")
    out = torch.empty(err.shape[0], dtype=torch.float64, device=err.device)
    for g in torch.unique(groups).tolist():
        idx = (groups == g).nonzero().squeeze(1)
        e, h = err[idx], None if feat is None else feat[idx]
        w = None if weight is None else weight[idx]
        if alpha is not None and g not in alpha:
            raise ValueError(f"alpha is a dict of per-group targets but has no entry for group {g}")
        a = None if alpha is None else alpha[g]
        out[idx] = _group_values(e, h, w, a, bias)
    return out


def _groups(groups, n: int, device) -> torch.Tensor:
    """Group labels as a (n,) integer tensor on ``device``, from a tensor, a NumPy array or a list."""
    import numpy as np
    g = groups if isinstance(groups, torch.Tensor) else torch.as_tensor(np.asarray(groups))
    if g.dtype.is_floating_point or g.dtype.is_complex:
        raise ValueError(f"groups must be integer labels, got dtype {g.dtype}")
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"groups must be 1-D with {n} entries, got shape {tuple(g.shape)}")
    return g.to(device)


WEIGHTINGS = ("chg", "gradient", "hardness")
GRADIENTS = ("full", "bias")


def shapley_from_factors(factors, weighting: str = "chg", gradient: str = "full",
                         alpha: Optional[torch.Tensor] = None, groups=None) -> torch.Tensor:
    """Values of every sample from :class:`chg.lastlayer.Factors` under one of the paper's three utilities.

    ``weighting``: "chg" (x_i = l_i g_i, CHG Shapley, eq. 3), "gradient" (x_i = g_i, Gradient Shapley) or
    "hardness" (U(S) = mean loss over S, Hardness Shapley). ``gradient``: "full" (weight and bias of the last layer;
    weight only for a bias-free head, ``factors.bias`` False) or "bias" (bias only, as the official code; refused
    for a bias-free head). ``groups`` (n,) integer labels (tensor, array or list): per-group (e.g. per-class) values,
    for every weighting; ``alpha`` as in :func:`factored_shapley`. Returns (n,) float64 on the factors' device.
    Raises ValueError on unknown options and bad inputs (see :func:`factored_shapley`).
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
        groups = _groups(groups, factors.loss.shape[0], factors.loss.device)
        out = torch.empty(factors.loss.shape[0], dtype=torch.float64, device=factors.loss.device)
        for g in torch.unique(groups).tolist():
            idx = (groups == g).nonzero().squeeze(1)
            out[idx] = hardness_shapley(factors.loss[idx])
        return out
    bias = getattr(factors, "bias", True)
    if gradient == "bias" and not bias:
        raise ValueError("gradient='bias' values the bias gradient, but these factors are of a bias-free output layer "
                         "(Factors.bias is False); use gradient='full' (the weight gradient e ⊗ h)")
    feat = factors.feat if gradient == "full" else None
    weight = factors.loss if weighting == "chg" else None
    return factored_shapley(factors.err, feat, weight, alpha=alpha, groups=groups, bias=bias)
