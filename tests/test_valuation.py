"""Algorithm 1 (chg.valuation) against the slow obvious path: dense per-sample autograd gradients + chg_shapley."""
import copy

import numpy as np
import pytest
import torch

import chg
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from chg import chg_shapley, hardness_shapley
from chg.lastlayer import LastLayerTap, factors_from_logits
from chg.loop import value_data
from chg.valuation import EpochValuer, IndexedDataset

RTOL, ATOL = 1e-10, 1e-13
N, D_IN, D, C = 13, 4, 5, 3


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D_IN, D), nn.Tanh(), nn.Linear(D, C)).double()


def tiny_data(seed=1, n=N):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    y = torch.arange(n) % C  # every class present
    return x, y


def dense_x(model, x, y, weighting="chg", gradient="full"):
    """x_i = l_i ∇_{[W|b]} l_i (C, D+1) flattened, by per-sample autograd: the oracle."""
    last = model[-1]
    rows = []
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        gw, gb = torch.autograd.grad(loss, [last.weight, last.bias])
        g = gb if gradient == "bias" else torch.cat([gw, gb[:, None]], 1)
        w = loss.detach() if weighting == "chg" else 1.0
        rows.append((w * g).reshape(-1))
    return torch.stack(rows)


def dense_values(model, x, y, per_class=False, alpha_x=None, alpha_y=None, **kw):
    xs = dense_x(model, x, y, **kw)
    if not per_class:
        a = None if alpha_x is None else dense_x(model, alpha_x, alpha_y, **kw).mean(0)
        return chg_shapley(xs, a)
    out = torch.empty(len(y), dtype=torch.float64)
    for c in y.unique().tolist():
        m = y == c
        a = None if alpha_x is None else dense_x(model, alpha_x[alpha_y == c], alpha_y[alpha_y == c], **kw).mean(0)
        out[m] = chg_shapley(xs[m], a)
    return out


def close(a, b):
    a = a.to_tensor() if isinstance(a, chg.Values) else a
    torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


def train_loop(model, x, y, mode, epochs=3, lr=0.3, batch=4, **valuer_kw):
    """A user's own loop; returns (valuer, dense oracle values averaged over epochs)."""
    valuer = EpochValuer(len(y), **valuer_kw)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    oracle = []
    for _ in range(epochs):
        if mode == "pass":
            oracle.append(dense_values(copy.deepcopy(model), x, y, per_class=valuer_kw.get("per_class", False)))
            valuer.value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=5))
        xs_epoch = torch.empty(len(y), C * (D + 1), dtype=torch.float64)
        for xb, yb, idx in loader:
            if mode == "ride":
                xs_epoch[idx] = dense_x(model, xb, yb)  # at this step's θ
            with LastLayerTap(model) as tap:
                logits = model(xb)
            if mode == "ride":
                valuer.add(idx, tap.factors(logits, yb), yb)
            opt.zero_grad()
            F.cross_entropy(logits, yb).backward()
            opt.step()
        if mode == "ride":
            valuer.end_epoch()
            oracle.append(chg_shapley(xs_epoch))
    return valuer, torch.stack(oracle).mean(0)


@pytest.mark.parametrize("mode", ["pass", "ride"])
def test_valuer_matches_dense_autograd_over_epochs(mode):
    x, y = tiny_data()
    valuer, oracle = train_loop(tiny_model(), x, y, mode)
    assert valuer.epochs == 3
    close(valuer.values(), oracle)
    # the epochs really differ (the model trained), so averaging is exercised
    assert (valuer.epoch_values[0] - valuer.epoch_values[-1]).abs().max() > 1e-3


def test_per_class_equals_separate_games():
    x, y = tiny_data()
    valuer, oracle = train_loop(tiny_model(), x, y, "pass", epochs=2, per_class=True)
    close(valuer.values(), oracle)


