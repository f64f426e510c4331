r"""Shared pieces of the machine proofs in ``proofs/``: symbols, the sum over subset sizes, eq. (3) as printed.

Every proof file imports from here, so this is the whole trusted base beside sympy itself. Read it once.

**Symbols.** ``n`` (players) and ``k`` (a subset size) are positive integers. ``H1`` and ``H2`` stand for the
harmonic numbers :math:`H_n = \sum_{k=1}^n 1/k` and :math:`H^{(2)}_n = \sum_{k=1}^n 1/k^2` and are kept as *free*
symbols: an identity that holds with H1, H2 free holds in particular for their true values, for every n.

For a player j with vector :math:`x_j`, the set :math:`N = \{1..n\}`, :math:`s = \sum_{i\in N} x_i` and the target
:math:`\alpha`, Theorem 1 is a linear combination of six inner products (the same names as ``chg.Coefficients``)::

    q = ‖x_j‖²   p = ⟨s, x_j⟩   Q = ‖s‖²   D = Σ_i ‖x_i‖²   a = ⟨x_j, α⟩   b = ⟨s, α⟩

The derivation itself works with the same quantities over the *other* players :math:`N\setminus j`
(:math:`s' = s - x_j`)::

    p1 = ⟨s', x_j⟩   D1 = Σ_{i≠j} ‖x_i‖²   R1 = Σ_{a≠b, both ≠ j} ⟨x_a, x_b⟩   b1 = ⟨s', α⟩

and :data:`PRIMED_TO_FULL` rewrites them in the six (checked in ``test_subset_moments.py``).

**The sum over subset sizes.** :func:`sum_k` evaluates :math:`\sum_{k=lo}^{n+c} r(k)` for a rational function r of
k (coefficients may involve n and any other symbol) *for symbolic n*: sympy's ``apart`` splits r into a polynomial
in k plus terms :math:`c/(k+t)^r` with integer shift t; the split is re-checked by recombination (``cancel`` of the
difference must be 0); each term :math:`1/(k+t)^r` with r ∈ {1, 2} sums by an index shift to
:math:`H^{(r)}_{n+c+t} - H^{(r)}_{lo+t-1}`, and :math:`H^{(r)}_{n+e}` is written as ``H1``/``H2`` plus or minus the
finitely many terms :math:`1/(n+i)^r` between. A polynomial part is summed by ``sympy.summation`` (Faulhaber).
Anything else (r ≥ 3, a non-integer shift, a pole inside the range) raises ``ValueError``: the engine refuses
rather than guesses. ``test_theorem1_symbolic.py`` checks the engine against exact summation for many n.

**What sympy is trusted for:** exact arithmetic on rationals; ``cancel``/``together``/``expand`` deciding that a
rational function in several symbols is identically 0 (normal form: cancelled numerator polynomial = 0); ``apart``
only as a proposer (its output is re-verified); ``summation`` of a polynomial in k; ``combsimp`` of a ratio of
binomials (``test_subset_moments.py``, also checked by enumeration). Nothing else.
"""
from __future__ import annotations

import random
from fractions import Fraction

import sympy as sp

n, k = sp.symbols("n k", positive=True, integer=True)
H1, H2 = sp.symbols("H1 H2")                       # H_n and H_n^(2), free symbols
q, p, Q, D, a, b = sp.symbols("q p Q D a b")       # the six inner products of eq. (3)
p1, D1, R1, b1 = sp.symbols("p1 D1 R1 b1")         # the same over N \ {j}
INVARIANTS = (q, p, Q, D, a, b)
H = {1: H1, 2: H2}

# N \ j quantities in terms of the six (s' = s − x_j; Σ_{a≠b∈N\j} = ‖s'‖² − Σ_{i≠j}‖x_i‖²)
PRIMED_TO_FULL = {p1: p - q, D1: D - q, R1: (Q - 2 * p + q) - (D - q), b1: b - a}


def harmonic_shifted(order: int, e: int):
    r""":math:`H^{(r)}_{n+e}` in terms of the free symbol for :math:`H^{(r)}_n` (integer offset e)."""
    h = H[order]
    if e >= 0:
        return h + sum((1 / (n + i) ** order for i in range(1, e + 1)), sp.Integer(0))
    return h - sum((1 / (n - i) ** order for i in range(0, -e)), sp.Integer(0))


def harmonic_exact(m: int, order: int = 1) -> Fraction:
    return sum((Fraction(1, i ** order) for i in range(1, m + 1)), Fraction(0))


