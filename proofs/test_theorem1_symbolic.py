r"""Theorem 1 (eq. 3) for every n ≥ 3, proved symbolically.

Claim. For :math:`U(S) = \|\alpha\|^2 - \|\frac{1}{|S|}\sum_{i\in S}x_i - \alpha\|^2` (U(∅) = 0) the Shapley value of
Definition 1 is eq. (3), for every n ≥ 3 and any vectors in any dimension.

Proof (each step is a function or an assertion below).
1. Definition 1 grouped by |S| = k: φ_j = (1/n) Σ_{k=0}^{n-1} E_k[U(S∪j) − U(S)], E_k the mean over k-subsets of N∖j.
2. Write T = Σ_{i∈S} x_i. For k ≥ 1, U(S∪j) − U(S) = 2(a + ⟨T,α⟩)/(k+1) − (q + 2⟨T,x_j⟩ + ‖T‖²)/(k+1)²
   − 2⟨T,α⟩/k + ‖T‖²/k², which is *linear* in ⟨T,α⟩, ⟨T,x_j⟩, ‖T‖²; so E_k only needs their means
   (``proofkit.subset_moments``, proved in test_subset_moments.py): a rational function M(k) of k and n, linear in
   the inner products. For k = 0 the marginal is U({j}) − U(∅) = 2a − q.
3. Σ_{k=1}^{n-1} M(k) in closed form for symbolic n (``proofkit.sum_k``: partial fractions in k, re-verified, then
   Σ 1/(k+t)^r = shifted harmonic numbers H_n, H_n^(2)).
4. Rewrite the N∖j quantities in the six inner products (``proofkit.PRIMED_TO_FULL``) and compare with eq. (3):
   each of the six coefficients minus the paper's cancels to 0 as a rational function of n, H1, H2 with H1, H2 *free*
   — so the identity holds for every n ≥ 3 (the moments need n − 2 ≠ 0; n = 1, 2 are in test_theorem1_enumeration.py).
"""
from fractions import Fraction
from functools import lru_cache

import pytest
import sympy as sp

from chg.games import chg_utility, exact_shapley
from proofs.proofkit import (H1, H2, INVARIANTS, PRIMED_TO_FULL, a, coefficient_residuals, eq3, eq3_coefficients,
                             evaluate, exact_sum, harmonic_exact, inner_products, k, n, q, random_rational_vectors,
                             subset_moments, sum_k)


def chg_marginal_mean():
    """Step 2: E_k[U(S∪j) − U(S)] for k ≥ 1 as a rational function of k, n (N∖j symbols)."""
    mom = subset_moments()
    with_j = 2 * (a + mom["T_alpha"]) / (k + 1) - (q + 2 * mom["T_xj"] + mom["T_sq"]) / (k + 1) ** 2
    without_j = 2 * mom["T_alpha"] / k - mom["T_sq"] / k ** 2
    return with_j - without_j


@lru_cache(maxsize=None)
def chg_shapley_symbolic():
    """Steps 1–3: φ_j for symbolic n ≥ 3, in the six inner products."""
    phi = (2 * a - q + sum_k(chg_marginal_mean(), 1, -1)) / n
    return sp.expand(phi.subs(PRIMED_TO_FULL))


def test_theorem1_all_n():
    """The derived φ_j and eq. (3) are the same polynomial in the six inner products, for symbolic n, H1, H2."""
    phi = chg_shapley_symbolic()
    res = coefficient_residuals(phi, eq3())
    assert all(r == 0 for r in res.values()), res


def test_derivation_is_not_vacuous_at_concrete_n():
    """The symbolic φ_j, evaluated at n = 3..6, equals exhaustive enumeration (guards against a derivation that
    is wrong in the same way as a transcription)."""
    phi = chg_shapley_symbolic()
    for nn in range(3, 7):
        x = random_rational_vectors(nn, 2, seed=nn)
        alpha = random_rational_vectors(1, 2, seed=100 + nn)[0]
        truth = exact_shapley(chg_utility(x, alpha), nn)
        for j in range(nn):
            assert evaluate(phi, inner_products(x, alpha, j), nn) == truth[j]


# --- the summation engine, checked against exact sums ----------------------------------------------------------------
SUMMANDS = [
    (1 / k, 1, 0), (1 / k ** 2, 1, 0), (1 / (k + 1), 1, -1), (1 / (k + 1) ** 2, 1, -1), (1 / k, 1, -1),
    ((k - 1) / k ** 2, 2, 0), ((2 * k - 1) / (k ** 2 * (k - 1)), 2, 0),
    ((2 * k - 1) * (k - 2) / (k ** 2 * (k - 1)), 3, 0),
    ((3 * k ** 2 + 1) / ((k + 2) * (k + 1) ** 2), 1, -1), (k ** 2 + 2 * k, 1, -1), (1 / (2 * k + 2), 1, -1),
    (5 / (3 * k ** 2 + 6 * k + 3), 2, 0),
]


@pytest.mark.parametrize("summand, lo, c", SUMMANDS)
def test_sum_engine_against_exact_sums(summand, lo, c):
    """sum_k's closed form equals the exact finite sum at every n from the first non-empty range to 30."""
    closed = sum_k(summand, lo, c)
    assert not closed.has(k)
    for nn in range(max(1, lo - c - 1), 31):  # from the empty sum on
        assert evaluate(closed, {}, nn) == exact_sum(summand, lo, nn + c), (summand, nn)


def test_sum_engine_agrees_with_sympy_summation():
    """Independent cross-check of the index-shift rule (i = k + t): sympy's own summation of 1/i^r from i = lo + t
    to n + c + t gives the same harmonic numbers as the engine."""
    i = sp.Symbol("i", integer=True)
    for r in (1, 2):
        for t, lo, c in [(0, 1, 0), (1, 1, -1), (0, 2, 0), (0, 1, -1), (1, 2, -1), (-1, 3, 0)]:
            theirs = sp.summation(1 / i ** r, (i, lo + t, n + c + t))
            assert theirs.has(sp.harmonic), theirs  # sympy did sum it
            ours = sum_k(1 / (k + t) ** r, lo, c).subs({H1: sp.harmonic(n), H2: sp.harmonic(n, 2)})
            diff = sp.expand_func((theirs - ours).rewrite(sp.polygamma))
            assert sp.simplify(diff) == 0, (r, t, lo, c, theirs, ours)


def test_sum_engine_refuses_what_it_cannot_do():
    with pytest.raises(ValueError):
        sum_k(1 / k ** 3, 1)          # H^(3) is not among the symbols
    with pytest.raises(ValueError):
        sum_k(1 / (k - 2), 1)         # pole at k = 2 inside the range


def test_project_coefficients_match_the_paper():
    """chg.coefficients(n, exact=True) (used by the library) is eq. (3) at every n = 3..40, exactly."""
    from chg import coefficients
    sym = eq3_coefficients()
    for nn in range(3, 41):
        c = coefficients(nn, exact=True)
        got = dict(zip(INVARIANTS, (c.sq_norm, c.dot_sum, c.sum_norm_sq, c.sum_sq_norms, c.dot_alpha,
                                    c.sum_dot_alpha)))
        for s in INVARIANTS:
            assert evaluate(sym[s], {}, nn) == got[s], (nn, s)
    assert harmonic_exact(3) == Fraction(11, 6) and harmonic_exact(2, 2) == Fraction(5, 4)
