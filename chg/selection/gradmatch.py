r"""GRAD-MATCH, per-batch variant (Killamsetty et al., ICML 2021): weighted mini-batches matching a target gradient.

The pool is cut into B mini-batches: consecutive chunks of ``batch_size`` points of one random permutation (drawn
from the generator; the last chunk may be shorter). Batch b's last-layer gradient is the mean of its points'
:math:`g_i = e_i \otimes \tilde h_i`, in factored form (never per-sample autograd):

.. math::  G_b = \tfrac{1}{|b|}\, E_b^\top [H_b\ \mathbf 1] \quad (C, D+1), \qquad
           A = [\mathrm{vec}\, G_b]_b \quad (B, d).

GRAD-MATCH solves :math:`\min_{\gamma\ge 0,\ |\mathrm{supp}\,\gamma|\le m}\|A^\top\gamma - t\|^2+\lambda\|\gamma\|^2`
with orthogonal matching pursuit (the paper's Algorithm 2, *OMP*), non-negative (CORDS: ``positive=True``):

1. residual :math:`r = t - A_S^\top \gamma_S`; stop when :math:`\|r\| \le \mathrm{tol}\,\|t\|`, when m batches are
   held, or when no batch correlates positively with r (no non-negative weight could lower the residual);
2. add the batch with the largest :math:`\langle G_b, r\rangle` (``normalize=True``: divided by :math:`\|G_b\|`);
3. refit :math:`\gamma_S` = non-negative (ridge) least squares on the held batches; batches that get weight 0 leave.

Everything runs on the B×B Gram matrix :math:`K = AA^\top` and :math:`c = At`, so the cost after forming A is
independent of d = C(D+1). If the batches OMP picks hold fewer than k points, random unchosen *batches* fill the
budget with weight 1 (CORDS fills the same way with weight 1, but with individual random points). Every point of a
chosen batch gets its batch's weight.

Target and scale: :math:`t = m\,\bar g`, with :math:`\bar g` the mean gradient of the pool (``target="train"``,
CORDS' GradMatchPB default ``valid=False``) or of the validation set (``target="val"``). Picking all m batches (of
equal size) with :math:`\gamma \approx 1` then makes the subset's weighted *mean* gradient
:math:`\frac1k\sum_{i\in S} w_i g_i` match :math:`\bar g`. CORDS matches :math:`\sum_b G_b` (the same direction
when the batches have equal sizes), so its weights are about B/m times ours. With λ = 0 the picks do not depend on
this scale; a trainer may use the weights as they are or normalised by their sum (as CORDS' trainer does).

Budget: k = round(a·n) points → OMP picks at most :math:`m = \lceil k / \text{batch\_size}\rceil` batches (CORDS'
rule). If the picked batches hold fewer than k points — OMP stopped early, or one of them is the short last chunk of
the permutation — random unchosen batches (weight 1) are added until they hold at least k; the batch added last is
then cut, so the subset holds exactly k points, the same budget as every other method (CORDS keeps whole batches, up
to batch_size − 1 points more or fewer; at small fractions of a small pool that is a large edge).
Defaults follow CORDS' CIFAR configuration: λ = 0, full last layer (``gradient="full"``), target = train.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from scipy.linalg import solve_triangular
from scipy.optimize import nnls

from .interface import Selection, SelectionInput, budget, make_selection, pool_size, register

__all__ = ["batch_gradients", "nonneg_omp", "nonneg_omp_gram", "gradmatch_pb", "select_gradmatch_pb", "TOL"]

TOL = 1e-6  # OMP stops when ‖residual‖ ≤ TOL·‖target‖


def _tilde(feat: torch.Tensor) -> torch.Tensor:
    h = feat.to(torch.float64)
    return torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype, device=h.device)], 1)  # (m, D+1)


def batch_gradients(err: torch.Tensor, feat: torch.Tensor, perm: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Mean last-layer gradient :math:`G_b` of each chunk ``perm[b·bs:(b+1)·bs]``, in factored form.

    Args:
        err: (n, C) and feat: (n, D) pool factors. perm: (n,) a permutation of the pool. batch_size: bs ≥ 1.
    Returns:
        (B, C, D+1) float64, B = ⌈n / bs⌉ (the last chunk may be shorter).
    """
    n, bs = perm.shape[0], batch_size
    B = math.ceil(n / bs)
    pad = B * bs - n
    e = torch.nn.functional.pad(err[perm].to(torch.float64), (0, 0, 0, pad))  # (B·bs, C), zero rows pad
    h = torch.nn.functional.pad(_tilde(feat[perm]), (0, 0, 0, pad))  # (B·bs, D+1)
    sums = torch.bmm(e.view(B, bs, -1).transpose(1, 2), h.view(B, bs, -1))  # (B, C, D+1)
    sizes = torch.full((B,), float(bs), dtype=torch.float64, device=err.device)
    sizes[-1] = n - (B - 1) * bs
    return sums / sizes[:, None, None]