def sum_k(expr, lo: int, c: int = 0):
    r""":math:`\sum_{k=lo}^{n+c} \mathrm{expr}(k)` in closed form for symbolic n (see the module docstring).

    Valid for every n with n + c ≥ lo − 1 (an empty sum is 0, and the closed form gives 0 at n + c = lo − 1).
    """
    expr = sp.together(sp.sympify(expr))
    parts = sp.Add.make_args(sp.apart(expr, k))
    if sp.cancel(sp.Add(*parts) - expr) != 0:  # never trust apart's split without recombining
        raise AssertionError("apart() returned a decomposition that does not recombine")
    poly_part, total = sp.Integer(0), sp.Integer(0)
    for term in parts:
        if not sp.fraction(sp.factor_terms(term))[1].has(k):
            poly_part += term
            continue
        coeff, order, shift = _simple_pole(term)
        if lo + shift <= 0:
            raise ValueError(f"sum_k: the term {term} has a pole at k = {-shift} inside the range k ≥ {lo}")
        # Σ_{k=lo}^{n+c} 1/(k+t)^r = H^(r)_{n+c+t} − H^(r)_{lo+t−1}
        total += coeff * (harmonic_shifted(order, c + shift) - _rat(harmonic_exact(lo + shift - 1, order)))
    poly = sp.expand(poly_part)
    if not poly.is_polynomial(k):
        raise ValueError(f"sum_k: {poly} is not a polynomial in k")
    total += sp.summation(poly, (k, lo, n + c))
    return total


def exact_sum(summand, lo: int, hi: int) -> Fraction:
    """Σ_{k=lo}^{hi} summand(k) by exact rational evaluation term by term (0 if hi < lo)."""
    total = Fraction(0)
    for kk in range(lo, hi + 1):
        v = sp.sympify(summand).subs(k, kk)
        total += Fraction(int(v.p), int(v.q))
    return total


def _rat(f) -> sp.Rational:
    f = Fraction(f)
    return sp.Rational(f.numerator, f.denominator)


def _simple_pole(term):
    """Split ``coeff / (k + t)**r`` (coeff free of k, integer t, r in {1, 2}); refuse anything else."""
    coeff, rest = term.as_independent(k, as_Add=False)
    base, expo = rest.as_base_exp()
    if expo not in (-1, -2):
        raise ValueError(f"sum_k: cannot sum the term {term} (only 1/(k+t) and 1/(k+t)^2 are supported)")
    lin = sp.Poly(base, k)
    if lin.degree() != 1 or lin.LC() != 1:
        # apart may return 1/(c*k + d): normalise it to coeff' / (k + d/c)
        if lin.degree() != 1:
            raise ValueError(f"sum_k: {term} is not of the form c/(k+t)^r")
        lc = lin.LC()
        coeff = coeff / lc ** (-expo)
        lin = sp.Poly(base / lc, k)
    shift = lin.nth(0)
    if not (shift.is_integer and shift.is_number):
        raise ValueError(f"sum_k: shift {shift} in {term} is not an integer constant")
    return coeff, int(-expo), int(shift)


def coefficient_residuals(expr, reference, symbols=INVARIANTS):
    """``{symbol: cancel(coef_expr - coef_reference)}`` for each of ``symbols``, plus the rest under key 1.

    Both sides must be linear in ``symbols``; all residuals 0 means the two are the same polynomial in them.
    """
    diff = sp.expand(sp.sympify(expr) - sp.sympify(reference))
    out = {}
    rest = diff
    for s in symbols:
        c = diff.coeff(s)
        out[s] = sp.cancel(sp.together(c))
        rest = rest - c * s
    out[1] = sp.cancel(sp.together(sp.expand(rest)))
    return out


def assert_identical(expr, reference, symbols=INVARIANTS, what=""):
    """Raise AssertionError naming each inner product whose coefficient differs (after cancellation)."""
    res = coefficient_residuals(expr, reference, symbols)
    bad = {str(s): r for s, r in res.items() if r != 0}
    if bad:
        raise AssertionError(f"{what}: not identical; coefficient residuals {bad}")


