"""The axiom checkers of chg.axioms: they pass on true Shapley values and fail, with a clear message, on wrong ones."""
from fractions import Fraction

import pytest

from chg.axioms import (check_dummy, check_efficiency, check_linearity, check_symmetry, dummy_players,
                        planted_chg_game, symmetric_pairs)
from chg.games import additive_game, chg_utility, exact_shapley, glove_game, mean_utility
from chg.shapley import chg_shapley, coefficients


def _closed_form_exact(x, alpha):
    """Eq. (3) with exact coefficients (Fractions) — the closed form, not the oracle."""
    nn, d = len(x), len(alpha)
    c = coefficients(nn, exact=True)
    dot = lambda u, v: sum((s * t for s, t in zip(u, v)), Fraction(0))  # noqa: E731
    s = [sum((xi[i] for xi in x), Fraction(0)) for i in range(d)]
    const = c.sum_norm_sq * dot(s, s) + c.sum_sq_norms * sum(dot(xi, xi) for xi in x) + c.sum_dot_alpha * dot(s, alpha)
    return [c.sq_norm * dot(xj, xj) + c.dot_sum * dot(s, xj) + c.dot_alpha * dot(xj, alpha) + const for xj in x]


def test_all_four_hold_for_the_chg_closed_form():
    x, alpha = planted_chg_game(5, 2, copies=(1, 3), seed=4)
    u = chg_utility(x, alpha)
    phi = _closed_form_exact(x, alpha)
    assert symmetric_pairs(u, 5) == [(1, 3)]
    check_efficiency(phi, u, 5)
    check_symmetry(phi, u, 5, pairs=[(1, 3)])
    check_dummy(phi, u, 5)  # no dummy players in this game (see test_zero_vector_is_not_a_dummy)
    check_linearity(exact_shapley, u, mean_utility([Fraction(i) for i in range(5)]), Fraction(2), Fraction(-3, 7), 5)


def test_efficiency_detects_a_wrong_total():
    x, alpha = planted_chg_game(4, seed=1)
    u = chg_utility(x, alpha)
    phi = exact_shapley(u, 4)
    phi[2] += Fraction(1, 10 ** 9)
    with pytest.raises(AssertionError, match="Efficiency fails"):
        check_efficiency(phi, u, 4)


def test_symmetry_detects_unequal_values_and_a_false_premise():
    x, alpha = planted_chg_game(4, copies=(0, 2), seed=2)
    u = chg_utility(x, alpha)
    phi = exact_shapley(u, 4)
    check_symmetry(phi, u, 4)
    bad = list(phi)
    bad[0] += 1
    with pytest.raises(AssertionError, match="players 0 and 2 are symmetric"):
        check_symmetry(bad, u, 4)
    with pytest.raises(AssertionError, match="premise"):
        check_symmetry(phi, u, 4, pairs=[(0, 1)])


def test_dummy_on_an_additive_game():
    w = [Fraction(3), Fraction(0), Fraction(-2), Fraction(0)]
    u = additive_game(w)
    assert dummy_players(u, 4) == [1, 3]
    check_dummy(exact_shapley(u, 4), u, 4)
    with pytest.raises(AssertionError, match="player 3 is a dummy"):
        check_dummy([Fraction(3), Fraction(0), Fraction(-2), Fraction(1, 5)], u, 4)
    with pytest.raises(AssertionError, match="premise"):
        check_dummy(exact_shapley(u, 4), u, 4, players=[0])


def test_zero_vector_is_not_a_dummy_in_the_chg_game():
    """x_j = 0 still changes |S|, hence the mean: not a dummy, and its Shapley value is not 0."""
    x, alpha = planted_chg_game(4, seed=3, copies=(0,))
    x[2] = [Fraction(0), Fraction(0)]
    u = chg_utility(x, alpha)
    assert dummy_players(u, 4) == []
    assert u((0, 2)) != u((0,))
    assert exact_shapley(u, 4)[2] != 0


def test_glove_game_symmetry():
    u = glove_game(left=[0, 1], right=[2])
    assert symmetric_pairs(u, 3) == [(0, 1)]
    phi = exact_shapley(u, 3)
    assert phi == [Fraction(1, 6), Fraction(1, 6), Fraction(2, 3)]
    check_symmetry(phi, u, 3)
    check_efficiency(phi, u, 3)


def test_linearity_detects_a_nonlinear_valuation():
    u1, u2 = additive_game([Fraction(1), Fraction(2), Fraction(3)]), glove_game([0], [1, 2])
    check_linearity(exact_shapley, u1, u2, Fraction(1, 2), Fraction(3), 3)
    squared = lambda u, n: [v * v for v in exact_shapley(u, n)]  # noqa: E731
    with pytest.raises(AssertionError, match="Linearity fails at player 0"):
        check_linearity(squared, u1, u2, Fraction(1, 2), Fraction(3), 3)


def test_float_mode_uses_the_given_tolerances():
    import numpy as np
    x, alpha = planted_chg_game(6, 3, copies=(2, 5), seed=5)
    xf, af = np.array(x, dtype=float), np.array(alpha, dtype=float)
    u = chg_utility(xf.tolist(), af.tolist())
    phi = chg_shapley(xf, af).tolist()
    check_efficiency(phi, u, 6, exact=False, rtol=1e-12, atol=1e-12)
    check_symmetry(phi, u, 6, pairs=[(2, 5)], exact=False, rtol=1e-12, atol=1e-12)
    phi[0] += 1e-6
    with pytest.raises(AssertionError, match="Efficiency fails"):
        check_efficiency(phi, u, 6, exact=False, rtol=1e-12, atol=1e-12)


def test_bad_arguments_raise_value_error():
    u = additive_game([Fraction(1)] * 3)
    with pytest.raises(ValueError, match="3 players"):
        check_efficiency([Fraction(1)] * 2, u, 3)
    with pytest.raises(ValueError, match="empty"):
        check_efficiency([], u, 0)
    with pytest.raises(ValueError, match="tolerances"):
        check_efficiency([1.0] * 3, u, 3, exact=False)
    with pytest.raises(ValueError, match="copies"):
        planted_chg_game(3, copies=(0, 5))
