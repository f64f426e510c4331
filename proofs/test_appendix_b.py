r"""Appendix B (the proof of Theorem 1), every displayed equation, step by step.

Each display is transcribed below as a function ``B*(Sig, nn)`` faithfully from the paper, with the paper's
notation read as: "1/S" = 1/|S|; ``x_j^2`` = ‖x_j‖²; ``x_j α`` = ⟨x_j, α⟩; ``(Σ x_i)^2`` = ‖Σ x_i‖²; ``x_a x_b`` =
⟨x_a, x_b⟩; ``N/j`` = N ∖ {j}; U(∅) = U_1(∅) = U_2(∅) = 0; n ≥ 3 (the displays divide by n − 2).
``Sig(f, lo, c)`` is the paper's finite sum :math:`\sum_{k=lo}^{n+c} f(k)`. The displays, in the paper's order:

  B1  U = U_1 + U_2 (in the text)          B5  "Then we have": everything over N (8 lines)
  B2  φ_j(U_2), first form                 B6  "Then we have": collected by inner product
  B2b φ_j(U_2), "Then we have" form        B7  "Then we have": finite sums as harmonic sums (with Σ_{k=2})
  B3  U_1(S∪j) − U_1(S)                    B8  "Then we have": harmonic sums from k = 1
  B4  φ_j(U_1) over N∖j                    B9  "so": φ_j(U) = φ_j(U_1) + φ_j(U_2), eq. (3)

Each display is checked twice:

* **symbolically, for all n** — ``Sig`` = ``proofkit.sum_k`` (closed form in n, H1, H2); a display must be
  identical, as a polynomial in the inner products, to the one before it (or to the Shapley value derived from
  Definition 1 with the moments of test_subset_moments.py);
* **exactly, by enumeration** — ``Sig`` = the exact finite sum at n = 3..7, the inner products computed from random
  rational vectors (the N∖j ones directly, not through the rewriting rules), compared with exhaustive Shapley values
  of U, U_1, U_2.

Erratum found (see proofs/README.md): the two displays for φ_j(U_2) omit the factor 2 of U_2 = 2⟨x̄_S, α⟩ — they are
φ_j(U_2)/2. The corrected statement (2 × display) is what is checked as correct, and the printed one is shown to be
wrong with a concrete counterexample. All other displays are exact.
"""
from fractions import Fraction

import pytest
import sympy as sp

from chg.axioms import check_linearity
from chg.games import chg_utility, exact_shapley
from proofs.proofkit import (D, D1, H1, H2, PRIMED_TO_FULL, Q, R1, a, assert_identical, b, b1, dot, exact_sum,
                             inner_products, k, n, p, p1, q, random_rational_vectors, subset_moments, sum_k)

PRIMED = (q, p1, D1, R1, a, b1)
FULL = (q, p, Q, D, a, b)


# --- the displays, transcribed -------------------------------------------------------------------------------------
def B2(Sig, nn):
    """φ_j(U_2) = (1/n Σ_{k=1}^n 1/k) x_j α − (1/n Σ_{k=2}^n 1/k)(1/(n−1) Σ_{i∈N/j} x_i α)   [as printed]."""
    return (Sig(1 / k, 1) / nn) * a - (Sig(1 / k, 2) / nn) * (b1 / (nn - 1))


def B2b(Sig, nn):
    """Then we have: φ_j(U_2) = (1/(n−1) Σ_{k=1}^{n−1} 1/k) x_j α − (1/(n−1) Σ_{k=2}^n 1/k)(1/n Σ_{i∈N} x_i α)
    [as printed]."""
    return (Sig(1 / k, 1, -1) / (nn - 1)) * a - (Sig(1 / k, 2) / (nn - 1)) * (b / nn)


def B3(kk, t1, t2):
    """U_1(S∪j) − U_1(S) = −x_j²/(S+1)² − 2 x_j(Σ_S x_i)/(S+1)² + (2S+1)/(S²(S+1)²) (Σ_S x_i)², |S| = kk ≥ 1,
    with t1 = ⟨x_j, Σ_S x_i⟩ and t2 = ‖Σ_S x_i‖²."""
    return -q / (kk + 1) ** 2 - 2 * t1 / (kk + 1) ** 2 + (2 * kk + 1) / (kk ** 2 * (kk + 1) ** 2) * t2


