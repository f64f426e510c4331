r"""Theorem 1: the closed-form Shapley value of the CHG utility.

For a player set :math:`N = \{1..n\}` with vectors :math:`x_i \in \mathbb{R}^d` and a target :math:`\alpha`,

.. math::  U(S) = \|\alpha\|^2 - \|\bar x_S - \alpha\|^2 = 2\langle \bar x_S, \alpha\rangle - \|\bar x_S\|^2,
           \qquad \bar x_S = \tfrac{1}{|S|}\sum_{i\in S} x_i,\quad U(\emptyset) = 0.

The Shapley value (paper eq. 3) is a linear combination of six inner products

.. math::  \phi_j = c_1\|x_j\|^2 + c_2\langle s, x_j\rangle + c_3\|s\|^2 + c_4\textstyle\sum_i\|x_i\|^2
                  + c_5\langle x_j,\alpha\rangle + c_6\langle s,\alpha\rangle, \qquad s = \textstyle\sum_{i\in N} x_i,

whose coefficients depend on ``n`` only, through the harmonic numbers :math:`H_n = \sum_{k\le n} 1/k` and
:math:`H^{(2)}_n = \sum_{k\le n} 1/k^2`. The printed formula divides by ``n - 2``; for ``n = 1`` and ``n = 2`` the
coefficients here are the exact Shapley values worked out from Definition 1 (see ``proofs/``).

Everything is accumulated in float64. ``coefficients(n, exact=True)`` gives exact ``Fraction`` coefficients.
"""
from __future__ import annotations

import functools
import math
import operator
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Coefficients", "coefficients", "harmonic", "chg_shapley", "chg_shapley_exact",
           "hardness_shapley", "mean_game_coefficients", "check_n", "check_finite"]

_EXACT_SUM_LIMIT = 100_000  # below this, harmonic numbers by exact-rounded summation; above, asymptotic series


class Coefficients(NamedTuple):
    """Coefficients of Theorem 1, one per inner product (names say which)."""
    sq_norm: float        # c1 · ‖x_j‖²
    dot_sum: float        # c2 · ⟨s, x_j⟩
    sum_norm_sq: float    # c3 · ‖s‖²
    sum_sq_norms: float   # c4 · Σ_i ‖x_i‖²
    dot_alpha: float      # c5 · ⟨x_j, α⟩
    sum_dot_alpha: float  # c6 · ⟨s, α⟩


def harmonic(n: int, order: int = 1, exact: bool = False):
    r""":math:`H^{(r)}_n = \sum_{k=1}^n k^{-r}` for ``order`` r in {1, 2}; a Fraction if ``exact``.

    Float path: ``math.fsum`` (correctly rounded) for n ≤ 1e5, else the Euler–Maclaurin series, whose truncation
    error is below 1e-30 there. Either way the result is within one ulp or so of the true value.

    Args:
        n: ≥ 0 (:math:`H_0 = 0`). order: 1 or 2. exact: a ``Fraction`` instead of a float.
    Returns:
        float, or ``Fraction`` if ``exact``.
    Raises:
        ValueError: an order other than 1 or 2, or n < 0.
    """
    if order not in (1, 2):
        raise ValueError(f"harmonic: order must be 1 or 2, got {order}")
    if n < 0:
        raise ValueError(f"harmonic: n must be >= 0, got {n}")
    if exact:
        return sum((Fraction(1, k ** order) for k in range(1, n + 1)), Fraction(0))
    if n <= _EXACT_SUM_LIMIT:
        return math.fsum(1.0 / k ** order for k in range(1, n + 1))
    x = float(n)
    if order == 1:  # ψ(n+1) + γ
        return math.fsum([math.log(x), 0.57721566490153286061, 1 / (2 * x), -1 / (12 * x**2), 1 / (120 * x**4),
                          -1 / (252 * x**6)])
    # π²/6 − ψ'(n+1)
    return math.fsum([math.pi**2 / 6, -1 / x, 1 / (2 * x**2), -1 / (6 * x**3), 1 / (30 * x**5), -1 / (42 * x**7)])


def mean_game_coefficients(n: int, exact: bool = False) -> tuple:
    r"""Shapley value of the mean game :math:`V(S) = \frac{1}{|S|}\sum_{i\in S} a_i` (V(∅) = 0).

    :math:`\phi_j = \frac{H_n - 1/n}{n-1}\,a_j - \frac{H_n - 1}{n(n-1)}\sum_{i\in N} a_i` for n ≥ 2, and
    :math:`\phi_1 = a_1` for n = 1. This is the Hardness Shapley closed form (a = per-sample loss) and, doubled, the
    α-part of Theorem 1.

    Args:
        n: the number of players, ≥ 1. exact: Fractions instead of floats.
    Returns:
        ``(coef_own, coef_total)``: floats, or Fractions if ``exact``.
    Raises:
        ValueError: n not an integer, or n < 1.
    """
    n = check_n(n)
    one = Fraction(1) if exact else 1.0
    if n == 1:
        return one, 0 * one
    h1 = harmonic(n, 1, exact)
    return (h1 - one / n) / (n - 1), -(h1 - one) / (n * (n - 1))


