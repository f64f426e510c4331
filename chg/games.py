r"""Utilities U(S) and the exhaustive-enumeration Shapley value (Definition 1): the oracle of this project.

Toy games with known answers live here so that tests, proofs and notebooks share them. With ``Fraction`` inputs every
utility here is exact, and so is :func:`exact_shapley`.
"""
from __future__ import annotations

from fractions import Fraction
from itertools import combinations
from math import comb
from typing import Callable, Sequence

from .renames import renamed
from .shapley import check_n

__all__ = ["exact_shapley", "chg_utility", "mean_utility", "hardness_utility", "additive_game", "glove_game"]

MAX_ENUMERATION_PLAYERS = 20


def exact_shapley(utility: Callable[[tuple], object], n: int) -> list:
    r"""Shapley values by Definition 1: :math:`\phi_i = \frac1n\sum_{k=1}^{n}\binom{n-1}{k-1}^{-1}
    \sum_{S\subseteq N\setminus i,|S|=k-1} [U(S\cup i)-U(S)]`.

    Each of the :math:`2^n` subsets is evaluated once. Exact when the utility returns Fractions (or ints).

    Args:
        utility: U, a function of a sorted tuple of player indices (``()`` for the empty set) returning a number.
        n: the number of players, 1 ≤ n ≤ :data:`MAX_ENUMERATION_PLAYERS`.
    Returns:
        list of n values φ_0..φ_{n-1} (Fractions when U returns Fractions).
    Raises:
        ValueError: n not an integer (a float, a bool), n < 1 or n > MAX_ENUMERATION_PLAYERS.
    """
    try:
        n = check_n(n)
    except ValueError as e:
        raise ValueError(f"exact_shapley: {e}") from None
    if n > MAX_ENUMERATION_PLAYERS:
        raise ValueError(f"exact_shapley: n = {n} would enumerate 2^{n} subsets; at most {MAX_ENUMERATION_PLAYERS}")
    value = {subset: utility(subset) for k in range(n + 1) for subset in combinations(range(n), k)}
    phi = []
    for i in range(n):
        others = [p for p in range(n) if p != i]
        total = 0
        for k in range(n):  # |S| = k
            weight = Fraction(1, n * comb(n - 1, k))
            for subset in combinations(others, k):
                with_i = tuple(sorted(subset + (i,)))
                total += weight * (value[with_i] - value[subset])
        phi.append(total)
    return phi


def _dot(a: Sequence, b: Sequence):
    return sum(p * q for p, q in zip(a, b))


def _mean_vector(x: Sequence[Sequence], subset: tuple) -> list:
    d = len(x[0])
    k = len(subset)
    return [sum(x[i][c] for i in subset) / Fraction(k) for c in range(d)]


def chg_utility(x: Sequence[Sequence], alpha: Sequence) -> Callable[[tuple], object]:
    r"""The CHG utility of Theorem 1: :math:`U(S) = \|\alpha\|^2 - \|\bar x_S - \alpha\|^2`, U(∅) = 0.

    For CHG Shapley the vectors are :math:`x_i = l_i\nabla f(i;\theta)`, for Gradient Shapley
    :math:`x_i = \nabla f(i;\theta)`.

    Args:
        x: n vectors of length d (Fractions for exact arithmetic). alpha: the target, length d.
    Returns:
        U, a function of a sorted tuple of player indices.
    Raises:
        ValueError: no vectors, vectors of different lengths, or an alpha of another length.
    """
    if len(x) == 0:
        raise ValueError("chg_utility: x holds no vectors")
    d = len(x[0])
    bad = next((i for i, row in enumerate(x) if len(row) != d), None)
    if bad is not None:
        raise ValueError(f"chg_utility: all vectors of x must have one length; x[0] has {d} entries, x[{bad}] "
                         f"{len(x[bad])}")
    if len(alpha) != d:
        raise ValueError(f"chg_utility: alpha has {len(alpha)} entries but the vectors have {d}")

    def utility(subset: tuple):
        if not subset:
            return Fraction(0)
        diff = [m - a for m, a in zip(_mean_vector(x, subset), alpha)]
        return _dot(alpha, alpha) - _dot(diff, diff)
    return utility



def mean_utility(a: Sequence) -> Callable[[tuple], object]:
    r"""The mean game :math:`V(S) = \frac{1}{|S|}\sum_{i\in S} a_i`, V(∅) = 0 (Hardness Shapley's utility, a = loss).

    Args:
        a: n numbers (Fractions for exact arithmetic).
    Returns:
        V, a function of a sorted tuple of player indices.
    """
    def utility(subset: tuple):
        if not subset:
            return Fraction(0)
        return sum(a[i] for i in subset) / Fraction(len(subset))
    return utility


hardness_utility = mean_utility  # Hardness score of the paper: mean loss over S


@renamed("0.2.0", weights="values")
def additive_game(values: Sequence) -> Callable[[tuple], object]:
    """U(S) = Σ_{i∈S} v_i: the Shapley value is v_i exactly (a known answer).

    Args:
        values: n numbers v_i (``weights`` before 0.2.0).
    Returns:
        U, a function of a sorted tuple of player indices (a Fraction for Fraction or int values).
    """
    return lambda subset: sum((values[i] for i in subset), Fraction(0))


def glove_game(left: Sequence[int], right: Sequence[int]) -> Callable[[tuple], object]:
    """U(S) = min(#left gloves in S, #right gloves in S): a classic game with known symmetric values.

    Args:
        left, right: the players holding a left / a right glove.
    Returns:
        U, a function of a sorted tuple of player indices returning a Fraction.
    """
    left, right = set(left), set(right)
    return lambda subset: Fraction(min(len(left & set(subset)), len(right & set(subset))))