def _A(Sig, nn):
    """The three recurring coefficients of B4–B6 (exactly as printed there)."""
    A2 = 2 / (nn * (nn - 1)) * Sig((k - 1) / k ** 2, 2)
    A3 = 1 / (nn * (nn - 1)) * Sig((2 * k - 1) / (k ** 2 * (k - 1)), 2)
    A4 = 1 / (nn * (nn - 1) * (nn - 2)) * Sig((2 * k - 1) * (k - 2) / (k ** 2 * (k - 1)), 3)
    return A2, A3, A4


def B4(Sig, nn):
    """φ_j(U_1) over N/j: −(1/n Σ1/k²) x_j² − A2 (Σ_{N/j} x_i) x_j + A3 Σ_{N/j} x_i² + A4 Σ_{a≠b} x_a x_b."""
    A2, A3, A4 = _A(Sig, nn)
    return -(Sig(1 / k ** 2, 1) / nn) * q - A2 * p1 + A3 * D1 + A4 * R1


def B5(Sig, nn):
    """The eight-line display: everything over N (x_j² terms split off)."""
    A2, A3, A4 = _A(Sig, nn)
    return (-(Sig(1 / k ** 2, 1) / nn) * q + A2 * q - A2 * p
            + A3 * D - A3 * q
            - A4 * D
            + A4 * Q
            - 2 * A4 * p
            + 2 * A4 * q)


def B6(Sig, nn):
    """Collected by inner product."""
    A2, A3, A4 = _A(Sig, nn)
    return ((-Sig(1 / k ** 2, 1) / nn + A2 - A3 + 2 * A4) * q
            - A2 * p - 2 * A4 * p
            + A4 * Q
            + (A3 - A4) * D)


def B7(Sig, nn):
    """The finite sums replaced by harmonic sums (Σ_{k=1} and Σ_{k=2} exactly as printed)."""
    h1, h2 = Sig(1 / k, 1), Sig(1 / k ** 2, 1)
    g1, g2 = Sig(1 / k, 2), Sig(1 / k ** 2, 2)
    t = 2 * g1 - 2 * g2 - 1 + sp.S.One / nn
    return ((-h2 / nn + (2 * h1 - 3 * h2 + sp.S.One / nn) / (nn * (nn - 1)) + 2 * t / (nn * (nn - 1) * (nn - 2))) * q
            - 2 / (nn * (nn - 1)) * (g1 - g2 + t / (nn - 2)) * p
            + t / (nn * (nn - 1) * (nn - 2)) * Q
            + ((g2 + 1 - sp.S.One / nn) / (nn * (nn - 1)) - t / (nn * (nn - 1) * (nn - 2))) * D)


def B8(Sig, nn):
    """The harmonic sums now from k = 1 (but still Σ_{k=2} in the Σ x_i² coefficient, as printed)."""
    h1, h2 = Sig(1 / k, 1), Sig(1 / k ** 2, 1)
    g1, g2 = Sig(1 / k, 2), Sig(1 / k ** 2, 2)
    t1 = 2 * h1 - 2 * h2 - 1 + sp.S.One / nn
    t2 = 2 * g1 - 2 * g2 - 1 + sp.S.One / nn
    return ((-h2 / nn + (2 * h1 - 3 * h2 + sp.S.One / nn) / (nn * (nn - 1)) + 2 * t1 / (nn * (nn - 1) * (nn - 2))) * q
            - 2 / ((nn - 1) * (nn - 2)) * (h1 - h2 - (nn - 1) / sp.S(nn) ** 2) * p
            + t1 / (nn * (nn - 1) * (nn - 2)) * Q
            + ((h2 - sp.S.One / nn) / (nn * (nn - 1)) - t2 / (nn * (nn - 1) * (nn - 2))) * D)