# --- eq. (3) exactly as printed (Theorem 1), with harmonic sums as symbols -------------------------------------------
def eq3_coefficients(nn=n, h1=H1, h2=H2):
    r"""The six coefficients of eq. (3) transcribed from the paper, term by term.

    :math:`\sum_{k=1}^n 1/k` → ``h1``, :math:`\sum_{k=1}^n 1/k^2` → ``h2``; the last coefficient is printed with
    :math:`\sum_{k=2}^n`, transcribed as ``h1 - 1`` and ``h2 - 1`` (the k = 1 terms are 1).
    """
    t1 = 2 * h1 - 2 * h2 - 1 + sp.Integer(1) / nn
    t2 = 2 * (h1 - 1) - 2 * (h2 - 1) - 1 + sp.Integer(1) / nn  # printed with Σ_{k=2}
    return {
        q: -h2 / nn + (2 * h1 - 3 * h2 + sp.Integer(1) / nn) / (nn * (nn - 1)) + 2 * t1 / (nn * (nn - 1) * (nn - 2)),
        p: -2 * (h1 - h2 - sp.Integer(1) / nn + sp.Integer(1) / nn ** 2) / ((nn - 1) * (nn - 2)),
        Q: t1 / (nn * (nn - 1) * (nn - 2)),
        D: (h2 - sp.Integer(1) / nn) / (nn * (nn - 1)) - t2 / (nn * (nn - 1) * (nn - 2)),
        a: 2 * (h1 - sp.Integer(1) / nn) / (nn - 1),
        b: -2 * (h1 - 1) / (nn * (nn - 1)),
    }


def eq3(nn=n, h1=H1, h2=H2, coefficients=None):
    """Eq. (3) as an expression in the six inner products (optionally with altered ``coefficients``)."""
    c = eq3_coefficients(nn, h1, h2) if coefficients is None else coefficients
    return sum(c[s] * s for s in INVARIANTS)


# --- exact data for the enumeration checks ---------------------------------------------------------------------------
def random_rational_vectors(count: int, d: int, seed: int, lo: int = -5, hi: int = 5, den: int = 3) -> list:
    """``count`` vectors of length ``d`` with random Fraction entries (numerators in [lo, hi], denominators 1..den)."""
    rng = random.Random(seed)
    return [[Fraction(rng.randint(lo, hi), rng.randint(1, den)) for _ in range(d)] for _ in range(count)]


def dot(u, v):
    return sum((x * y for x, y in zip(u, v)), Fraction(0))


def inner_products(x: list, alpha: list, j: int) -> dict:
    """The six inner products of eq. (3) for player j, exactly (keys are the sympy symbols)."""
    d = len(alpha)
    s = [sum((xi[c] for xi in x), Fraction(0)) for c in range(d)]
    return {q: dot(x[j], x[j]), p: dot(s, x[j]), Q: dot(s, s), D: sum((dot(xi, xi) for xi in x), Fraction(0)),
            a: dot(x[j], alpha), b: dot(s, alpha)}


def evaluate(expr, values: dict, nn: int) -> Fraction:
    """Evaluate a sympy expression in n, H1, H2 and inner-product symbols exactly at n = nn."""
    subs = {n: nn, H1: _rat(harmonic_exact(nn, 1)), H2: _rat(harmonic_exact(nn, 2))}
    subs.update({s: _rat(v) for s, v in values.items()})
    val = sp.sympify(expr).subs(subs)
    if not val.is_Rational:
        raise ValueError(f"evaluate: expression did not reduce to a rational number at n = {nn}: {val}")
    return Fraction(int(val.p), int(val.q))


# --- Definition 1 as an average over subset sizes --------------------------------------------------------------------
# Definition 1 with |S| = k (k = 0..n−1):  φ_j = (1/n) Σ_k C(n−1, k)^{-1} Σ_{S ⊆ N\j, |S|=k} [U(S∪j) − U(S)]
#                                            = (1/n) Σ_k E_k[U(S∪j) − U(S)],
# E_k the mean over the C(n−1, k) subsets of size k of the m = n − 1 other players (a uniform random k-subset).
# With T = Σ_{i∈S} x_i, inclusion probabilities P(i ∈ S) = k/m and P(a, b ∈ S) = k(k−1)/(m(m−1)) for a ≠ b
# (test_subset_moments.py) and linearity of expectation give these moments (valid for m ≥ 2, i.e. n ≥ 3):
def subset_moments():
    """E_k of ⟨T, α⟩, ⟨T, x_j⟩ and ‖T‖² in the N∖j symbols (rational functions of k and n)."""
    m = n - 1
    return {"T_alpha": k / m * b1, "T_xj": k / m * p1, "T_sq": k / m * D1 + k * (k - 1) / (m * (m - 1)) * R1}