@pytest.mark.parametrize("weighting,gradient", [("gradient", "full"), ("chg", "bias"), ("gradient", "bias")])
def test_weightings_and_bias_gradient(weighting, gradient):
    x, y = tiny_data()
    model = tiny_model()
    valuer = EpochValuer(N, utility=weighting, gradient=gradient)
    got = valuer.value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4))
    close(got, dense_values(model, x, y, weighting=weighting, gradient=gradient))


def test_hardness_weighting():
    x, y = tiny_data()
    model = tiny_model()
    got = EpochValuer(N, utility="hardness").value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4))
    close(got, hardness_shapley(F.cross_entropy(model(x), y, reduction="none").detach()))


@pytest.mark.parametrize("per_class", [False, True])
def test_validation_alpha(per_class):
    x, y = tiny_data()
    xv, yv = tiny_data(seed=7, n=9)
    model = tiny_model()
    valuer = EpochValuer(N, per_class=per_class, alpha="valid")
    got = valuer.value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4),
                             DataLoader(TensorDataset(xv, yv), batch_size=4))
    close(got, dense_values(model, x, y, per_class=per_class, alpha_x=xv, alpha_y=yv))
    # and it is not the train-mean alpha
    assert (got - dense_values(model, x, y, per_class=per_class)).abs().max() > 1e-6


@pytest.mark.parametrize("mode", ["pass", "ride"])
def test_value_data_lr0_equals_initial_model(mode):
    """With lr = 0 θ never moves: both modes give the values at θ0, every epoch."""
    x, y = tiny_data()
    model = tiny_model()
    want = dense_values(copy.deepcopy(model), x, y)
    values, valuer = value_data(model, TensorDataset(x, y), epochs=2, lr=0.0, optimizer="sgd", momentum=0.0,
                                batch_size=4, mode=mode, return_valuer=True)
    close(values, want)
    assert len(valuer.epoch_values) == 2


def test_value_data_trains_and_finds_flipped_labels():
    """A realistic smoke test: on separable blobs with 10% flipped labels, the lowest values hold the flips."""
    g = torch.Generator().manual_seed(0)
    n = 200
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) + 3.0 * (2 * y[:, None] - 1)
    noisy = torch.arange(0, n, 10)
    y_noisy = y.clone()
    y_noisy[noisy] = 1 - y_noisy[noisy]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    values = value_data(model, TensorDataset(x, y_noisy), epochs=5, lr=0.05, batch_size=32)
    values = values.to_tensor()
    assert torch.isfinite(values).all()
    lowest = set(values.argsort()[:len(noisy)].tolist())
    assert len(lowest & set(noisy.tolist())) >= 0.9 * len(noisy)


def test_unseen_points_are_nan_and_partial_epoch():
    x, y = tiny_data()
    model = tiny_model()
    with LastLayerTap(model) as tap:
        f = tap.factors(model(x[:5]), y[:5])
    strict = EpochValuer(N)  # by default a partial epoch is an error (issue 13, kind 3)
    strict.add(torch.arange(5), f)
    with pytest.raises(ValueError, match=f"{N - 5} of the {N} rows were not added"):
        strict.end_epoch()
    valuer = EpochValuer(N, partial_epochs=True)
    valuer.add(torch.arange(5), f)
    with pytest.warns(UserWarning, match=f"{N - 5} of the {N} rows"):
        v = valuer.end_epoch()
    assert torch.isnan(v[5:]).all() and torch.isfinite(v[:5]).all()
    close(v[:5], chg_shapley(dense_x(model, x[:5], y[:5])))


