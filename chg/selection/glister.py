r"""GLISTER-ONLINE (Killamsetty et al., AAAI 2021): greedy subset selection for validation log-likelihood.

GLISTER picks the subset whose one gradient step most lowers the validation loss,
:math:`\max_{|S|\le k} L_V(\theta) - L_V(\theta - \eta\sum_{j\in S} g_j)`, greedily with a Taylor approximation
(the paper's Algorithm 1, *GreedyTaylorApprox*): start with :math:`S_0=\emptyset`; at step t add the point

.. math::  i_t = \arg\max_{i\notin S_t}\ G_t(i) = \langle \nabla_\theta L_V(\theta_{S_t}),\, g_i\rangle,
           \qquad \theta_{S_t} = \theta - \eta \sum_{j\in S_t} g_j ,

since :math:`L_V(\theta_{S_t} - \eta g_i) \approx L_V(\theta_{S_t}) - \eta\, G_t(i)` to first order.

**Last layer only** (as the paper and CORDS do): :math:`\theta = [W\,|\,b]` (C, D+1) and :math:`g_i = e_i\otimes\tilde
h_i` with :math:`\tilde h_i = [h_i; 1]`. The validation features :math:`h_v` do not change with the last layer, so
the validation logits after a step are exact and cheap:

.. math::  z_v(\theta_S) = z_v - \eta \sum_{j\in S} (\tilde h_v^\top \tilde h_j)\, e_j \quad (n_V, C),\qquad
           \nabla L_V(\theta_S) = \tfrac{1}{n_V} \sum_v (\mathrm{softmax}(z_v(\theta_S)) - \mathrm{onehot}(y_v))
           \otimes \tilde h_v \quad (C, D+1),

and :math:`G_t(i) = e_i^\top \nabla L_V(\theta_{S_t})\, \tilde h_i`. The starting validation logits come from the
factors: :math:`z_v = \log p_v` with :math:`p_v = e_v + \mathrm{onehot}(y_v)` (softmax ignores a shift per row).
One greedy step costs O(s·C·D) for the s candidates plus O(n_V·C·D) for the new validation gradient.

Choices (CORDS' defaults in brackets): the whole pool competes, not per class [``selection_type='Supervised'``];
stochastic greedy (Mirzasoleiman et al., 2015) evaluates :math:`\lceil (n/k)\ln(1/\varepsilon)\rceil` remaining
points per step, drawn uniformly *with* replacement (duplicates only waste an evaluation) [``greedy='Stochastic'``,
:math:`\varepsilon = 0.01`, rounded down, without replacement]; ``epsilon=None`` is the plain greedy over all
remaining points. :math:`\eta` is the trainer's learning rate (``inp.lr``; CORDS passes the optimizer's lr), 0.01
if none is given. ``gradient="full"`` uses weight and bias gradients; ``"bias"`` only the bias [CORDS:
``linear_layer=False``, i.e. bias]. Budget
:math:`k = \mathrm{round}(a n)`; all weights 1.
"""
from __future__ import annotations

import math

import torch

from .interface import Selection, SelectionInput, budget, make_selection, pool_size, register

__all__ = ["initial_val_logits", "val_gradient", "taylor_gains", "step_val_logits", "glister_greedy",
           "select_glister", "ETA", "EPSILON"]

ETA = 0.01       # step size of the one-step look-ahead (CORDS passes the optimizer's learning rate)
EPSILON = 0.01   # stochastic-greedy accuracy: ⌈(n/k) ln(1/ε)⌉ candidates per step


def _tilde(feat: torch.Tensor) -> torch.Tensor:
    """[h; 1]: (m, D) → (m, D+1), float64."""
    h = feat.to(torch.float64)
    return torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype, device=h.device)], 1)


def initial_val_logits(val_err: torch.Tensor, val_labels: torch.Tensor) -> torch.Tensor:
    """Validation logits up to a per-row shift, :math:`\\log(e_v + \\mathrm{onehot}(y_v))` (softmax ignores it).

    Args:
        val_err: (n_V, C) softmax − onehot of the validation points. val_labels: (n_V,) int64 labels.
    Returns:
        (n_V, C) float64 (−inf where the probability is 0).
    Raises:
        ValueError: ``val_err + onehot(val_labels)`` is not a probability vector (labels that do not match).
    """
    p = val_err.to(torch.float64).clone()  # (n_V, C)
    p[torch.arange(p.shape[0], device=p.device), val_labels] += 1.0
    if float(p.min()) < -1e-4 or float((p.sum(1) - 1).abs().max()) > 1e-3:
        raise ValueError("val_factors.err + onehot(val_labels) is not a probability vector: val_labels do not "
                         "match the labels the validation factors were computed with")
    return p.clamp_min(0).log()  # log 0 = -inf is fine: softmax gives 0 there


