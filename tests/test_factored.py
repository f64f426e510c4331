"""Factored last-layer values == dense Theorem 1 on per-sample autograd gradients of a real model (the oracle)."""
import pytest
import torch
from torch import nn

import chg
import chg.factored as factored
from chg.lastlayer import Factors, LastLayerTap, compute_factors, factors_from_logits, find_last_linear


def _model(dtype=torch.float64, seed=0, classes=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 5), nn.ReLU(), nn.Linear(5, classes)).to(dtype)


def _per_sample_grads(model, x, y, bias_only=False):
    """Slow obvious path: batch-size-1 autograd, gradient of the last layer laid out as [∇W | ∇b] (C, D+1)."""
    last = find_last_linear(model)
    rows, losses = [], []
    for i in range(x.shape[0]):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        loss.backward()
        g = last.bias.grad.clone() if bias_only else torch.cat([last.weight.grad, last.bias.grad[:, None]], 1)
        rows.append(g.flatten())
        losses.append(loss.detach())
    return torch.stack(rows), torch.stack(losses)


def _data(n=23, seed=1, dtype=torch.float64, classes=4):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=gen, dtype=dtype), torch.randint(0, classes, (n,), generator=gen)


@pytest.mark.parametrize("gradient", ["full", "bias"])
@pytest.mark.parametrize("weighting", ["chg", "gradient"])
def test_factored_equals_dense_autograd_float64(gradient, weighting):
    model = _model()
    x, y = _data()
    grads, losses = _per_sample_grads(model, x, y, bias_only=gradient == "bias")
    dense_x = grads * losses[:, None] if weighting == "chg" else grads
    oracle = chg.chg_shapley(dense_x)
    f = compute_factors(model, x, y)
    torch.testing.assert_close(f.loss, losses, rtol=1e-14, atol=1e-14)
    got = chg.shapley_from_factors(f, utility=weighting, gradient=gradient)
    torch.testing.assert_close(got, oracle, rtol=1e-12, atol=1e-12 * oracle.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ten_classes_equals_dense_autograd(dtype):
    """C = 10 (the benchmarks' shape), float64 and float32 models, against per-sample autograd."""
    model = _model(dtype, classes=10)
    x, y = _data(n=31, dtype=dtype, classes=10)
    grads, losses = _per_sample_grads(model, x, y)
    oracle = chg.chg_shapley(grads.double() * losses.double()[:, None])
    got = chg.shapley_from_factors(compute_factors(model, x, y))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, oracle, rtol=tol, atol=tol * oracle.abs().max().item())


def test_factored_equals_dense_float32_model():
    model = _model(torch.float32)
    x, y = _data(dtype=torch.float32)
    grads, losses = _per_sample_grads(model, x, y)
    oracle = chg.chg_shapley(grads.double() * losses.double()[:, None])
    got = chg.shapley_from_factors(compute_factors(model, x, y))
    torch.testing.assert_close(got, oracle, rtol=1e-5, atol=1e-6 * oracle.abs().max().item())


def test_hardness_from_factors_is_hardness_shapley():
    model = _model()
    x, y = _data()
    f = compute_factors(model, x, y)
    torch.testing.assert_close(chg.shapley_from_factors(f, utility="hardness"), chg.hardness_shapley(f.loss))


def test_alpha_any_vector_and_per_group():
    model = _model()
    x, y = _data(n=30)
    grads, losses = _per_sample_grads(model, x, y)
    dense = grads * losses[:, None]  # (n, C*(D+1))
    f = compute_factors(model, x, y)
    alpha = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(chg.shapley_from_factors(f, alpha=alpha), chg.chg_shapley(dense, alpha.flatten()),
                               rtol=1e-12, atol=1e-12)
    # per-class: each class is its own game with α = class mean — equals separate dense calls
    per_class = chg.shapley_from_factors(f, groups=y)
    for c in y.unique():
        idx = (y == c).nonzero().squeeze(1)
        torch.testing.assert_close(per_class[idx], chg.chg_shapley(dense[idx]), rtol=1e-12, atol=1e-12)


