r"""The four axioms of §2 (Dummy, Symmetry, Linearity, Efficiency) for the CHG game, with the shared checkers of
:mod:`chg.axioms`.

Claims checked.
1. By enumeration in exact arithmetic (n = 1..7, several seeds): the Shapley values of the CHG game — from
   Definition 1 *and* from the closed form (library coefficients, all n including 1 and 2) — satisfy Efficiency,
   Symmetry (for players planted with equal vectors, which :func:`chg.axioms.symmetric_pairs` must find), Linearity
   (U = U_1 + U_2 of Appendix B, arbitrary coefficients; and the closed form is affine in α as Linearity demands),
   and Dummy.
2. The CHG game has no dummy players in general — in particular x_j = 0 is *not* a dummy, because adding it changes
   |S| and so the mean. Dummy is therefore checked where it applies: on the toy games of :mod:`chg.games` with planted
   dummies, and the CHG game is shown to violate nothing (no dummy found, nothing to contradict).
3. Efficiency of the closed form for every n ≥ 3, symbolically: Σ_j φ_j = U(N) = 2⟨s,α⟩/n − ‖s‖²/n², i.e.
   c_q + n·c_D = 0, c_p + n·c_Q = −1/n², c_a + n·c_b = 2/n with H1, H2 free.
4. Symmetry of the closed form for every n: φ_j depends on j only through ‖x_j‖², ⟨s, x_j⟩, ⟨x_j, α⟩, so players
   with equal vectors get equal values (by inspection of eq. 3; checked at n ≤ 7 above).
"""
from fractions import Fraction

import pytest
import sympy as sp

from chg import coefficients
from chg.axioms import (check_dummy, check_efficiency, check_linearity, check_symmetry, dummy_players,
                        planted_chg_game, symmetric_pairs)
from chg.games import additive_game, chg_utility, exact_shapley, glove_game
from proofs.proofkit import D, Q, a, b, dot, eq3_coefficients, n, p, q


def closed_form(x, alpha):
    """Library coefficients (exact) applied to the six inner products — the closed form, any n ≥ 1."""
    nn, d = len(x), len(alpha)
    c = coefficients(nn, exact=True)
    s = [sum((v[i] for v in x), Fraction(0)) for i in range(d)]
    const = c.sum_norm_sq * dot(s, s) + c.sum_sq_norms * sum(dot(v, v) for v in x) + c.sum_dot_alpha * dot(s, alpha)
    return [c.sq_norm * dot(v, v) + c.dot_sum * dot(s, v) + c.dot_alpha * dot(v, alpha) + const for v in x]


def _u1_u2(x, alpha):
    d = len(alpha)

    def mean(sub):
        return [sum((x[i][c] for i in sub), Fraction(0)) / len(sub) for c in range(d)]
    return (lambda sub: -dot(mean(sub), mean(sub)) if sub else Fraction(0),
            lambda sub: 2 * dot(mean(sub), alpha) if sub else Fraction(0))


@pytest.mark.parametrize("nn", range(1, 8))
def test_axioms_chg_game_by_enumeration(nn):
    copies = (0, nn - 1) if nn >= 2 else (0,)
    for seed in range(2):
        x, alpha = planted_chg_game(nn, 2, copies=copies, seed=10 * nn + seed)
        u = chg_utility(x, alpha)
        oracle, closed = exact_shapley(u, nn), closed_form(x, alpha)
        assert closed == oracle
        pairs = symmetric_pairs(u, nn)
        if nn >= 2:
            assert (0, nn - 1) in pairs  # the planted pair is found: the Symmetry check below is not vacuous
        for values in (oracle, closed):
            check_efficiency(values, u, nn)
            check_symmetry(values, u, nn)
            check_dummy(values, u, nn)
        u1, u2 = _u1_u2(x, alpha)
        check_linearity(exact_shapley, u1, u2, Fraction(1), Fraction(1), nn)
        check_linearity(exact_shapley, u1, u2, Fraction(-3, 2), Fraction(5, 7), nn)


def test_closed_form_is_affine_in_alpha():
    """U_α is affine in α (U_{cα+(1−c)β} = c·U_α + (1−c)·U_β), so by Linearity φ must be too."""
    x, al = planted_chg_game(6, 3, seed=1)
    _, be = planted_chg_game(6, 3, seed=2)
    c = Fraction(2, 7)
    mix = [c * s + (1 - c) * t for s, t in zip(al, be)]
    lhs = closed_form(x, mix)
    rhs = [c * s + (1 - c) * t for s, t in zip(closed_form(x, al), closed_form(x, be))]
    assert lhs == rhs
    u_mix, u_a, u_b = chg_utility(x, mix), chg_utility(x, al), chg_utility(x, be)
    assert all(u_mix(s) == c * u_a(s) + (1 - c) * u_b(s) for s in [(), (0,), (1, 4), (0, 2, 3, 5)])


def test_zero_vector_is_not_a_dummy():
    x, alpha = planted_chg_game(5, 2, copies=(0,), seed=7)
    x[3] = [Fraction(0), Fraction(0)]
    u = chg_utility(x, alpha)
    assert dummy_players(u, 5) == []
    assert u((1, 3)) != u((1,))                       # adding x_3 = 0 halves the mean of {1}
    assert exact_shapley(u, 5)[3] != 0
    check_dummy(exact_shapley(u, 5), u, 5)            # nothing to contradict


def test_dummy_axiom_on_toy_games():
    w = [Fraction(2), Fraction(0), Fraction(-1, 3), Fraction(0), Fraction(5)]
    u = additive_game(w)
    assert dummy_players(u, 5) == [1, 3]
    phi = exact_shapley(u, 5)
    assert phi == w
    check_dummy(phi, u, 5)
    g = glove_game(left=[0, 1], right=[2, 3])
    gu = lambda s: g(tuple(i for i in s if i != 4))  # noqa: E731 — player 4 holds no glove: a dummy
    assert dummy_players(gu, 5) == [4]
    check_dummy(exact_shapley(gu, 5), gu, 5)
    check_efficiency(exact_shapley(gu, 5), gu, 5)


def test_efficiency_closed_form_all_n():
    c = eq3_coefficients()
    assert sp.cancel(c[q] + n * c[D]) == 0
    assert sp.cancel(c[p] + n * c[Q] + 1 / n ** 2) == 0
    assert sp.cancel(c[a] + n * c[b] - 2 / n) == 0
    # the same statement as one polynomial identity: Σ_j φ_j − U(N) = 0
    total = c[q] * D + c[p] * Q + n * c[Q] * Q + n * c[D] * D + c[a] * b + n * c[b] * b
    assert sp.cancel(sp.expand(total - (2 * b / n - Q / n ** 2))) == 0


def test_efficiency_small_n_forms():
    """n = 1, 2 (where the printed formula is undefined): the library forms are efficient, exactly."""
    for nn in (1, 2):
        for seed in range(5):
            x, alpha = planted_chg_game(nn, 3, copies=(0,), seed=seed)
            check_efficiency(closed_form(x, alpha), chg_utility(x, alpha), nn)