def B9(Sig, nn):
    """so: φ_j(U) = … — the last display, identical to eq. (3) but for layout."""
    h1, h2 = Sig(1 / k, 1), Sig(1 / k ** 2, 1)
    g1, g2 = Sig(1 / k, 2), Sig(1 / k ** 2, 2)
    t1 = 2 * h1 - 2 * h2 - 1 + sp.S.One / nn
    t2 = 2 * g1 - 2 * g2 - 1 + sp.S.One / nn
    return ((-h2 / nn + (2 * h1 - 3 * h2 + sp.S.One / nn) / (nn * (nn - 1)) + 2 * t1 / (nn * (nn - 1) * (nn - 2))) * q
            - 2 / ((nn - 1) * (nn - 2)) * (h1 - h2 - sp.S.One / nn + sp.S.One / nn ** 2) * p
            + t1 / (nn * (nn - 1) * (nn - 2)) * Q
            + ((h2 - sp.S.One / nn) / (nn * (nn - 1)) - t2 / (nn * (nn - 1) * (nn - 2))) * D
            + 2 / (nn - 1) * (h1 - sp.S.One / nn) * a - 2 / (nn * (nn - 1)) * (h1 - 1) * b)


# --- the two ways of evaluating the sums ----------------------------------------------------------------------------
def SigSym(f, lo, c=0):
    return sum_k(f, lo, c)


def sig_exact(nn):
    def Sig(f, lo, c=0):
        v = exact_sum(f, lo, nn + c)
        return sp.Rational(v.numerator, v.denominator)
    return Sig


def to_full(expr):
    return sp.expand(sp.sympify(expr).subs(PRIMED_TO_FULL))


# --- Shapley values derived from Definition 1 (the reference each display is compared with) -------------------------
def phi_U2_derived():
    """φ_j(U_2), U_2(S) = 2⟨x̄_S, α⟩: k = 0 gives 2a; k ≥ 1 gives E[2(a + ⟨T,α⟩)/(k+1) − 2⟨T,α⟩/k]. Valid n ≥ 2."""
    mom = subset_moments()
    marginal = 2 * (a + mom["T_alpha"]) / (k + 1) - 2 * mom["T_alpha"] / k
    return sp.expand((2 * a + sum_k(marginal, 1, -1)) / n)


def phi_U1_derived():
    """φ_j(U_1), U_1(S) = −‖x̄_S‖²: k = 0 gives −q; k ≥ 1 the mean of B3 (proved separately). Valid n ≥ 3."""
    mom = subset_moments()
    marginal = -(q + 2 * mom["T_xj"] + mom["T_sq"]) / (k + 1) ** 2 + mom["T_sq"] / k ** 2
    return sp.expand((-q + sum_k(marginal, 1, -1)) / n)


# --- U = U_1 + U_2 ----------------------------------------------------------------------------------------------------
def test_split_symbolic():
    """‖α‖² − ‖x̄ − α‖² = −‖x̄‖² + 2⟨x̄, α⟩ coordinate by coordinate (so in any dimension)."""
    xb, al = sp.symbols("xbar alpha")
    assert sp.expand(al ** 2 - (xb - al) ** 2 - (-(xb ** 2) + 2 * xb * al)) == 0


def _games(x, alpha):
    d = len(alpha)

    def mean(sub):
        return [sum((x[i][c] for i in sub), Fraction(0)) / len(sub) for c in range(d)]
    u1 = lambda sub: -dot(mean(sub), mean(sub)) if sub else Fraction(0)  # noqa: E731
    u2 = lambda sub: 2 * dot(mean(sub), alpha) if sub else Fraction(0)  # noqa: E731
    return chg_utility(x, alpha), u1, u2


def test_split_and_linearity_exact():
    """U(S) = U_1(S) + U_2(S) on every subset, and φ(U) = φ(U_1) + φ(U_2) (Linearity), at n = 5."""
    from itertools import combinations
    x, alpha = random_rational_vectors(5, 2, seed=11), random_rational_vectors(1, 2, seed=12)[0]
    u, u1, u2 = _games(x, alpha)
    for r in range(6):
        for sub in combinations(range(5), r):
            assert u(sub) == u1(sub) + u2(sub)
    check_linearity(exact_shapley, u1, u2, 1, 1, 5)
    assert exact_shapley(u, 5) == [v1 + v2 for v1, v2 in zip(exact_shapley(u1, 5), exact_shapley(u2, 5))]