def test_statistics_add_over_batches():
    model = _model()
    x, y = _data(n=50)
    f = compute_factors(model, x, y)
    whole = chg.shapley_from_factors(f)
    parts = [f[:20], f[20:33], f[33:]]
    stats = sum((factored.group_stats(p.err, p.feat, p.loss) for p in parts[1:]),
                factored.group_stats(parts[0].err, parts[0].feat, parts[0].loss))
    assert stats.n == 50
    got = torch.cat([factored.values_from_factors(p.err, p.feat, p.loss, stats) for p in parts])
    torch.testing.assert_close(got, whole, rtol=1e-12, atol=1e-13)


def test_vmap_per_sample_gradients_agree():
    """A second independent oracle: torch.func per-sample gradients."""
    from torch.func import functional_call, grad, vmap
    model = _model()
    x, y = _data()
    params = {k: v.detach() for k, v in model.named_parameters()}
    last = [k for k in params if k.startswith("4.")]

    def loss_fn(p, xi, yi):
        return nn.functional.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    g = vmap(grad(loss_fn), in_dims=(None, 0, 0))(params, x, y)
    dense = torch.cat([g["4.weight"], g["4.bias"][:, :, None]], 2).flatten(1)
    assert last == ["4.weight", "4.bias"]
    f = compute_factors(model, x, y)
    torch.testing.assert_close(chg.shapley_from_factors(f, utility="gradient"), chg.chg_shapley(dense),
                               rtol=1e-12, atol=1e-12)


def test_tap_rides_on_a_training_forward():
    model = _model()
    x, y = _data()
    with LastLayerTap(model) as tap:
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        f = tap.factors(logits, y)
    loss.backward()  # the tap did not break the graph
    ref = compute_factors(model, x, y)
    for k in ("loss", "err", "feat"):
        torch.testing.assert_close(getattr(f, k), getattr(ref, k), rtol=0, atol=0)
    assert not f.feat.requires_grad
    assert len(find_last_linear(model)._forward_hooks) == 0  # hook removed on exit


def test_half_precision_features_are_upcast():
    f = factors_from_logits(torch.randn(3, 4, dtype=torch.bfloat16), torch.tensor([0, 1, 3]),
                            torch.randn(3, 5, dtype=torch.float16))
    assert f.err.dtype == torch.float32 and f.feat.dtype == torch.float32
    torch.testing.assert_close(f.err.sum(1), torch.zeros(3), atol=1e-6, rtol=0)  # softmax − onehot sums to 0