def val_gradient(val_z: torch.Tensor, val_labels: torch.Tensor, val_feat: torch.Tensor) -> torch.Tensor:
    """∇ of the mean validation cross-entropy w.r.t. the last layer [W | b] at logits ``val_z``.

    Args:
        val_z: (n_V, C) float64 logits. val_labels: (n_V,) int64. val_feat: (n_V, D) features.
    Returns:
        (C, D+1) float64,
        :math:`\\frac1{n_V}\\sum_v (\\mathrm{softmax}(z_v) - \\mathrm{onehot}(y_v))\\otimes\\tilde h_v`.
    """
    return _val_gradient(val_z, val_labels, _tilde(val_feat))


def _val_gradient(val_z, val_labels, val_h_tilde):
    e = torch.softmax(val_z, 1)  # (n_V, C)
    e[torch.arange(e.shape[0], device=e.device), val_labels] -= 1.0
    return e.T @ val_h_tilde / e.shape[0]  # (C, D+1)


def taylor_gains(grad_val: torch.Tensor, err: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    """GLISTER's Taylor gains :math:`G(i) = \\langle \\nabla L_V, e_i\\otimes\\tilde h_i\\rangle = e_i^\\top \\nabla L_V
    \\tilde h_i`.

    Args:
        grad_val: (C, D+1) float64 validation gradient. err: (m, C) candidates' errors. feat: (m, D) their features.
    Returns:
        (m,) float64 gains.
    """
    hm = feat.to(torch.float64) @ grad_val[:, :-1].T + grad_val[:, -1]  # (m, C)
    return (err.to(torch.float64) * hm).sum(1)


def step_val_logits(val_z: torch.Tensor, val_feat: torch.Tensor, e_j: torch.Tensor, h_j: torch.Tensor,
                    eta: float) -> torch.Tensor:
    """Validation logits after the last layer moves by :math:`-\\eta\\, e_j\\otimes\\tilde h_j` (exact: the
    features do not depend on the last layer).

    Args:
        val_z: (n_V, C) float64 logits. val_feat: (n_V, D). e_j: (C,) and h_j: (D,) the chosen point's factors.
        eta: the step size η.
    Returns:
        (n_V, C) float64 logits.
    """
    overlap = val_feat.to(torch.float64) @ h_j.to(torch.float64) + 1.0  # (n_V,) = h̃_vᵀ h̃_j
    return val_z - eta * overlap[:, None] * e_j.to(torch.float64)[None, :]


def _check(err, feat, val_err, val_feat, val_labels):
    for name, t in (("err", err), ("feat", feat), ("val_err", val_err), ("val_feat", val_feat)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2:
            raise ValueError(f"{name} must be a 2-D tensor, got {getattr(t, 'shape', type(t).__name__)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf")
    if feat.shape[0] != err.shape[0] or val_feat.shape[0] != val_err.shape[0]:
        raise ValueError(f"row counts differ: err {err.shape[0]}, feat {feat.shape[0]}, val_err {val_err.shape[0]}, "
                         f"val_feat {val_feat.shape[0]}")
    if val_err.shape[1] != err.shape[1] or val_feat.shape[1] != feat.shape[1]:
        raise ValueError(f"validation factors (C={val_err.shape[1]}, D={val_feat.shape[1]}) do not match the pool's "
                         f"(C={err.shape[1]}, D={feat.shape[1]})")
    if val_err.shape[0] == 0:
        raise ValueError("the validation set is empty: GLISTER needs validation factors")
    if val_labels.ndim != 1 or val_labels.shape[0] != val_err.shape[0]:
        raise ValueError(f"val_labels must be ({val_err.shape[0]},), got shape {tuple(val_labels.shape)}")
    if int(val_labels.min()) < 0 or int(val_labels.max()) >= err.shape[1]:
        raise ValueError(f"val_labels must lie in [0, {err.shape[1]})")


def glister_greedy(err: torch.Tensor, feat: torch.Tensor, val_err: torch.Tensor, val_feat: torch.Tensor,
                   val_labels: torch.Tensor, k: int, generator: torch.Generator, eta: float = ETA,
                   epsilon: float | None = EPSILON) -> torch.Tensor:
    """GLISTER's greedy (the paper's Algorithm 1, *GreedyTaylorApprox*) on last-layer factors.

    Args:
        err: (n, C) and feat: (n, D) pool factors. val_err: (n_V, C), val_feat: (n_V, D), val_labels: (n_V,) int64
            validation factors and labels. k: the budget, 1 ≤ k ≤ n. generator: draws the stochastic-greedy
            candidates. eta: the look-ahead step η. epsilon: stochastic greedy's ε in (0, 1), None for plain greedy.
    Returns:
        (k,) int64 CPU pool indices in pick order.
    Raises:
        ValueError: shapes that do not match, NaN/Inf factors, an empty validation set, labels outside [0, C), k
            outside [1, n], ε outside (0, 1).
    """
    _check(err, feat, val_err, val_feat, val_labels)
    n = err.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"budget k = {k} must lie in [1, n = {n}]")
    if epsilon is not None and not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must lie in (0, 1) (or be None for plain greedy), got {epsilon!r}")
    dev = err.device
    e_pool, h_pool = err.to(torch.float64), feat.to(torch.float64)  # (n, C), (n, D)
    val_labels = val_labels.to(dev)
    z = initial_val_logits(val_err, val_labels)  # (n_V, C)
    hv = _tilde(val_feat)  # (n_V, D+1)
    sample = n if epsilon is None else max(1, math.ceil(n / k * math.log(1.0 / epsilon)))
    remaining = torch.arange(n)  # positions [0, r) hold the points not yet chosen (swap-remove)
    chosen = []
    for r in range(n, n - k, -1):
        g_val = _val_gradient(z, val_labels, hv)  # (C, D+1) at θ_S
        if sample >= r:
            pos = torch.arange(r)
        else:
            pos = torch.randint(r, (sample,), generator=generator, device=generator.device).cpu()
        cand = remaining[pos]  # (s,)
        gains = taylor_gains(g_val, e_pool[cand.to(dev)], h_pool[cand.to(dev)])  # (s,)
        p = int(pos[int(gains.argmax())])
        j = int(remaining[p])
        remaining[p] = remaining[r - 1]
        chosen.append(j)
        z = step_val_logits(z, hv[:, :-1], e_pool[j], h_pool[j], eta)
    return torch.tensor(chosen, dtype=torch.int64)


@register("glister", needs_factors=True, adaptive=True, needs_val=True)
def select_glister(inp: SelectionInput, eta: float | None = None, epsilon: float | None = EPSILON,
                   gradient: str = "full") -> Selection:
    """GLISTER over the whole pool from ``inp.factors`` and ``inp.val_factors``/``inp.val_labels``; weights 1.

    Args:
        inp: the pool (:class:`chg.selection.SelectionInput`). eta: the look-ahead step; default the trainer's
            learning rate ``inp.lr`` (CORDS uses the optimizer's lr), else :data:`ETA`. epsilon: as in
            :func:`glister_greedy`. gradient: "full" (weight and bias) or "bias".
    Returns:
        :class:`Selection` of round(a·n) sorted int64 indices, weights 1.
    Raises:
        ValueError: no pool or validation factors, an unknown ``gradient`` (and as :func:`glister_greedy`).
    """
    if eta is None:
        eta = getattr(inp, "lr", None) or ETA
    n = pool_size(inp)
    k = budget(n, inp.fraction)
    if inp.factors is None:
        raise ValueError("GLISTER needs the pool's last-layer factors (inp.factors is None)")
    if inp.val_factors is None or inp.val_labels is None:
        raise ValueError("GLISTER needs a validation set: inp.val_factors and inp.val_labels must be given")
    if gradient not in ("full", "bias"):
        raise ValueError(f"gradient must be 'full' or 'bias', got {gradient!r}")
    f, v = inp.factors, inp.val_factors
    feat, val_feat = (f.feat, v.feat) if gradient == "full" else (f.feat[:, :0], v.feat[:, :0])  # bias: h̃ = [1]
    idx = glister_greedy(f.err, feat, v.err, val_feat, inp.val_labels, k, inp.generator, eta, epsilon)
    return make_selection(idx.sort().values)