# --- φ_j(U_2): the erratum -------------------------------------------------------------------------------------------
def test_phi_U2_printed_is_half_the_true_value():
    """Both printed displays equal φ_j(U_2)/2 identically (symbolic n); 2 × display is the correct statement."""
    true = to_full(phi_U2_derived())
    assert_identical(to_full(2 * B2(SigSym, n)), true, FULL, "2·B2 vs φ_j(U2)")
    assert_identical(to_full(2 * B2b(SigSym, n)), true, FULL, "2·B2b vs φ_j(U2)")
    assert_identical(to_full(B2(SigSym, n)), to_full(B2b(SigSym, n)), FULL, "B2 vs B2b")  # the rewriting is right
    with pytest.raises(AssertionError, match="not identical"):
        assert_identical(to_full(B2(SigSym, n)), true, FULL, "B2 as printed vs φ_j(U2)")


def test_phi_U2_counterexample():
    """n = 3, d = 1, x = (1, 0, 0), α = 1: U_2(S) = 2·(mean of x over S).
    Enumeration gives φ_1(U_2) = 11/9; the printed display gives 11/18 (exactly half)."""
    x, alpha = [[Fraction(1)], [Fraction(0)], [Fraction(0)]], [Fraction(1)]
    _, _, u2 = _games(x, alpha)
    truth = exact_shapley(u2, 3)[0]
    vals = {a: Fraction(1), b1: Fraction(0), b: Fraction(1)}
    printed = B2(sig_exact(3), sp.Integer(3)).subs({s: _r(v) for s, v in vals.items()})
    assert truth == Fraction(11, 9) and printed == sp.Rational(11, 18)


# --- U_1 --------------------------------------------------------------------------------------------------------------
def test_B3_marginal_symbolic():
    """B3 = U_1(S∪j) − U_1(S) = −(q + 2t1 + t2)/(k+1)² + t2/k² for every |S| = k ≥ 1."""
    t1, t2 = sp.symbols("t1 t2")
    assert sp.cancel(B3(k, t1, t2) - (-(q + 2 * t1 + t2) / (k + 1) ** 2 + t2 / k ** 2)) == 0


def test_B3_undefined_for_empty_S():
    """At S = ∅ the last term is (1/0)·0: B3 needs the convention that it is 0 (U_1(∅) = 0); then B3 = −‖x_j‖²."""
    t1, t2 = sp.symbols("t1 t2")
    assert B3(sp.Integer(0), t1, t2).subs({t1: 0, t2: 0}) is sp.nan
    assert sp.limit(B3(k, 0, 0), k, 0) == -q  # with T = 0 the expression is −q/(k+1)², continuous at 0


def test_B4_is_phi_U1():
    assert_identical(B4(SigSym, n), phi_U1_derived(), PRIMED, "B4 vs φ_j(U1) from Definition 1")


def test_B5_B6_B7_B8_chain():
    """Each display equals the one before it, identically in n (H1, H2 free)."""
    chain = [to_full(B4(SigSym, n)), B5(SigSym, n), B6(SigSym, n), B7(SigSym, n), B8(SigSym, n)]
    for i in range(1, len(chain)):
        assert_identical(chain[i], chain[i - 1], FULL, f"display {i + 4} vs display {i + 3}")


def test_B9_is_B8_plus_corrected_U2_and_is_eq3():
    from proofs.proofkit import eq3
    u2_corrected = to_full(2 * B2b(SigSym, n))
    assert_identical(B9(SigSym, n), B8(SigSym, n) + u2_corrected, FULL, "B9 vs B8 + 2·B2b")
    assert_identical(B9(SigSym, n), eq3(), FULL, "B9 vs eq. (3)")
    with pytest.raises(AssertionError, match="not identical"):  # with the printed (halved) U2 part it does not follow
        assert_identical(B9(SigSym, n), B8(SigSym, n) + to_full(B2b(SigSym, n)), FULL, "B9 vs B8 + B2b")


