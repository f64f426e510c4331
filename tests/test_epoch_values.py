"""``chg.epoch_values``, eq. (3) for one epoch as a pure function of factors, against exhaustive enumeration of the
game in exact rational arithmetic (issue 20 item 2).

The factors are dyadic rationals (k / 8), exact in float64, so the only rounding is the function's own; the oracle
builds each player's dense vector :math:`x_i = w_i\\, e_i \\otimes [h_i; 1]` in ``Fraction``\\ s and sums
:math:`\\frac{|S|!(n-|S|-1)!}{n!}(U(S \\cup i) - U(S))` over every subset, with
:math:`U(S) = \\|\\alpha\\|^2 - \\|\\bar x_S - \\alpha\\|^2`, :math:`U(\\varnothing) = 0` (the paper's eq. (3)), or
the mean game :math:`V(S) = \\bar l_S` for Hardness Shapley.
"""
import itertools
from fractions import Fraction
from math import factorial

import pytest
import torch

import chg
from chg.factored import Options, epoch_values
from chg.lastlayer import Factors


def _factors(n, C, D, seed, bias=True):
    g = torch.Generator().manual_seed(seed)
    q = lambda *s: torch.randint(-8, 9, s, generator=g).double() / 8  # noqa: E731  (dyadic: exact in float64)
    loss = torch.randint(1, 17, (n,), generator=g).double() / 8
    return Factors(loss, q(n, C), q(n, D), bias)


def _players(f: Factors, utility: str, gradient: str):
    """Each player's dense vector in Fractions (the flattened e ⊗ [h; 1], weighted by the loss for CHG)."""
    out = []
    for i in range(f.loss.shape[0]):
        e = [Fraction(v) for v in f.err[i].tolist()]
        h = [Fraction(v) for v in f.feat[i].tolist()]
        cols = [Fraction(1)] if gradient == "bias" else h + ([Fraction(1)] if f.bias else [])
        w = Fraction(f.loss[i].item()) if utility == "chg" else Fraction(1)
        out.append([w * a * b for a in e for b in cols])
    return out


def _shapley(utility_of, n):
    """Exact Shapley values of a game on players 0..n-1 by enumerating every coalition."""
    phi = [Fraction(0)] * n
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for k in range(n):
            coef = Fraction(factorial(k) * factorial(n - k - 1), factorial(n))
            for S in itertools.combinations(others, k):
                phi[i] += coef * (utility_of(S + (i,)) - utility_of(S))
    return phi


def _chg_oracle(x, alpha=None):
    n, P = len(x), len(x[0])
    a = alpha if alpha is not None else [sum(r[p] for r in x) / n for p in range(P)]

    def U(S):
        if not S:
            return Fraction(0)
        mean = [sum(x[i][p] for i in S) / len(S) for p in range(P)]
        return sum(v * v for v in a) - sum((mean[p] - a[p]) ** 2 for p in range(P))
    return _shapley(U, n)


def _close(got, want, rtol=1e-12):
    want = torch.tensor([float(v) for v in want], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * max(1.0, float(want.abs().max())))


@pytest.mark.parametrize("utility,gradient,bias", [("chg", "full", True), ("chg", "full", False),
                                                   ("chg", "bias", True), ("gradient", "full", True)])
def test_one_game_equals_enumeration(utility, gradient, bias):
    f = _factors(7, 3, 2, seed=1, bias=bias)
    got = epoch_values(f, Options(utility=utility, gradient=gradient))
    _close(got, _chg_oracle(_players(f, utility, gradient)))


def test_groups_are_separate_games_with_their_own_alpha():
    f = _factors(9, 3, 2, seed=2)
    groups = torch.tensor([0, 1, 0, 2, 1, 0, 2, 1, 0])
    got = epoch_values(f, Options(), groups=groups)
    for g in range(3):
        rows = (groups == g).nonzero().squeeze(1)
        _close(got[rows], _chg_oracle(_players(f[rows], "chg", "full")))


def test_a_given_alpha_is_the_target():
    f = _factors(6, 2, 2, seed=3)
    a = torch.tensor([[0.25, -0.5, 0.125], [-0.375, 0.75, 0.5]], dtype=torch.float64)  # (C, D+1)
    got = epoch_values(f, Options(alpha="valid"), alpha={0: a})
    _close(got, _chg_oracle(_players(f, "chg", "full"), [Fraction(v) for v in a.reshape(-1).tolist()]))


def test_hardness_is_the_mean_loss_game():
    f = _factors(6, 2, 2, seed=4)
    loss = [Fraction(v) for v in f.loss.tolist()]
    got = epoch_values(f, Options(utility="hardness"))
    _close(got, _shapley(lambda S: sum(loss[i] for i in S) / len(S) if S else Fraction(0), 6))


def test_reduce_sees_every_group_once_and_an_identity_reduce_changes_nothing():
    f = _factors(8, 3, 2, seed=5)
    groups = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    seen = []

    def reduce(stats):
        seen.append(stats.n)
        return stats
    got = epoch_values(f, Options(), groups=groups, reduce=reduce, group_ids=[0, 1, 2])
    assert seen == [4, 4, 0]  # group 2 has no rows here but is played (another process may hold its rows)
    assert torch.equal(got, epoch_values(f, Options(), groups=groups))


def test_the_engine_behind_end_epoch():
    """EpochValuer.end_epoch is epoch_values on the epoch's rows (the valuer sums them in the order added, so equal
    up to the order of float64 summation)."""
    f = _factors(10, 3, 4, seed=6)
    labels = torch.arange(10) % 3
    for per_class in (False, True):
        v = chg.EpochValuer(10, per_class=per_class)
        order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
        for part in order.split(4):
            v.add(part, f[part], labels[part])
        want = epoch_values(f, Options(per_class=per_class), groups=labels if per_class else None)
        torch.testing.assert_close(v.end_epoch(), want, rtol=1e-13, atol=1e-14)


def test_bad_factors_are_refused():
    f = _factors(4, 2, 2, seed=7)
    with pytest.raises(ValueError, match="alpha must be None"):
        epoch_values(f, Options(utility="hardness"), alpha={0: torch.zeros(2, 3, dtype=torch.float64)})
    f.err[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        epoch_values(f, Options())