def test_bad_input():
    x, y = tiny_data()
    model = tiny_model()
    with LastLayerTap(model) as tap:
        f = tap.factors(model(x), y)
    with pytest.raises(ValueError, match="n must be"):
        EpochValuer(0)
    with pytest.raises(ValueError, match="utility"):
        EpochValuer(N, utility="loss")
    late = EpochValuer(N)
    late.add(torch.arange(N) + 1, f)  # value checks wait for end_epoch: no host sync per batch
    with pytest.raises(ValueError, match=rf"add: indices must lie in \[0, {N}\), got range \[1, {N}\] \(first in "
                       r"batch 0 of this epoch, at its positions \[12\]\)"):
        late.end_epoch()
    with pytest.raises(ValueError, match="indices but factors"):
        EpochValuer(N).add(torch.arange(3), f)
    with pytest.raises(ValueError, match="needs the labels"):
        EpochValuer(N, per_class=True).add(torch.arange(N), f)
    with pytest.raises(ValueError, match="no training rows"):
        EpochValuer(N).end_epoch()
    with pytest.raises(ValueError, match="no epoch"):
        EpochValuer(N).values()
    with pytest.raises(ValueError, match="alpha='valid' needs"):
        EpochValuer(N, alpha="valid").value_epoch(model, DataLoader(TensorDataset(x, y)))
    with pytest.raises(ValueError, match="must be a plain sequential DataLoader"):
        EpochValuer(N).value_epoch(model, DataLoader(TensorDataset(x, y), shuffle=True))
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):  # a misspelt setting
        value_data(model, TensorDataset(x, y), epoch=3)
    with pytest.raises(TypeError, match="n must be an integer >= 1"):
        EpochValuer(2.0)
    bad = TensorDataset(x.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match="NaN"):
        value_data(tiny_model(), bad, epochs=1)


def test_loaders_without_indices_must_be_sequential():
    """Rows are numbered by arrival only for a plain sequential loader; anything else must yield indices."""
    from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset
    from chg.valuation import EpochValuer
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    data = TensorDataset(torch.randn(12, 4), torch.randint(0, 3, (12,)))
    valuer = EpochValuer(12)
    valuer.value_epoch(model, DataLoader(data, batch_size=5))  # sequential: accepted
    for loader in (DataLoader(data, batch_size=5, shuffle=True),
                   DataLoader(data, batch_size=5, sampler=SubsetRandomSampler(list(range(12))))):
        with pytest.raises(ValueError, match="wrap the dataset in IndexedDataset"):
            valuer.value_epoch(model, loader)


def test_valuer_state_dict_resumes_the_average():
    from chg.lastlayer import Factors
    from chg.valuation import EpochValuer
    gen = torch.Generator().manual_seed(1)
    epochs = [Factors(torch.rand(9, generator=gen), torch.randn(9, 3, generator=gen), torch.randn(9, 4, generator=gen))
              for _ in range(3)]
    full = EpochValuer(9)
    for f in epochs:
        full.add(torch.arange(9), f)
        full.end_epoch()
    first = EpochValuer(9)
    first.add(torch.arange(9), epochs[0])
    first.end_epoch()
    resumed = EpochValuer(9)
    resumed.load_state_dict(first.state_dict())
    for f in epochs[1:]:
        resumed.add(torch.arange(9), f)
        resumed.end_epoch()
    torch.testing.assert_close(resumed.values(), full.values(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="other n or options"):
        EpochValuer(9, per_class=True).load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match="alpha='valid' does not apply"):
        EpochValuer(9, utility="hardness", alpha="valid")


def test_a_failed_end_epoch_for_want_of_validation_rows_drops_the_epochs_rows():
    """alpha='valid' with no validation rows: end_epoch raises and, as after every other error, the epoch's rows go
    (they would otherwise play in the next epoch: with partial_epochs a subset epoch valued 40 rows, not 20)."""
    g = torch.Generator().manual_seed(0)
    z, h, y = torch.randn(40, 3, generator=g), torch.randn(40, 4, generator=g), torch.arange(40) % 3
    v = EpochValuer(40, alpha="valid", partial_epochs=True)
    v.add_logits(torch.arange(40), z, y, h, True)
    with pytest.raises(ValueError, match="no validation rows were added.*this epoch's rows are dropped"):
        v.end_epoch()
    assert v.store.size == 0
    v.add_logits(torch.arange(20), z[:20], y[:20], h[:20], True)
    v.add_validation(factors_from_logits(z[20:], y[20:], h[20:]))
    with pytest.warns(UserWarning, match="20 of the 40 rows were not added"):
        vals = v.end_epoch()
    assert torch.isfinite(vals[:20]).all() and torch.isnan(vals[20:]).all()


