r"""The moments of a uniform random k-subset used by every closed-form proof (``proofkit.subset_moments``).

Claim. Let S be a uniformly random k-subset of the m = n − 1 players other than j, and T = Σ_{i∈S} x_i. Then
  P(i ∈ S) = k/m,   P(a ∈ S and b ∈ S) = k(k−1)/(m(m−1))  (a ≠ b, m ≥ 2),
  E⟨T, α⟩ = (k/m)⟨s', α⟩,   E⟨T, x_j⟩ = (k/m)⟨s', x_j⟩,
  E‖T‖² = (k/m) Σ_{i≠j}‖x_i‖² + k(k−1)/(m(m−1)) Σ_{a≠b; a,b≠j} ⟨x_a, x_b⟩,     s' = Σ_{i≠j} x_i,
and the N∖j quantities are, in the six inner products of eq. (3) (``proofkit.PRIMED_TO_FULL``),
  ⟨s', x_j⟩ = p − q,  Σ_{i≠j}‖x_i‖² = D − q,  ⟨s',α⟩ = b − a,
  Σ_{a≠b; a,b≠j}⟨x_a,x_b⟩ = ‖s'‖² − Σ_{i≠j}‖x_i‖² = Q − 2p + 2q − D.

Proof. Counting: C(m−1, k−1) of the C(m, k) subsets contain a given i, C(m−2, k−2) contain a given pair; the ratios
simplify (sympy ``combsimp``, for symbolic m, k) to the probabilities above. By bilinearity
⟨T, v⟩ = Σ_i 1[i∈S]⟨x_i, v⟩ and ‖T‖² = Σ_a 1[a∈S]‖x_a‖² + Σ_{a≠b} 1[a∈S]1[b∈S]⟨x_a, x_b⟩; linearity of expectation
gives the moments. The rewriting in the six inner products is bilinearity again (‖s − x_j‖² = Q − 2p + q, …).
Both are also checked exactly by enumeration below (all subsets, m = 1..8).
"""
from fractions import Fraction
from itertools import combinations

import sympy as sp

from proofs.proofkit import (D, D1, PRIMED_TO_FULL, Q, R1, a, b, b1, dot, inner_products, p, p1, q,
                             random_rational_vectors)


def test_inclusion_probabilities_symbolic():
    m, kk = sp.symbols("m kk", positive=True, integer=True)
    assert sp.combsimp(sp.binomial(m - 1, kk - 1) / sp.binomial(m, kk)) - kk / m == 0
    ratio2 = sp.combsimp(sp.binomial(m - 2, kk - 2) / sp.binomial(m, kk))
    assert sp.cancel(ratio2 - kk * (kk - 1) / (m * (m - 1))) == 0


def _primed(x, alpha, j):
    others = [x[i] for i in range(len(x)) if i != j]
    d = len(alpha)
    s1 = [sum((v[c] for v in others), Fraction(0)) for c in range(d)]
    r1 = sum((dot(u, v) for ia, u in enumerate(others) for ib, v in enumerate(others) if ia != ib), Fraction(0))
    return {p1: dot(s1, x[j]), D1: sum((dot(v, v) for v in others), Fraction(0)), R1: r1, b1: dot(s1, alpha)}


def test_moments_by_enumeration():
    """Average over all k-subsets of N∖j equals the formulas, exactly, for m = 1..8 and every k."""
    for nn in range(2, 10):
        x = random_rational_vectors(nn, 2, seed=nn)
        alpha = random_rational_vectors(1, 2, seed=50 + nn)[0]
        j = nn // 2
        others = [i for i in range(nn) if i != j]
        pr = _primed(x, alpha, j)
        m = nn - 1
        for kk in range(0, m + 1):
            subsets = list(combinations(others, kk))
            sums = [[sum((x[i][c] for i in sub), Fraction(0)) for c in range(2)] for sub in subsets]
            mean = lambda f: sum((f(t) for t in sums), Fraction(0)) / len(sums)  # noqa: E731
            assert mean(lambda t: dot(t, alpha)) == Fraction(kk, m) * pr[b1]
            assert mean(lambda t: dot(t, x[j])) == Fraction(kk, m) * pr[p1]
            pair = Fraction(kk * (kk - 1), m * (m - 1)) if m >= 2 else Fraction(0)
            assert mean(lambda t: dot(t, t)) == Fraction(kk, m) * pr[D1] + pair * pr[R1]


def test_primed_to_full_exact():
    for nn in range(1, 8):
        x = random_rational_vectors(nn, 3, seed=20 + nn)
        alpha = random_rational_vectors(1, 3, seed=40 + nn)[0]
        for j in range(nn):
            full, pr = inner_products(x, alpha, j), _primed(x, alpha, j)
            for sym, expr in PRIMED_TO_FULL.items():
                assert expr.subs({s: sp.Rational(v.numerator, v.denominator) for s, v in full.items()}) == pr[sym]


def test_primed_to_full_symbolic_vectors():
    """Polynomial identities in symbolic vector entries (n = 2..5 players, d = 2)."""
    for nn in range(2, 6):
        x = [sp.symbols(f"x{i}_0:2") for i in range(nn)]
        al = sp.symbols("al0:2")
        dt = lambda u, v: sum(ui * vi for ui, vi in zip(u, v))  # noqa: E731
        j = 0
        s = [sum(v[c] for v in x) for c in range(2)]
        s1 = [sum(x[i][c] for i in range(1, nn)) for c in range(2)]
        full = {q: dt(x[j], x[j]), p: dt(s, x[j]), Q: dt(s, s), D: sum(dt(v, v) for v in x), a: dt(x[j], al),
                b: dt(s, al)}
        pr = {p1: dt(s1, x[j]), D1: sum(dt(x[i], x[i]) for i in range(1, nn)),
              R1: sum(dt(x[u], x[v]) for u in range(1, nn) for v in range(1, nn) if u != v), b1: dt(s1, al)}
        for sym, expr in PRIMED_TO_FULL.items():
            assert sp.expand(expr.subs(full) - pr[sym]) == 0, (nn, sym)