def _nnls_gram(K: np.ndarray, c: np.ndarray) -> np.ndarray:
    r"""argmin_{γ ≥ 0} γᵀKγ − 2cᵀγ for positive (semi)definite K, via K = LLᵀ and NNLS on
    ‖Lᵀγ − L⁻¹c‖²."""
    jitter = 0.0
    for _ in range(8):
        try:
            L = np.linalg.cholesky(K + jitter * np.eye(len(c)))
            break
        except np.linalg.LinAlgError:  # linearly dependent batches: regularise a little
            jitter = max(jitter * 100, 1e-12 * float(np.trace(K)) / len(c) + 1e-300)
    else:
        raise ValueError("the chosen batch gradients have a singular Gram matrix (NaN in the factors?)")
    gamma, _ = nnls(L.T, solve_triangular(L, c, lower=True))
    return gamma


def nonneg_omp_gram(K: np.ndarray, c: np.ndarray, tt: float, max_atoms: int, tol: float = TOL,
                    ridge: float = 0.0, normalize: bool = False) -> tuple[list[int], np.ndarray]:
    """Non-negative OMP (GRAD-MATCH's Algorithm 2) on the Gram matrix only.

    Args:
        K: (B, B) Gram matrix AAᵀ. c: (B,) At. tt: ‖t‖². max_atoms: at most this many atoms. tol: stop when
            ‖r‖ ≤ tol·‖t‖. ridge: λ ≥ 0. normalize: pick by ⟨G_b, r⟩/‖G_b‖.
    Returns:
        ``(atoms, weights)``: a list of atom indices and a NumPy array of their weights (all > 0).
    """
    B = K.shape[0]
    scale = np.sqrt(np.clip(np.diag(K), 0, None))  # ‖G_b‖
    atoms, gamma = [], np.zeros(0)
    for _ in range(2 * B + max_atoms):  # a safety bound: every step strictly lowers the objective, so no cycles
        if len(atoms) >= max_atoms:
            break
        corr = c - K[:, atoms] @ gamma  # (B,) ⟨G_b, r⟩
        res2 = tt - 2 * gamma @ c[atoms] + gamma @ K[np.ix_(atoms, atoms)] @ gamma  # ‖r‖²
        if res2 <= (tol ** 2) * tt:
            break
        helps = corr > tol * scale * np.sqrt(tt)  # a small weight ≥ 0 on b lowers ‖r‖ (relative threshold)
        helps[atoms] = False
        if not helps.any():
            break
        score = np.where(helps, corr / np.where(scale > 0, scale, 1.0) if normalize else corr, -np.inf)
        j = int(np.argmax(score))
        atoms.append(j)
        gamma = _nnls_gram(K[np.ix_(atoms, atoms)] + ridge * np.eye(len(atoms)), c[atoms])
        keep = gamma > 0
        atoms, gamma = [a for a, kp in zip(atoms, keep) if kp], gamma[keep]
    return atoms, gamma


