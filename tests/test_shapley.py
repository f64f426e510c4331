"""Theorem 1 (chg.chg_shapley, chg.coefficients) against the enumeration oracle, in exact and float arithmetic."""
import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch

import chg
from chg.games import chg_utility, exact_shapley, mean_utility
from chg.shapley import chg_shapley_exact, coefficients, harmonic, mean_game_coefficients


def _rational_instance(rng, n, d):
    x = [[Fraction(rng.randint(-9, 9), rng.randint(1, 4)) for _ in range(d)] for _ in range(n)]
    alpha = [Fraction(rng.randint(-9, 9), rng.randint(1, 4)) for _ in range(d)]
    return x, alpha


@pytest.mark.parametrize("n", range(1, 11))
def test_closed_form_equals_enumeration_exactly(n):
    rng = random.Random(1000 + n)
    d = rng.randint(1, 4)
    x, alpha = _rational_instance(rng, n, d)
    oracle = exact_shapley(chg_utility(x, alpha), n)
    assert chg_shapley_exact(x, alpha) == oracle  # exact rational equality, no tolerance


@pytest.mark.parametrize("n", range(1, 11))
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_chg_shapley_float_matches_enumeration(n, backend):
    rng = random.Random(2000 + n)
    d = rng.randint(1, 5)
    x, alpha = _rational_instance(rng, n, d)
    oracle = np.array([float(v) for v in exact_shapley(chg_utility(x, alpha), n)])
    xf = np.array([[float(v) for v in row] for row in x])
    af = np.array([float(v) for v in alpha])
    if backend == "torch":
        got = chg.chg_shapley(torch.tensor(xf), torch.tensor(af))
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
        got = got.numpy()
    else:
        got = chg.chg_shapley(xf, af)
        assert isinstance(got, np.ndarray)
    scale = np.abs(oracle).max() + 1e-300
    np.testing.assert_allclose(got, oracle, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_default_alpha_is_the_mean(n):
    rng = random.Random(3000 + n)
    x, _ = _rational_instance(rng, n, 3)
    mean = [sum(row[c] for row in x) / n for c in range(3)]
    oracle = exact_shapley(chg_utility(x, mean), n)
    assert chg_shapley_exact(x) == oracle  # default α = mean, exactly
    oracle = [float(v) for v in oracle]
    xf = np.array([[float(v) for v in row] for row in x])
    np.testing.assert_allclose(chg.chg_shapley(xf), oracle, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", range(1, 10))
def test_hardness_closed_form_equals_enumeration(n):
    rng = random.Random(4000 + n)
    loss = [Fraction(rng.randint(0, 20), rng.randint(1, 5)) for _ in range(n)]
    oracle = exact_shapley(mean_utility(loss), n)
    own, total = mean_game_coefficients(n, exact=True)
    assert [own * li + total * sum(loss) for li in loss] == oracle
    np.testing.assert_allclose(chg.hardness_shapley(np.array([float(v) for v in loss])),
                               [float(v) for v in oracle], rtol=1e-13, atol=1e-13)


def test_float_coefficients_match_exact():
    for n in list(range(1, 40)) + [100, 1000, 5000]:
        exact, approx = coefficients(n, exact=True), coefficients(n)
        for e, a in zip(exact, approx):
            assert a == pytest.approx(float(e), rel=1e-12, abs=1e-300), n


def test_harmonic_numbers_are_accurate_across_the_series_switch():
    import mpmath
    mpmath.mp.dps = 40
    for n in [1, 2, 10, 99_999, 100_000, 100_001, 10**6, 10**8]:
        h1 = mpmath.harmonic(n)
        h2 = mpmath.zeta(2) - mpmath.zeta(2, n + 1)
        assert harmonic(n, 1) == pytest.approx(float(h1), rel=4e-16), n
        assert harmonic(n, 2) == pytest.approx(float(h2), rel=4e-16), n


def test_coefficients_are_finite_and_sane_at_1e8():
    c = coefficients(10**8)
    assert all(math.isfinite(v) for v in c)
    # Σ_j φ_j = U(N) forces c1 + n·c4 = 0 and c2 + n·c3 = −1/n² (the ‖s‖² term of U(N))
    n = 10**8
    assert abs(c.sq_norm + n * c.sum_sq_norms) <= 1e-12 * abs(c.sq_norm)
    assert (c.dot_sum + n * c.sum_norm_sq) * n**2 == pytest.approx(-1.0, rel=1e-13)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_efficiency_at_1e5(dtype):
    gen = torch.Generator().manual_seed(0)
    n, d = 100_000, 8
    x = (torch.randn(n, d, generator=gen) + torch.linspace(-1, 2, d)).to(dtype)
    alpha = torch.randn(d, generator=gen).to(dtype)
    phi = chg.chg_shapley(x, alpha)
    x64, a64 = x.double(), alpha.double()
    mean = x64.mean(0)
    u_n = (a64 @ a64 - (mean - a64) @ (mean - a64)).item()
    total = math.fsum(phi.tolist())
    assert abs(total - u_n) <= 1e-10 * abs(u_n), (total, u_n)


def test_torch_in_torch_out_same_device_and_numpy_in_numpy_out():
    x = torch.randn(5, 3, dtype=torch.float32)
    out = chg.chg_shapley(x)
    assert isinstance(out, torch.Tensor) and out.device == x.device and out.dtype == torch.float64
    out_np = chg.chg_shapley(x.numpy())
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), out_np, rtol=0, atol=0)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((0, 3)), r"empty \(n = 0\)"),
    (np.zeros(3), "must be 2-D"),
    (np.array([[1.0, np.nan]]), "non-finite"),
    (np.array([[1.0, np.inf]]), "non-finite"),
])
def test_bad_input_x(bad, match):
    with pytest.raises(ValueError, match=match):
        chg.chg_shapley(bad)


def test_bad_input_alpha():
    with pytest.raises(ValueError, match=r"alpha must have shape \(d,\) = \(3,\), got \(2,\)"):
        chg.chg_shapley(np.ones((4, 3)), np.ones(2))
    with pytest.raises(ValueError, match="alpha contains 1 non-finite"):
        chg.chg_shapley(np.ones((4, 3)), np.array([1.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="must be numeric"):
        chg.chg_shapley([["a", "b"]])
    with pytest.raises(ValueError, match="empty"):
        chg.hardness_shapley(np.zeros(0))
    with pytest.raises(ValueError, match="empty"):
        coefficients(0)


def test_numpy_integers_and_non_integers_for_n():
    assert coefficients(np.int64(10**8)) == coefficients(10**8)  # no int64 overflow in n(n−1)(n−2)
    with pytest.raises(ValueError, match="must be an integer"):
        coefficients(5.0)


def test_awkward_numpy_inputs_are_accepted():
    x = np.random.default_rng(0).normal(size=(6, 3))
    flipped = x[::-1]  # negative strides
    readonly = x.copy()
    readonly.setflags(write=False)
    np.testing.assert_array_equal(chg.chg_shapley(flipped), chg.chg_shapley(np.ascontiguousarray(flipped)))
    np.testing.assert_array_equal(chg.chg_shapley(readonly), chg.chg_shapley(x))
    with pytest.raises(ValueError, match="must be real"):
        chg.chg_shapley(x.astype(complex))