def test_any_integer_label_dtype_and_an_empty_batch():
    z, h = torch.randn(4, 3), torch.randn(4, 5)
    ref = factors_from_logits(z, torch.tensor([0, 2, 1, 2]), h)
    for dtype in (torch.uint8, torch.int16, torch.int32):
        got = factors_from_logits(z, torch.tensor([0, 2, 1, 2], dtype=dtype), h)
        assert torch.equal(got.err, ref.err) and torch.equal(got.loss, ref.loss)
    empty = factors_from_logits(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), torch.zeros(0, 5))
    assert empty.loss.shape == (0,) and empty.err.shape == (0, 3)
    with pytest.raises(ValueError, match="got range \\[-1, 2\\]"):
        factors_from_logits(z, torch.tensor([0, 2, -1, 2]), h)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="no nn.Linear"):
        find_last_linear(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="targets must lie in"):
        factors_from_logits(torch.randn(2, 3), torch.tensor([0, 3]), torch.randn(2, 4))
    with pytest.raises(ValueError, match="logits contain NaN"):
        factors_from_logits(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]), torch.randn(1, 4))
    with pytest.raises(ValueError, match="features have 1 rows but logits have 2"):
        factors_from_logits(torch.randn(2, 3), torch.tensor([0, 1]), torch.randn(1, 4))
    err, feat = torch.randn(4, 3), torch.randn(4, 5)
    with pytest.raises(ValueError, match="feat has 3 rows but err has 4"):
        chg.factored_shapley(err, feat[:3])
    with pytest.raises(ValueError, match="loss must be 1-D with n = 4"):
        chg.factored_shapley(err, feat, torch.ones(3))
    with pytest.raises(ValueError, match="feat .penultimate features. contains 1 non-finite"):
        chg.factored_shapley(err, torch.where(torch.arange(20).reshape(4, 5) == 7, float("inf"), feat))
    with pytest.raises(ValueError, match="loss .per-sample. contains"):
        chg.factored_shapley(err, feat, torch.tensor([1.0, float("nan"), 1.0, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        chg.factored_shapley(torch.zeros(0, 3), torch.zeros(0, 5))
    with pytest.raises(ValueError, match="alpha has 7 entries; expected 18"):
        chg.factored_shapley(err, feat, alpha=torch.ones(7))
    with pytest.raises(ValueError, match="utility must be one of"):
        chg.shapley_from_factors(Factors(torch.ones(4), err, feat), utility="chgg")
    with pytest.raises(RuntimeError, match="no forward pass"):
        with LastLayerTap(_model()) as tap:
            tap.factors(torch.randn(2, 4), torch.tensor([0, 1]))


def test_opendataval_imports():
    import opendataval.dataval  # noqa: F401  (installed --no-deps by reproduce/setup.sh; must import)


class _HeadFirst(nn.Module):
    """The output layer is registered before the backbone: 'last registered Linear' is the wrong layer."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(5, 4)
        self.body = nn.Sequential(nn.Linear(6, 5), nn.Tanh())

    def forward(self, x):
        return self.head(self.body(x))


def test_tap_refuses_what_would_give_wrong_values():
    x, y = _data()
    model = _HeadFirst().double()
    with pytest.raises(ValueError, match="not the output of the hooked"):
        with LastLayerTap(model) as tap:  # hooks body[0], whose output is not the logits
            tap.factors(model(x), y)
    with LastLayerTap(model, layer=model.head) as tap:  # explicit layer: right values
        f = tap.factors(model(x), y)
    ref = compute_factors(nn.Sequential(model.body, model.head), x, y)
    torch.testing.assert_close(f.feat, ref.feat, rtol=0, atol=0)

    plain = _model()
    with pytest.raises(ValueError, match="ran 2 times"):
        with LastLayerTap(plain) as tap:
            plain(x)
            tap.factors(plain(x), y)
    with pytest.raises(ValueError, match="no temperature"):
        with LastLayerTap(plain) as tap:
            tap.factors(plain(x) / 2.0, y)
    assert not LastLayerTap(nn.Sequential(nn.Linear(6, 4, bias=False))).bias  # valued (tests/test_edges_heads.py)
    with pytest.raises(ValueError, match="integer class labels"):
        factors_from_logits(torch.randn(2, 3), torch.tensor([0.0, 1.0]), torch.randn(2, 4))


def test_confident_logits_give_an_exact_error_vector():
    f = factors_from_logits(torch.tensor([[30.0, 0.0, 0.0]]), torch.tensor([0]), torch.zeros(1, 2))
    assert f.err[0, 0].item() == -(f.err[0, 1] + f.err[0, 2]).item() and f.err[0, 0].item() < 0


def test_factored_precision_and_efficiency_at_1e5():
    gen = torch.Generator().manual_seed(5)
    n, C, D = 100_000, 10, 32
    err = torch.softmax(torch.randn(n, C, generator=gen, dtype=torch.float64), 1)
    err[torch.arange(n), torch.randint(0, C, (n,), generator=gen)] -= 1
    feat = torch.randn(n, D, generator=gen, dtype=torch.float64).relu()
    loss = torch.rand(n, generator=gen, dtype=torch.float64) * 2
    v64 = chg.factored_shapley(err, feat, loss)
    stats = chg.group_stats(err, feat, loss)
    mean = stats.sum / n
    u_n = (mean * mean).sum().item()  # U(N) with α = the mean: ‖α‖² − 0
    assert abs(v64.sum().item() - u_n) <= 1e-10 * u_n
    # float32 features: float32 GEMMs per chunk, float64 accumulation — values within float32 precision
    v32 = chg.factored_shapley(err.float(), feat.float(), loss.float())
    assert ((v32 - v64).abs().max() / v64.abs().max()).item() <= 1e-6
    assert abs(v32.sum().item() - u_n) <= 1e-6 * u_n


def test_autocast_does_not_lower_precision():
    model = _model(torch.float32)
    x, y = _data(dtype=torch.float32)
    f = compute_factors(model, x, y)
    ref = chg.shapley_from_factors(f)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = chg.shapley_from_factors(f)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_empty_shard_and_overflow_and_dtype_errors():
    empty = factored.group_stats(torch.zeros(0, 3), torch.zeros(0, 5), torch.zeros(0))
    assert empty.n == 0 and float(empty.sum.abs().sum()) == 0.0  # an empty rank can join the all-reduce
    with pytest.raises(ValueError, match="empty"):
        factored.values_from_factors(torch.zeros(0, 3), torch.zeros(0, 5), None, empty)
    err = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="overflowed although every input is finite"):
        chg.factored_shapley(err, torch.full((4, 5), 1e200, dtype=torch.float64))
    with pytest.raises(ValueError, match="feat must be a floating-point tensor"):
        chg.factored_shapley(err, torch.ones(4, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="alpha must be a dict"):
        chg.factored_shapley(err, None, groups=torch.tensor([0, 0, 1, 1]), alpha=torch.zeros(3))
    with pytest.raises(ValueError, match="no entry for group 1"):
        chg.factored_shapley(err, None, groups=torch.tensor([0, 0, 1, 1]), alpha={0: torch.zeros(3)})
    with pytest.raises(ValueError, match="has no target"):
        chg.shapley_from_factors(Factors(torch.ones(4), err, torch.randn(4, 5)), utility="hardness",
                                 alpha=torch.zeros(3, 6))


def _random_factors(n, C, D, seed, dtype=torch.float64, offset=0.0):
    gen = torch.Generator().manual_seed(seed)
    err = torch.softmax(torch.randn(n, C, generator=gen, dtype=torch.float64), 1)
    err[torch.arange(n), torch.randint(0, C, (n,), generator=gen)] -= 1
    feat = offset + torch.randn(n, D, generator=gen, dtype=torch.float64)
    loss = torch.rand(n, generator=gen, dtype=torch.float64) * 3
    return err.to(dtype), feat.to(dtype), loss.to(dtype)


def _dense(err, feat, loss, bias=True):
    """x_i = l_i e_i ⊗ [h_i; 1] (or h_i) materialised, float64 (n, C·(D+1))."""
    h = feat.double()
    if bias:
        h = torch.cat([h, torch.ones(h.shape[0], 1, dtype=torch.float64)], 1)
    return (loss.double()[:, None, None] * err.double()[:, :, None] * h[:, None, :]).flatten(1)


@pytest.mark.parametrize("bias", [True, False])
def test_many_chunks_equal_the_dense_oracle(bias, monkeypatch):
    """A group larger than one chunk of rows (n·D > CHUNK_ELEMENTS on CPU, here set to 2²⁰ features so that a small
    group spans two): the chunked passes against Theorem 1 on the materialised vectors, whole group, per group with a
    given α each, and from statistics added over batches."""
    monkeypatch.setattr(factored, "CHUNK_ELEMENTS", 1 << 20)
    n, C, D = 2100, 3, 512
    assert n * D > factored.CHUNK_ELEMENTS  # two chunks of rows (2048 + 52)
    err, feat, loss = _random_factors(n, C, D, seed=5, offset=2.0)
    dense = _dense(err, feat, loss, bias)
    oracle = chg.chg_shapley(dense)
    got = chg.factored_shapley(err, feat, loss, bias=bias)
    torch.testing.assert_close(got, oracle, rtol=1e-11, atol=1e-12 * oracle.abs().max().item())
    groups = torch.arange(n) % 2
    gen = torch.Generator().manual_seed(9)
    alpha = {g: torch.randn(C, D + bias, generator=gen, dtype=torch.float64) for g in (0, 1)}
    per = chg.factored_shapley(err, feat, loss, alpha=alpha, groups=groups, bias=bias)
    for g in (0, 1):
        idx = (groups == g).nonzero().squeeze(1)
        want = chg.chg_shapley(dense[idx], alpha[g].flatten())
        torch.testing.assert_close(per[idx], want, rtol=1e-11, atol=1e-12 * want.abs().max().item())
    cut = 1000
    stats = factored.group_stats(err[:cut], feat[:cut], loss[:cut], bias) + \
        factored.group_stats(err[cut:], feat[cut:], loss[cut:], bias)
    parts = torch.cat([factored.values_from_factors(err[:cut], feat[:cut], loss[:cut], stats, bias=bias),
                       factored.values_from_factors(err[cut:], feat[cut:], loss[cut:], stats, bias=bias)])
    torch.testing.assert_close(parts, oracle, rtol=1e-11, atol=1e-12 * oracle.abs().max().item())


# (0, 1) and (1, 2.5): an offset below the spread is not centred (chg.factored.CENTRE_RATIO), the others are
@pytest.mark.parametrize("offset,spread", [(0.0, 1.0), (1.0, 2.5), (1.0, 0.5), (1.0, 0.1), (100.0, 0.01),
                                           (1000.0, 0.001)])
@pytest.mark.parametrize("D", [64, 2048])
def test_float32_values_do_not_depend_on_a_shared_feature_offset(offset, spread, D, monkeypatch):
    """Features that share a large offset (h = offset + spread·noise), one class whose softmax errors are alike (a
    per-class group of a confident model): the float32 path must stay within 2e-6 of the values' spread of the float64
    oracle. Without centring the float32 products lose 1e-5 (offset 1) to all (offset 1000) of it. D = 64: one chunk
    of rows; D = 2048: two (chunks of 2²⁰ features here)."""
    monkeypatch.setattr(factored, "CHUNK_ELEMENTS", 1 << 20)
    n, C = 600, 5
    gen = torch.Generator().manual_seed(3)
    feat = offset + spread * torch.randn(n, D, generator=gen, dtype=torch.float64)
    z = torch.zeros(n, C, dtype=torch.float64)
    z[:, 0] = 3.0
    p = torch.softmax(z + 0.1 * torch.randn(n, C, generator=gen, dtype=torch.float64), 1)
    err, loss = p.clone(), -torch.log(p[:, 0])
    err[:, 0] -= 1
    err, feat, loss = err.float(), feat.float(), loss.float()  # the float32 inputs; the oracle uses them exactly
    oracle = chg.chg_shapley((loss.double()[:, None, None] * err.double()[:, :, None]
                              * torch.cat([feat.double(), torch.ones(n, 1, dtype=torch.float64)], 1)[:, None, :]
                              ).flatten(1))
    got = chg.factored_shapley(err, feat, loss)
    assert ((got - oracle).abs().max() / oracle.std()).item() <= 2e-6
    mu = feat[:32].mean(0)  # the rule: centred when ‖μ‖ > CENTRE_RATIO · rms ‖h − μ‖ of the first 32 rows
    assert factored._Passes(err, feat, loss, True).centre == bool(
        mu.square().sum() > factored.CENTRE_RATIO ** 2 * (feat[:32] - mu).square().sum(1).mean())


@pytest.mark.parametrize("offset", [0.0, 7.0])
def test_values_from_factors_with_given_squared_norms_equal_its_own_pass(offset):
    """sq_norms given (complete ‖x_i‖²) or made by pass 1 (for centred features pass 2 adds μ's share to them): the
    same values, with features that are centred (offset 7× their spread) and that are not."""
    g = torch.Generator().manual_seed(11)
    n, C, D = 300, 4, 6
    err = torch.softmax(torch.randn(n, C, generator=g, dtype=torch.float64), 1)
    err[torch.arange(n), torch.randint(0, C, (n,), generator=g)] -= 1
    feat = torch.randn(n, D, generator=g, dtype=torch.float64) + offset
    loss = torch.rand(n, generator=g, dtype=torch.float64)
    assert factored._Passes(err, feat, loss, True).centre == (offset > 0)
    stats = factored.group_stats(err, feat, loss)
    x = (loss[:, None] * err)[:, :, None] * torch.cat([feat, torch.ones(n, 1, dtype=torch.float64)], 1)[:, None, :]
    sq = x.reshape(n, -1).square().sum(1)  # ‖x_i‖² from the dense vectors
    own = factored.values_from_factors(err, feat, loss, stats)
    given = factored.values_from_factors(err, feat, loss, stats, sq_norms=sq)
    torch.testing.assert_close(given, own, rtol=1e-12, atol=1e-12 * own.abs().max().item())
    torch.testing.assert_close(stats.sum_sq_norms, sq.sum(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype, tol_row, tol_all", [(torch.float32, 5e-5, 1e-5), (torch.float64, 5e-13, 1e-13)])
def test_a_row_far_below_the_shared_offset_keeps_its_precision(dtype, tol_row, tol_all):
    """Raw tabular features (a year near 2,000, a price near 1e4, a count near 50) and one row of zeros (missing
    values filled with 0), a linear model on them: the zero row's M h_j and ‖h_j‖² cancel between the centred terms
    (ε‖μ‖²/‖h̃_j‖²), so the passes recompute such rows from h_j in float64. Against exact rationals on the same
    inputs (measured before → after): the zero row 8.5e-4 → 1.4e-5 of its value in float32, 3.1e-12 → 1.2e-13 in
    float64; every row 1.7e-4 → 2.9e-6 (float32), 6.3e-13 → 2.4e-14 (float64) of the largest value."""
    from fractions import Fraction
    n, g = 120, torch.Generator().manual_seed(4)
    X = torch.stack([2000 + 10 * torch.randn(n, generator=g, dtype=torch.float64),
                     1e4 + 500 * torch.randn(n, generator=g, dtype=torch.float64),
                     50 + 5 * torch.randn(n, generator=g, dtype=torch.float64)], 1)
    X[7] = 0.0  # not among the first 32 rows: μ is the mean of rows that are not zero
    y = (torch.rand(n, generator=g) < 0.5).long()
    W = torch.tensor([[0.01, 0.0002, 0.02], [-0.01, -0.0002, -0.02]], dtype=torch.float64)
    z = X @ W.T - (W @ X[8:].mean(0))  # logits O(1) on typical rows; the zero row's loss is large
    f = factors_from_logits(z.to(dtype), y, X.to(dtype))
    got = factored.factored_shapley(f.err, f.feat, f.loss)
    f64 = factors_from_logits(z.to(dtype).double(), y, X.to(dtype).double())
    x = (f64.loss[:, None, None] * f64.err[:, :, None]
         * torch.cat([f64.feat, torch.ones(n, 1, dtype=torch.float64)], 1)[:, None, :]).reshape(n, -1)
    exact = torch.tensor([float(v) for v in chg.chg_shapley_exact([[Fraction(float(t)) for t in r]
                                                                  for r in x.tolist()])], dtype=torch.float64)
    assert abs(float(got[7] - exact[7])) / abs(float(exact[7])) <= tol_row
    assert (got - exact).abs().max() / exact.abs().max() <= tol_all