def test_finite_sum_identities():
    """The closed forms used between B6 and B7/B8, for symbolic n and exactly for n = 3..30:
    Σ_{k=2}^n (k−1)/k² = H − H⁽²⁾;  Σ_{k=2}^n (2k−1)/(k²(k−1)) = H⁽²⁾ − 1/n  (printed as Σ_{k=2}1/k² + 1 − 1/n);
    Σ_{k=3}^n (2k−1)(k−2)/(k²(k−1)) = 2H − 2H⁽²⁾ − 1 + 1/n = 2Σ_{k=2}1/k − 2Σ_{k=2}1/k² − 1 + 1/n."""
    cases = [((k - 1) / k ** 2, 2, H1 - H2), ((2 * k - 1) / (k ** 2 * (k - 1)), 2, H2 - 1 / n),
             ((2 * k - 1) * (k - 2) / (k ** 2 * (k - 1)), 3, 2 * H1 - 2 * H2 - 1 + 1 / n)]
    from proofs.proofkit import evaluate
    for f, lo, closed in cases:
        assert sp.cancel(sum_k(f, lo) - closed) == 0
        for nn in range(3, 31):
            assert evaluate(closed, {}, nn) == exact_sum(f, lo, nn)


# --- every display exactly, at concrete n, against enumeration -------------------------------------------------------
def _primed_values(x, alpha, j):
    others = [x[i] for i in range(len(x)) if i != j]
    s1 = [sum((v[c] for v in others), Fraction(0)) for c in range(len(alpha))]
    return {p1: dot(s1, x[j]), D1: sum((dot(v, v) for v in others), Fraction(0)),
            R1: sum((dot(u, v) for iu, u in enumerate(others) for iv, v in enumerate(others) if iu != iv), Fraction(0)),
            b1: dot(s1, alpha)}


@pytest.mark.parametrize("nn", [3, 4, 5, 6, 7])
def test_every_display_exactly_by_enumeration(nn):
    x, alpha = random_rational_vectors(nn, 2, seed=300 + nn), random_rational_vectors(1, 2, seed=400 + nn)[0]
    u, u1, u2 = _games(x, alpha)
    phi, phi1, phi2 = exact_shapley(u, nn), exact_shapley(u1, nn), exact_shapley(u2, nn)
    Sig, nn_ = sig_exact(nn), sp.Integer(nn)  # a sympy Integer: no float division anywhere
    for j in range(nn):
        vals = {**inner_products(x, alpha, j), **_primed_values(x, alpha, j)}
        ev = lambda e: e.subs({s: sp.Rational(v.numerator, v.denominator) for s, v in vals.items()})  # noqa: E731
        want1, want2, want = (sp.Rational(v.numerator, v.denominator) for v in (phi1[j], phi2[j], phi[j]))
        assert 2 * ev(B2(Sig, nn_)) == want2 and 2 * ev(B2b(Sig, nn_)) == want2     # corrected U2 displays
        if want2 != 0:
            assert ev(B2(Sig, nn_)) != want2                                       # printed ones are off by 2
        for disp in (B4, B5, B6, B7, B8):
            assert ev(disp(Sig, nn_)) == want1, (disp.__name__, nn, j)
        assert ev(B9(Sig, nn_)) == want, (nn, j)


def test_B3_exactly_on_every_subset():
    from itertools import combinations
    nn = 6
    x, alpha = random_rational_vectors(nn, 2, seed=5), random_rational_vectors(1, 2, seed=6)[0]
    _, u1, _ = _games(x, alpha)
    j = 2
    others = [i for i in range(nn) if i != j]
    for r in range(1, nn):
        for sub in combinations(others, r):
            T = [sum((x[i][c] for i in sub), Fraction(0)) for c in range(2)]
            got = B3(sp.Integer(r), _r(dot(x[j], T)), _r(dot(T, T))).subs(q, _r(dot(x[j], x[j])))
            assert got == _r(u1(tuple(sorted(sub + (j,)))) - u1(sub))


def _r(f):
    return sp.Rational(f.numerator, f.denominator)
