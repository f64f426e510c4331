r"""Table 2's variants: Hardness Shapley and Gradient Shapley, closed forms proved like Theorem 1.

**Hardness Shapley.** U(S) = (1/|S|) Σ_{i∈S} l_i (the Hardness score, mean loss over S; U(∅) = 0). Claim (the
library's ``chg.shapley.mean_game_coefficients``): for n ≥ 2
    φ_j = (H_n − 1/n)/(n − 1) · l_j − (H_n − 1)/(n(n − 1)) · Σ_{i∈N} l_i,      and φ_1 = l_1 for n = 1.
Proof: as Theorem 1 — k = 0 gives l_j; for k ≥ 1 the marginal (l_j + Σ_S l_i)/(k+1) − Σ_S l_i / k is linear in
Σ_S l_i, whose mean over k-subsets of N∖j is (k/m)Σ_{i≠j} l_i (test_subset_moments.py); sum over k with
``proofkit.sum_k``; compare for symbolic n. Needs only m = n − 1 ≥ 1.

**Gradient Shapley.** The Gradient score ‖(1/N)Σ∇f_i‖² − ‖(1/N)Σ∇f_i − (1/|S|)Σ_S ∇f_i‖² is the CHG utility of
Theorem 1 with x_i = ∇f(i;θ) and α = s/n (the mean gradient), so eq. (3) applies verbatim. With α = s/n,
⟨x_j, α⟩ = p/n and ⟨s, α⟩ = Q/n, so eq. (3) collapses to four terms (proved below for all n ≥ 3). CHG Shapley
itself (Algorithm 1, line 4) is the same specialisation with x_i = l_i∇f(i;θ), α = mean of those x_i.
"""
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp

from chg import chg_shapley, hardness_shapley
from chg.axioms import check_efficiency
from chg.games import chg_utility, exact_shapley, hardness_utility
from chg.shapley import mean_game_coefficients
from proofs.proofkit import (D, H1, Q, a, b, eq3_coefficients, evaluate, inner_products, k, n, p, q,
                             random_rational_vectors, sum_k)

lj, Lsum, L1 = sp.symbols("l_j L L1")  # l_j, Σ_{i∈N} l_i, Σ_{i≠j} l_i


def hardness_shapley_symbolic():
    m = n - 1
    ET = k / m * L1  # mean of Σ_S l_i over k-subsets of N∖j
    marginal = (lj + ET) / (k + 1) - ET / k
    phi = (lj + sum_k(marginal, 1, -1)) / n
    return sp.expand(phi.subs(L1, Lsum - lj))


HARDNESS_CLAIM = (H1 - 1 / n) / (n - 1) * lj - (H1 - 1) / (n * (n - 1)) * Lsum


def test_hardness_closed_form_all_n():
    diff = sp.expand(hardness_shapley_symbolic() - HARDNESS_CLAIM)
    assert sp.cancel(diff.coeff(lj)) == 0 and sp.cancel(diff.coeff(Lsum)) == 0
    assert sp.cancel(diff - diff.coeff(lj) * lj - diff.coeff(Lsum) * Lsum) == 0


def test_hardness_library_coefficients_are_the_claim():
    for nn in range(2, 41):
        own, total = mean_game_coefficients(nn, exact=True)
        assert evaluate(HARDNESS_CLAIM.coeff(lj), {}, nn) == own
        assert evaluate(HARDNESS_CLAIM.coeff(Lsum), {}, nn) == total
    assert mean_game_coefficients(1, exact=True) == (1, 0)


@pytest.mark.parametrize("nn", range(1, 11))
def test_hardness_by_enumeration(nn):
    loss = [Fraction(v) for v in random_rational_vectors(1, nn, seed=nn, lo=0, hi=9)[0]]
    truth = exact_shapley(hardness_utility(loss), nn)
    own, total = mean_game_coefficients(nn, exact=True)
    assert [own * l_ + total * sum(loss) for l_ in loss] == truth
    np.testing.assert_allclose(hardness_shapley(np.array(loss, dtype=float)), [float(t) for t in truth],
                               rtol=1e-13, atol=1e-14)
    check_efficiency(truth, hardness_utility(loss), nn)


def test_hardness_efficiency_all_n():
    """Σ_j φ_j = own·L + n·total·L = L/n = U(N), for symbolic n."""
    own, total = HARDNESS_CLAIM.coeff(lj), HARDNESS_CLAIM.coeff(Lsum)
    assert sp.cancel(own + n * total - 1 / n) == 0


# --- Gradient Shapley: α = mean of the x_i ---------------------------------------------------------------------------
def gradient_shapley_coefficients():
    """eq. (3) with α = s/n: coefficients of q, p, Q, D."""
    c = eq3_coefficients()
    return {q: c[q], p: c[p] + c[a] / n, Q: c[Q] + c[b] / n, D: c[D]}


def test_gradient_specialisation_all_n():
    """eq. (3)|_{a = p/n, b = Q/n} equals the four-term form, identically in n, H1, H2."""
    c = eq3_coefficients()
    full = sum(c[s] * s for s in (q, p, Q, D, a, b)).subs({a: p / n, b: Q / n})
    four = sum(v * s for s, v in gradient_shapley_coefficients().items())
    assert sp.cancel(sp.expand(full - four)) == 0


def test_gradient_efficiency_all_n():
    """Σ_j φ_j = U(N) = ‖s/n‖² (= 2⟨s/n, s/n⟩ − ‖s/n‖²) for symbolic n ≥ 3."""
    g = gradient_shapley_coefficients()
    total = g[q] * D + g[p] * Q + n * g[Q] * Q + n * g[D] * D
    assert sp.cancel(sp.expand(total - Q / n ** 2)) == 0


@pytest.mark.parametrize("nn", range(1, 10))
def test_gradient_shapley_by_enumeration(nn):
    """chg_shapley(x) with the default α = mean(x) equals enumeration of the Gradient score; for n ≥ 3 the
    four-term form equals it exactly."""
    x = random_rational_vectors(nn, 3, seed=60 + nn)
    mean = [sum((v[c] for v in x), Fraction(0)) / nn for c in range(3)]
    truth = exact_shapley(chg_utility(x, mean), nn)
    got = chg_shapley(np.array(x, dtype=float))
    np.testing.assert_allclose(got, [float(t) for t in truth], rtol=1e-11, atol=1e-12)
    if nn >= 3:
        four = sum(v * s for s, v in gradient_shapley_coefficients().items())
        for j in range(nn):
            assert evaluate(four, inner_products(x, mean, j), nn) == truth[j]