def nonneg_omp(A: torch.Tensor, target: torch.Tensor, max_atoms: int, tol: float = TOL, ridge: float = 0.0,
               normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative OMP with the rows of A as atoms (via :func:`nonneg_omp_gram`).

    Args:
        A: (B, d) atoms. target: (d,). max_atoms, tol, ridge, normalize: as in :func:`nonneg_omp_gram`.
    Returns:
        ``(atoms, weights)``: (s,) int64 and (s,) float64 CPU tensors.
    Raises:
        ValueError: shapes that do not match, max_atoms < 1, ridge < 0, NaN/Inf.
    """
    if A.ndim != 2 or target.ndim != 1 or A.shape[1] != target.shape[0]:
        raise ValueError(f"A must be (B, d) and target (d,), got {tuple(A.shape)} and {tuple(target.shape)}")
    if max_atoms < 1:
        raise ValueError(f"max_atoms must be >= 1, got {max_atoms}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    A, t = A.to(torch.float64), target.to(torch.float64)
    if not (bool(torch.isfinite(A).all()) and bool(torch.isfinite(t).all())):
        raise ValueError("batch gradients or target contain NaN or Inf")
    K, c, tt = (A @ A.T).cpu().numpy(), (A @ t).cpu().numpy(), float(t @ t)
    atoms, gamma = nonneg_omp_gram(K, c, tt, max_atoms, tol, ridge, normalize)
    return torch.tensor(atoms, dtype=torch.int64), torch.from_numpy(np.asarray(gamma, dtype=np.float64))


def gradmatch_pb(err: torch.Tensor, feat: torch.Tensor, k: int, batch_size: int, generator: torch.Generator,
                 target_grad: torch.Tensor | None = None, tol: float = TOL, ridge: float = 0.0,
                 normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """GradMatch-PB on pool factors: whole mini-batches with their OMP weights (see the module docstring).

    Args:
        err: (n, C) and feat: (n, D) pool factors. k: the budget, 1 ≤ k ≤ n. batch_size: points per mini-batch.
        generator: draws the permutation and the fill-up batches. target_grad: (C, D+1) the gradient to match per
            point (default: the pool's mean gradient). tol, ridge, normalize: as in :func:`nonneg_omp_gram`.
    Returns:
        ``(indices, weights)``: (k,) int64 pool indices and (k,) float32 weights (each point its batch's weight).
    Raises:
        ValueError: shapes that do not match, NaN/Inf, a batch size that is not a positive integer, k outside
            [1, n], a target of the wrong shape.
    """
    n = err.shape[0]
    if feat.ndim != 2 or err.ndim != 2 or feat.shape[0] != n:
        raise ValueError(f"err must be (n, C) and feat (n, D), got {tuple(err.shape)} and {tuple(feat.shape)}")
    if not (bool(torch.isfinite(err).all()) and bool(torch.isfinite(feat).all())):
        raise ValueError("err or feat contains NaN or Inf")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not 1 <= k <= n:
        raise ValueError(f"budget k = {k} must lie in [1, n = {n}]")
    batch_size = int(batch_size)
    perm = torch.randperm(n, generator=generator, device=generator.device).to(err.device)  # (n,)
    G = batch_gradients(err, feat, perm, batch_size)  # (B, C, D+1)
    B = G.shape[0]
    sizes = torch.full((B,), batch_size, dtype=torch.int64)
    sizes[-1] = n - (B - 1) * batch_size
    m = min(B, math.ceil(k / batch_size))
    mean_grad = (G * sizes.to(G)[:, None, None]).sum(0) / n if target_grad is None else target_grad  # (C, D+1)
    if mean_grad.shape != G.shape[1:]:
        raise ValueError(f"target gradient must have shape {tuple(G.shape[1:])}, got {tuple(mean_grad.shape)}")
    atoms, gamma = nonneg_omp(G.reshape(B, -1), m * mean_grad.reshape(-1).to(G), m, tol, ridge, normalize)
    chosen, weights = atoms.tolist(), gamma.tolist()
    held = int(sizes[chosen].sum()) if chosen else 0
    if held < k:  # OMP stopped early, or picked the short last batch: random unchosen batches, weight 1
        rest = torch.tensor(sorted(set(range(B)) - set(chosen)), dtype=torch.int64)
        for b in rest[torch.randperm(len(rest), generator=generator, device=generator.device).cpu()].tolist():
            if held >= k:
                break
            chosen.append(b)
            weights.append(1.0)
            held += int(sizes[b])
    starts = [b * batch_size for b in chosen]
    idx = torch.cat([perm[s:s + batch_size] for s in starts])
    w = torch.cat([torch.full((int(sizes[b]),), wb, dtype=torch.float32) for b, wb in zip(chosen, weights)])
    # exactly k points: the batch added last is cut short, so GradMatch-PB gets the same budget as the others
    return idx[:k].to(torch.int64), w[:k].to(idx.device)


@register("gradmatch_pb", needs_factors=True, adaptive=True)
def select_gradmatch_pb(inp: SelectionInput, target: str = "train", tol: float = TOL, ridge: float = 0.0,
                        normalize: bool = False, gradient: str = "full") -> Selection:
    """GradMatch-PB over ``inp.factors`` with ``inp.batch_size``-point batches; weights = the batches' OMP weights.

    Args:
        inp: the pool (:class:`chg.selection.SelectionInput`). target: "train" (the pool's mean gradient) or "val"
            (the validation set's). tol, ridge, normalize: as in :func:`nonneg_omp_gram`. gradient: "full" or
            "bias".
    Returns:
        :class:`Selection` of round(a·n) int64 indices and float32 weights.
    Raises:
        ValueError: no factors, an unknown ``target`` or ``gradient``, no validation factors for "val" (and as
            :func:`gradmatch_pb`).
    """
    n = pool_size(inp)
    k = budget(n, inp.fraction)
    if inp.factors is None:
        raise ValueError("GradMatch-PB needs the pool's last-layer factors (inp.factors is None)")
    if target not in ("train", "val"):
        raise ValueError(f"target must be 'train' or 'val', got {target!r}")
    if gradient not in ("full", "bias"):
        raise ValueError(f"gradient must be 'full' or 'bias', got {gradient!r}")
    bias = gradient == "bias"
    feat = inp.factors.feat[:, :0] if bias else inp.factors.feat  # bias only: h̃ = [1]
    target_grad = None
    if target == "val":
        if inp.val_factors is None or inp.val_factors.err.shape[0] == 0:
            raise ValueError("target='val' needs validation factors (inp.val_factors)")
        v = inp.val_factors
        vfeat = v.feat[:, :0] if bias else v.feat
        target_grad = v.err.to(torch.float64).T @ _tilde(vfeat) / v.err.shape[0]  # (C, D+1)
    idx, w = gradmatch_pb(inp.factors.err, feat, k, inp.batch_size, inp.generator, target_grad, tol, ridge,
                          normalize)
    return make_selection(idx, w)
