r"""Theorem 1 by exhaustive enumeration in exact arithmetic, n = 1..12; the n = 1, 2 cases the printed formula misses.

Claim checked. For random rational vectors :math:`x_1..x_n` and target α (several dimensions d), the Shapley value of
Definition 1, computed by enumerating all :math:`2^n` subsets with ``Fraction`` arithmetic
(:func:`chg.games.exact_shapley`), equals
- eq. (3) as printed (``proofkit.eq3``, the paper's formula term by term) for every n ≥ 3, and
- the library's coefficients (``chg.coefficients(n, exact=True)``) for every n ≥ 1, including its n = 1, 2 forms.
Equality is ``==`` on Fractions: no tolerance.

Also: at n = 1 and n = 2 the printed formula is undefined (it divides by n − 1 and n − 2; at n = 2 both the
numerators and the denominators vanish, 0/0). The n = 1, 2 values used by the library are proved here as polynomial
identities in symbolic scalars; a quadratic form that vanishes identically for d = 1 has all coefficients zero, so the
identity holds in every dimension (each coordinate contributes the same scalar form).
"""
from fractions import Fraction

import pytest
import sympy as sp

from chg import coefficients
from chg.games import chg_utility, exact_shapley
from proofs.proofkit import (D, H1, H2, Q, a, b, eq3, eq3_coefficients, evaluate, inner_products, n, p, q,
                             random_rational_vectors)

N_MAX = 12


def library_value(nn: int, ip: dict):
    c = coefficients(nn, exact=True)
    return (c.sq_norm * ip[q] + c.dot_sum * ip[p] + c.sum_norm_sq * ip[Q] + c.sum_sq_norms * ip[D]
            + c.dot_alpha * ip[a] + c.sum_dot_alpha * ip[b])


@pytest.mark.parametrize("nn", range(1, N_MAX + 1))
def test_enumeration_equals_closed_form(nn):
    for d, seed in ((1, 0), (3, 1)):
        x = random_rational_vectors(nn, d, seed=1000 * nn + seed)
        alpha = random_rational_vectors(1, d, seed=7 + seed + nn)[0]
        truth = exact_shapley(chg_utility(x, alpha), nn)
        printed = eq3() if nn >= 3 else None
        for j in range(nn):
            ip = inner_products(x, alpha, j)
            assert library_value(nn, ip) == truth[j], (nn, d, j)
            if printed is not None and j < 3:  # sympy evaluation is slower; three players per n suffice
                assert evaluate(printed, ip, nn) == truth[j], (nn, d, j)


def test_enumeration_with_duplicate_and_zero_vectors():
    """Degenerate inputs (repeated vectors, a zero vector, α = 0) at n = 5, exactly."""
    x = random_rational_vectors(5, 2, seed=3)
    x[3] = list(x[1])
    x[4] = [Fraction(0), Fraction(0)]
    for alpha in ([Fraction(0), Fraction(0)], [Fraction(1, 2), Fraction(-3)]):
        truth = exact_shapley(chg_utility(x, alpha), 5)
        assert truth[1] == truth[3]
        assert [library_value(5, inner_products(x, alpha, j)) for j in range(5)] == truth


def test_printed_formula_is_undefined_at_n_1_and_2():
    """n = 1: every coefficient divides by n − 1 = 0. n = 2: the four with n − 2 in the denominator are 0/0 (their
    numerators vanish too), the α-part is defined and agrees with the library's n = 2 form."""
    c1 = eq3_coefficients(sp.Integer(1), sp.harmonic(1), sp.harmonic(1, 2))
    assert all(v is sp.nan for v in c1.values()), c1
    c2 = eq3_coefficients(sp.Integer(2), sp.harmonic(2), sp.harmonic(2, 2))
    assert all(c2[s] is sp.nan for s in (q, p, Q, D)), c2
    lib = coefficients(2, exact=True)
    assert (c2[a], c2[b]) == (lib.dot_alpha, lib.sum_dot_alpha)
    # the numerators over n − 2 at n = 2: t = 2H − 2H^(2) − 1 + 1/n and H − H^(2) − 1/n + 1/n² are both 0
    at2 = {n: 2, H1: sp.Rational(3, 2), H2: sp.Rational(5, 4)}
    assert (2 * H1 - 2 * H2 - 1 + 1 / n).subs(at2) == 0 and (H1 - H2 - 1 / n + 1 / n ** 2).subs(at2) == 0


def _symbolic_shapley(nn):
    """Definition 1 on symbolic scalars x_1..x_n, α (d = 1): exact polynomials."""
    xs = sp.symbols(f"x0:{nn}")
    al = sp.Symbol("alpha")

    def u(subset):
        if not subset:
            return sp.Integer(0)
        mean = sum(xs[i] for i in subset) / len(subset)
        return al ** 2 - (mean - al) ** 2
    return xs, al, exact_shapley(u, nn)


@pytest.mark.parametrize("nn", [1, 2, 3, 4, 5])
def test_library_forms_as_polynomial_identities(nn):
    """For n = 1..5 the library's φ_j equals Definition 1 identically in x_1..x_n, α (hence for all vectors)."""
    xs, al, phi = _symbolic_shapley(nn)
    c = coefficients(nn, exact=True)
    s = sum(xs)
    D_ = sum(v ** 2 for v in xs)
    r = lambda f: sp.Rational(f.numerator, f.denominator)  # noqa: E731
    for j in range(nn):
        closed = (r(c.sq_norm) * xs[j] ** 2 + r(c.dot_sum) * s * xs[j] + r(c.sum_norm_sq) * s ** 2
                  + r(c.sum_sq_norms) * D_ + r(c.dot_alpha) * xs[j] * al + r(c.sum_dot_alpha) * s * al)
        assert sp.expand(closed - phi[j]) == 0, (nn, j)


def test_n2_by_hand():
    """n = 2, worked from Definition 1: φ_1 = ½[U(1) − U(∅)] + ½[U(12) − U(2)]
    = −‖x_1‖² + ½Σ‖x_i‖² − ⅛‖s‖² + 2⟨x_1,α⟩ − ½⟨s,α⟩ (the library's n = 2 coefficients)."""
    c = coefficients(2, exact=True)
    assert tuple(c) == (-1, 0, Fraction(-1, 8), Fraction(1, 2), 2, Fraction(-1, 2))
    c1 = coefficients(1, exact=True)
    assert tuple(c1) == (-1, 0, 0, 0, 2, 0)  # φ = U({1}) = 2⟨x,α⟩ − ‖x‖²


def test_empty_set_convention_matters():
    """Eq. (3) needs U(∅) = 0 (remark R2 in README): with U(∅) = c every φ_j shifts by −c/n, so no other value works."""
    nn = 4
    x, alpha = random_rational_vectors(nn, 2, seed=8), random_rational_vectors(1, 2, seed=9)[0]
    u = chg_utility(x, alpha)
    c = Fraction(3, 2)
    shifted = exact_shapley(lambda s: u(s) if s else c, nn)
    assert shifted == [v - c / nn for v in exact_shapley(u, nn)]
    assert [library_value(nn, inner_products(x, alpha, j)) for j in range(nn)] == exact_shapley(u, nn)