def coefficients(n: int, exact: bool = False) -> Coefficients:
    """Coefficients c1..c6 of Theorem 1 (eq. 3) for a player set of size n (exact Definition-1 values for n = 1, 2).

    Args:
        n: the number of players, ≥ 1 (a Python or NumPy integer). exact: Fractions instead of floats.
    Returns:
        :class:`Coefficients` of floats, or of Fractions if ``exact``.
    Raises:
        ValueError: n not an integer, or n < 1.
    """
    return _coefficients(check_n(n), bool(exact))


@functools.lru_cache(maxsize=1024)  # per-class valuation asks for the same few n every epoch
def _coefficients(n: int, exact: bool) -> Coefficients:
    one = Fraction(1) if exact else 1.0
    zero = 0 * one
    own, total = mean_game_coefficients(n, exact)
    if n == 1:  # φ = U({1}) = 2⟨x,α⟩ − ‖x‖²
        return Coefficients(-one, zero, zero, zero, 2 * own, zero)
    if n == 2:  # φ_1 = ½[U(1) − U(∅)] + ½[U(12) − U(2)], rewritten in the six inner products
        return Coefficients(-one, zero, -one / 8, one / 2, 2 * own, 2 * total)
    h1, h2 = harmonic(n, 1, exact), harmonic(n, 2, exact)
    t = 2 * h1 - 2 * h2 - 1 + one / n  # appears in three coefficients
    nn1, nn12 = n * (n - 1), n * (n - 1) * (n - 2)
    return Coefficients(
        sq_norm=-h2 / n + (2 * h1 - 3 * h2 + one / n) / nn1 + 2 * t / nn12,
        dot_sum=-2 * (h1 - h2 - one / n + one / n**2) / ((n - 1) * (n - 2)),
        sum_norm_sq=t / nn12,
        sum_sq_norms=(h2 - one / n) / nn1 - t / nn12,
        dot_alpha=2 * own,
        sum_dot_alpha=2 * total,
    )


def chg_shapley(x, alpha=None):
    r"""Shapley values of the CHG utility (Theorem 1, eq. 3) for dense per-sample vectors.

    Args:
        x: (n, d) real array or tensor, the players' vectors :math:`x_i` (row i), n ≥ 1.
        alpha: (d,) target :math:`\alpha`, default the mean of ``x`` (Algorithm 1, line 4).
    Returns:
        (n,) float64 values :math:`\phi_j`: numpy in → numpy out; torch in → torch out on the same device.
    Raises:
        ValueError: x not 2-D, n = 0, complex or non-numeric input, NaN/Inf, alpha of another shape than (d,).
    """
    is_numpy = not isinstance(x, torch.Tensor)
    xt = _as_float64_tensor(x, "x")
    if xt.ndim != 2:
        raise ValueError(f"chg_shapley: x must be 2-D (n, d), got shape {tuple(xt.shape)}")
    n, d = xt.shape
    check_n(n)
    check_finite(xt, "x")
    s = xt.sum(0)  # (d,)
    a = s / n if alpha is None else _as_float64_tensor(alpha, "alpha", device=xt.device)
    if a.shape != (d,):
        raise ValueError(f"chg_shapley: alpha must have shape (d,) = ({d},), got {tuple(a.shape)}")
    check_finite(a, "alpha")
    c = coefficients(n)
    sq = (xt * xt).sum(1)  # (n,)
    proj = xt @ (c.dot_sum * s + c.dot_alpha * a)  # (n,)  c2⟨s,x_j⟩ + c5⟨x_j,α⟩ in one product
    const = c.sum_norm_sq * (s @ s) + c.sum_sq_norms * sq.sum() + c.sum_dot_alpha * (s @ a)
    out = c.sq_norm * sq + proj + const
    return out.cpu().numpy() if is_numpy else out


def chg_shapley_exact(x, alpha=None) -> list:
    """Eq. (3) in exact rational arithmetic, for oracles, proofs and demos at small n.

    Args:
        x: a list of n ≥ 1 vectors (lists) of Fractions, ints (NumPy's too) or finite floats (each read as its exact
            value), all of one length d. alpha: a length-d vector of the same, default the mean of ``x``.
    Returns:
        list of n Fractions.
    Raises:
        ValueError: n = 0, vectors of different lengths, alpha of another length, a NaN or Inf entry (named).
        TypeError: an entry that is not a number (named).
    """
    n = len(x)
    check_n(n)
    d = len(x[0])
    if any(len(row) != d for row in x):
        raise ValueError("chg_shapley_exact: all vectors of x must have the same length")
    x = [[exact(v, f"chg_shapley_exact: x[{i}][{k}]") for k, v in enumerate(row)] for i, row in enumerate(x)]
    s = [sum((row[k] for row in x), Fraction(0)) for k in range(d)]
    a = [v / n for v in s] if alpha is None else [exact(v, f"chg_shapley_exact: alpha[{k}]")
                                                  for k, v in enumerate(alpha)]
    if len(a) != d:
        raise ValueError(f"chg_shapley_exact: alpha has {len(a)} entries but the vectors have {d}")
    dot = lambda u, v: sum((p * q for p, q in zip(u, v)), Fraction(0))  # noqa: E731
    c = coefficients(n, exact=True)
    const = c.sum_norm_sq * dot(s, s) + c.sum_sq_norms * sum(dot(r, r) for r in x) + c.sum_dot_alpha * dot(s, a)
    return [c.sq_norm * dot(v, v) + c.dot_sum * dot(s, v) + c.dot_alpha * dot(v, a) + const for v in x]


