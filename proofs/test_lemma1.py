r"""Lemma 1 (eq. 2): the descent inequality with η = 1/L, and the identity that turns it into the CHG score.

Claim. f differentiable with L-Lipschitz gradient, θ_x = θ − ηx, η = 1/L:
  f(θ_x) ≤ f(θ) + ⟨∇f(θ), θ_x − θ⟩ + (L/2)‖θ_x − θ‖²                                     (the descent lemma)
        = f(θ) − (η/2)(‖∇f(θ)‖² − ‖∇f(θ) − x‖²)                                           (an identity)

Proof.
* The equality: with v = θ_x − θ = −ηx and η = 1/L, both sides are sums over coordinates of the same scalar
  polynomial, which sympy expands to equal (``test_identity_*``). It needs η = 1/L exactly: for other η the two
  sides differ by (Lη² − η)/2 · ‖x‖² (shown).
* The inequality is the standard descent lemma (Nesterov 2018, Lemma 1.2.3), *not* the definition of L-Lipschitz
  continuity as the paper's one-line proof says: f(θ+v) − f(θ) − ⟨∇f(θ), v⟩ = ∫₀¹ ⟨∇f(θ+tv) − ∇f(θ), v⟩ dt
  ≤ ∫₀¹ ‖∇f(θ+tv) − ∇f(θ)‖‖v‖ dt ≤ ∫₀¹ L t ‖v‖² dt = (L/2)‖v‖² (Cauchy–Schwarz, then the Lipschitz bound). The last
  steps are textbook and not re-proved here; the inequality itself is checked exactly on quadratics (where it is
  ½ vᵀ(LI − A)v ≥ 0) and numerically on the logistic loss, where a smaller constant than L/2 is shown to fail —
  examples, not a proof for every f.
* Consequence used by the paper: the update direction x that minimizes the bound maximizes
  ‖∇f‖² − ‖∇f − x‖², the CHG score with α = ∇f(θ); for the hardness-weighted objective
  F(θ) = (1/N)Σ h_i f(i;θ) with h_i = f(i;θ) held constant, ∇F = (1/N)Σ l_i ∇f(i;θ) = α of Algorithm 1 (checked with
  autograd below).
"""
import numpy as np
import sympy as sp
import torch


def test_identity_scalar_coordinates():
    g, x, L = sp.symbols("g x L", positive=True)
    eta = 1 / L
    v = -eta * x
    lhs = g * v + L / 2 * v ** 2
    rhs = -eta / 2 * (g ** 2 - (g - x) ** 2)
    assert sp.expand(lhs - rhs) == 0


def test_identity_vectors():
    g = sp.Matrix(sp.symbols("g0:3"))
    x = sp.Matrix(sp.symbols("x0:3"))
    L = sp.Symbol("L", positive=True)
    eta = 1 / L
    v = -eta * x
    lhs = g.dot(v) + L / 2 * v.dot(v)
    rhs = -eta / 2 * (g.dot(g) - (g - x).dot(g - x))
    assert sp.expand(lhs - rhs) == 0


def test_identity_needs_eta_equal_one_over_L():
    g, x, L, eta = sp.symbols("g x L eta", positive=True)
    v = -eta * x
    gap = sp.expand((g * v + L / 2 * v ** 2) - (-eta / 2 * (g ** 2 - (g - x) ** 2)))
    assert sp.factor(gap) == sp.factor((L * eta ** 2 - eta) / 2 * x ** 2)
    assert sp.solve(sp.factor(gap / x ** 2), eta) == [1 / L]


def test_descent_lemma_on_quadratics_exactly():
    """f(θ) = ½θᵀAθ + cᵀθ, A symmetric with eigenvalues ≤ L: f(θ+v) − f(θ) − ⟨∇f, v⟩ = ½vᵀAv ≤ (L/2)‖v‖²."""
    th = sp.Matrix(sp.symbols("t0:2"))
    v = sp.Matrix(sp.symbols("v0:2"))
    A = sp.Matrix([[3, 1], [1, 2]])
    c = sp.Matrix([sp.Rational(1, 2), -1])
    f = lambda z: (z.T * A * z)[0] / 2 + c.dot(z)  # noqa: E731
    grad = A * th + c
    L = max(A.eigenvals())
    gap = sp.expand(L / 2 * v.dot(v) - (f(th + v) - f(th) - grad.dot(v)))
    assert sp.expand(gap - (v.T * (L * sp.eye(2) - A) * v)[0] / 2) == 0
    assert all(ev >= 0 for ev in (L * sp.eye(2) - A).eigenvals())  # so gap ≥ 0 for every v


def test_descent_lemma_logistic_loss_numerically():
    """f(θ) = log(1 + exp(−y zᵀθ)) has L = ‖z‖²/4. The bound holds at many random points; with L/8 it fails."""
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=3), 1.0
    L = z @ z / 4
    f = lambda th: np.logaddexp(0.0, -y * z @ th)  # noqa: E731
    grad = lambda th: -y * z / (1 + np.exp(y * z @ th))  # noqa: E731
    worst, violated = -np.inf, False
    for _ in range(2000):
        th, v = rng.normal(size=3), rng.normal(size=3) * rng.uniform(0.01, 3)
        remainder = f(th + v) - f(th) - grad(th) @ v
        worst = max(worst, remainder - L / 2 * v @ v)
        violated |= remainder > L / 8 * v @ v + 1e-15
    assert worst <= 1e-12 and violated


def test_hardness_weighted_gradient_is_alpha():
    """∇_θ (1/N)Σ h_i f(i;θ) with h_i = f(i;θ).detach() equals (1/N)Σ l_i ∇f(i;θ) (per-sample autograd)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    xb, yb = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    losses = torch.nn.functional.cross_entropy(model(xb), yb, reduction="none")
    weighted = (losses.detach() * losses).mean()
    got = torch.autograd.grad(weighted, list(model.parameters()))
    per_sample = []
    for i in range(6):
        li = torch.nn.functional.cross_entropy(model(xb[i:i + 1]), yb[i:i + 1])
        per_sample.append([li.detach() * gi for gi in torch.autograd.grad(li, list(model.parameters()))])
    want = [sum(ps[pi] for ps in per_sample) / 6 for pi in range(2)]
    for g_, w_ in zip(got, want):
        assert torch.allclose(g_, w_, rtol=1e-12, atol=1e-14)


def test_best_direction_maximizes_the_score():
    """For every x: score(g) − score(x) = ‖g − x‖² (sympy, identically), so x = g maximizes the score
    ‖g‖² − ‖g − x‖² (which the bound f(θ) − (η/2)·score subtracts) and no other x reaches it."""
    g = sp.Matrix(sp.symbols("g0:3"))
    x = sp.Matrix(sp.symbols("x0:3"))
    score = lambda u: g.dot(g) - (g - u).dot(g - u)  # noqa: E731
    assert sp.expand(score(g) - score(x) - (g - x).dot(g - x)) == 0
