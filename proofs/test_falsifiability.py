r"""The checks can fail: a proof or formula changed to be wrong makes them fail.

Each test below alters one thing — a coefficient of eq. (3), a moment formula, a rewriting step of Appendix B,
the library's coefficients — and asserts that the corresponding symbolic check *and* the enumeration check reject it.
Without this file a passing proof suite would say little.
"""
from fractions import Fraction

import pytest
import sympy as sp

from proofs import test_appendix_b as appb
from proofs import test_theorem1_symbolic as thm
from chg import coefficients
from chg.axioms import check_efficiency
from chg.games import chg_utility, exact_shapley
from proofs.proofkit import (D, PRIMED_TO_FULL, Q, a, b, coefficient_residuals, eq3, eq3_coefficients, evaluate,
                             inner_products, k, n, p, q, random_rational_vectors, subset_moments, sum_k)


def _altered(symbol, delta):
    c = eq3_coefficients()
    c[symbol] = c[symbol] + delta
    return c


@pytest.mark.parametrize("symbol, delta", [(Q, 1 / n ** 3), (q, sp.Rational(1, 10 ** 6)), (D, -1 / (n * (n - 1))),
                                           (p, 1 / ((n - 1) * (n - 2))), (b, 1 / n ** 2)])
def test_altered_coefficient_fails_symbolic_and_enumeration(symbol, delta):
    wrong = eq3(coefficients=_altered(symbol, delta))
    res = coefficient_residuals(thm.chg_shapley_symbolic(), wrong)
    assert res[symbol] != 0 and all(r == 0 for s, r in res.items() if s != symbol)
    nn = 4
    x, alpha = random_rational_vectors(nn, 2, seed=9), random_rational_vectors(1, 2, seed=19)[0]
    truth = exact_shapley(chg_utility(x, alpha), nn)
    assert any(evaluate(wrong, inner_products(x, alpha, j), nn) != truth[j] for j in range(nn))


def test_altered_coefficient_fails_efficiency():
    """Changing c_Q breaks Σ_j φ_j = U(N) (c_q + n c_D, c_p + n c_Q, c_a + n c_b are what Efficiency pins down)."""
    c = _altered(Q, 1 / n ** 3)
    assert sp.cancel(c[p] + n * c[Q] + 1 / n ** 2) != 0
    nn = 5
    x, alpha = random_rational_vectors(nn, 2, seed=3), random_rational_vectors(1, 2, seed=4)[0]
    vals = [evaluate(eq3(coefficients=c), inner_products(x, alpha, j), nn) for j in range(nn)]
    with pytest.raises(AssertionError, match="Efficiency fails"):
        check_efficiency(vals, chg_utility(x, alpha), nn)


def test_altered_library_coefficients_fail_enumeration():
    """A perturbed copy of chg.coefficients (the n = 2 special case and an n ≥ 3 case) disagrees with enumeration."""
    for nn, field in ((2, "sum_norm_sq"), (6, "dot_sum")):
        c = coefficients(nn, exact=True)._asdict()
        c[field] += Fraction(1, 1000)
        x, alpha = random_rational_vectors(nn, 2, seed=nn), random_rational_vectors(1, 2, seed=nn + 1)[0]
        truth = exact_shapley(chg_utility(x, alpha), nn)
        ip = [inner_products(x, alpha, j) for j in range(nn)]
        vals = [c["sq_norm"] * v[q] + c["dot_sum"] * v[p] + c["sum_norm_sq"] * v[Q] + c["sum_sq_norms"] * v[D]
                + c["dot_alpha"] * v[a] + c["sum_dot_alpha"] * v[b] for v in ip]
        assert vals != truth


def test_wrong_moment_fails_the_derivation():
    """With P(a, b ∈ S) = k²/m² (sampling with replacement) instead of k(k−1)/(m(m−1)), Theorem 1 does not follow."""
    from proofs.proofkit import D1, R1, b1, p1
    m = n - 1
    mom = {"T_alpha": k / m * b1, "T_xj": k / m * p1, "T_sq": k / m * D1 + k ** 2 / m ** 2 * R1}
    assert mom != subset_moments()
    marginal = (2 * (a + mom["T_alpha"]) / (k + 1) - (q + 2 * mom["T_xj"] + mom["T_sq"]) / (k + 1) ** 2
                - 2 * mom["T_alpha"] / k + mom["T_sq"] / k ** 2)
    phi = sp.expand(((2 * a - q + sum_k(marginal, 1, -1)) / n).subs(PRIMED_TO_FULL))
    res = coefficient_residuals(phi, eq3())
    assert any(r != 0 for r in res.values())


def test_altered_appendix_display_fails():
    """B7 with the D-coefficient's '+ 1 − 1/n' dropped no longer follows from B6; the exact check sees it too."""
    def B7_wrong(Sig, nn):
        return appb.B7(Sig, nn) - (1 - sp.S.One / nn) / (nn * (nn - 1)) * D
    with pytest.raises(AssertionError, match="not identical"):
        appb.assert_identical(B7_wrong(appb.SigSym, n), appb.B6(appb.SigSym, n), appb.FULL, "B7' vs B6")
    nn = 4
    x, alpha = random_rational_vectors(nn, 2, seed=1), random_rational_vectors(1, 2, seed=2)[0]
    u1, _ = appb._games(x, alpha)[1:]
    truth = exact_shapley(u1, nn)[0]
    vals = {s: sp.Rational(v.numerator, v.denominator) for s, v in inner_products(x, alpha, 0).items()}
    assert B7_wrong(appb.sig_exact(nn), sp.Integer(nn)).subs(vals) != sp.Rational(truth.numerator, truth.denominator)