def hardness_shapley(loss):
    r"""Hardness Shapley: Shapley values of :math:`U(S) = \frac{1}{|S|}\sum_{i\in S} l_i` (Table 2's ablation).

    Args:
        loss: (n,) per-sample losses, array or tensor (any real dtype).
    Returns:
        (n,) float64, :math:`\phi_j = \frac{H_n - 1/n}{n-1} l_j - \frac{H_n - 1}{n(n-1)}\sum_i l_i`
        (n ≥ 2; φ = l for n = 1; :func:`mean_game_coefficients`); numpy in → numpy out, torch in → torch out on the
        same device. For values from statistics summed over batches or ranks see :func:`chg.factored.utility_values`.
    Raises:
        ValueError: if ``loss`` is not 1-D, empty, complex or not finite.
    """
    is_numpy = not isinstance(loss, torch.Tensor)
    lt = _as_float64_tensor(loss, "loss")
    if lt.ndim != 1:
        raise ValueError(f"hardness_shapley: loss must be 1-D (n,), got shape {tuple(lt.shape)}")
    check_n(lt.shape[0])
    check_finite(lt, "loss")
    own, total = mean_game_coefficients(lt.shape[0])
    out = own * lt + total * lt.sum()
    return out.cpu().numpy() if is_numpy else out


def _as_float64_tensor(v, name, device=None) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        if v.is_complex():
            raise ValueError(f"{name} must be real, got complex dtype {v.dtype}")
        return v.detach().to(device=device if device is not None else v.device, dtype=torch.float64)
    if np.iscomplexobj(v):
        raise ValueError(f"{name} must be real, got complex values")
    try:
        arr = np.array(v, dtype=np.float64)  # a fresh, writable, positively strided copy
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(v).__name__}: {exc}") from None
    return torch.from_numpy(arr).to(device) if device is not None else torch.from_numpy(arr)


def check_n(n) -> int:
    """The number of players as a Python int (NumPy integers would overflow n(n−1)(n−2) past 2e6).

    Args:
        n: a Python or NumPy integer ≥ 1.
    Returns:
        ``n`` as an int.
    Raises:
        ValueError: not an integer, or below 1 (an empty player set).
    """
    try:
        if isinstance(n, (bool, np.bool_)):
            raise TypeError
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"the number of players n must be an integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"the player set is empty (n = {n}): Shapley values need n >= 1")
    return n


def exact(v, what: str) -> Fraction:
    """A number as an exact Fraction: an int (NumPy's too: as a Python int, no overflow), a rational (``Fraction``,
    ``sympy.Rational``, ``decimal.Decimal``), or a finite float of any width (exactly its value, a ``longdouble``'s
    too).

    Args:
        v: the number. what: where it is, for the messages (``"x[2][0]"``).
    Returns:
        ``Fraction``.
    Raises:
        ValueError: NaN or Inf. TypeError: not a number (a string, a bool, None).
    """
    if isinstance(v, Fraction):
        return v
    if isinstance(v, (bool, np.bool_, str, bytes)) or v is None:
        raise TypeError(f"{what} must be a number (an int, a rational or a float), got {v!r}")
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            raise ValueError(f"{what} is {v!r}: exact arithmetic needs finite numbers")
        return Fraction(*v.as_integer_ratio())  # exact, also beyond float64 (np.longdouble)
    try:
        return Fraction(operator.index(v))
    except TypeError:
        pass
    try:  # a rational of another library (sympy.Rational), a Decimal
        return Fraction(v)
    except TypeError:
        raise TypeError(f"{what} must be a number (an int, a rational or a float), got {v!r}") from None
    except (ValueError, OverflowError):  # a Decimal NaN or Infinity
        raise ValueError(f"{what} is {v!r}: exact arithmetic needs finite numbers") from None


def check_finite(t: torch.Tensor, name: str) -> None:
    """Refuse NaN and Inf, counting them.

    Args:
        t: a tensor. name: what it is, for the message.
    Raises:
        ValueError: ``t`` holds a NaN or an infinity.
    """
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or Inf)")