def test_bias_must_be_a_bool_and_targets_may_be_arrays_lists_or_bools():
    """``bias`` is whether the head has one: the layer's bias tensor (an easy slip for tap.bias) or None is a
    TypeError, not a silently bias-free head. Targets as an array, a list or bools value as the tensor does."""
    g = torch.Generator().manual_seed(1)
    head = nn.Linear(4, 2)
    h = torch.randn(12, 4, generator=g)
    z, y = head(h).detach(), torch.arange(12) % 2

    def run(targets, bias=True):
        v = EpochValuer(12)
        v.add_logits(torch.arange(12), z, targets, h, bias)
        return v.end_epoch()

    for bias in (head.bias, None, 1):
        with pytest.raises(TypeError, match="bias must be True or False"):
            run(y, bias)
    want = run(y)
    for targets in (y.numpy(), y.tolist(), y.bool()):
        assert torch.equal(run(targets), want)


def test_add_refuses_factors_when_the_valuer_values_a_weighted_or_smoothed_loss():
    """Factors carry their own loss (tap.factors: plain cross-entropy); a valuer told weight= or label_smoothing=
    cannot check them, so ``add`` is an error there (it valued plain cross-entropy silently before), and
    ``add_logits`` values the told loss."""
    g = torch.Generator().manual_seed(2)
    z, h, y = torch.randn(9, 3, generator=g), torch.randn(9, 4, generator=g), torch.arange(9) % 3
    for kw in ({"weight": [0.2, 1.0, 5.0]}, {"label_smoothing": 0.1}):
        v = EpochValuer(9, **kw)
        with pytest.raises(ValueError, match="add: this EpochValuer values the loss with class weights"):
            v.add(torch.arange(9), factors_from_logits(z, y, h), y)
        v.add_logits(torch.arange(9), z, y, h, True)
        assert torch.isfinite(v.end_epoch()).all()


def test_indices_as_an_object_array_or_a_read_only_array_value_as_integers_do_and_strings_are_refused():
    """An object array of Python ints (what pandas' .values gives for mixed columns) values as the ints do; a
    read-only array (a pandas Series' buffer) gives no torch warning; strings get the clear message."""
    import warnings
    g = torch.Generator().manual_seed(3)
    z, h, y = torch.randn(6, 3, generator=g), torch.randn(6, 2, generator=g), torch.arange(6) % 3

    def run(idx):
        v = EpochValuer(6)
        v.add_logits(idx, z, y, h, True)
        return v.end_epoch()

    want = run(torch.arange(6))
    ro = np.arange(6)
    ro.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for idx in (np.array(list(range(6)), dtype=object), ro):
            assert torch.equal(run(idx), want)
    for idx in (np.array([str(i) for i in range(6)]), np.array([str(i) for i in range(6)], dtype=object)):
        with pytest.raises(ValueError, match="indices must be integers"):
            run(idx)


def test_indices_with_a_boolean_among_ints_a_ragged_list_or_none_at_all_get_the_clear_answer():
    """[1, True] in an object array is not the index 1 twice (an error); a ragged list says so (numpy's raw error
    before); an empty object array or list is an empty batch of indices (it said 'float64' before)."""
    from chg.valuation import int_tensor
    with pytest.raises(ValueError, match="booleans among them"):
        int_tensor(np.array([1, True], dtype=object), "indices")
    with pytest.raises(ValueError, match="1-D sequence of integers, got a ragged list"):
        int_tensor([[1, 2], [3]], "indices")
    for empty in (np.array([], dtype=object), []):
        got = int_tensor(empty, "indices")
        assert got.dtype == torch.int64 and got.numel() == 0
