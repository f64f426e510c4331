"""Options of Algorithm 1's average over epochs (skip_epochs) and the separate pass's batch size, against oracles:
per-sample autograd of the last layer + chg_shapley (Theorem 1 on dense vectors) for each epoch's values."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from chg import chg_shapley
from chg.loop import value_data
from chg.valuation import EpochValuer, IndexedDataset

RTOL, ATOL = 1e-10, 1e-13
N, D_IN, D, C = 14, 4, 5, 3


def tiny_model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D_IN, D), nn.Tanh(), nn.Linear(D, C)).double()


def tiny_data(seed=1, n=N):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=g, dtype=torch.float64), torch.arange(n) % C


def dense_values(model, x, y):
    """Theorem 1 on x_i = l_i ∇_{[W|b]} l_i from per-sample autograd: the oracle of one epoch's values."""
    last, rows = model[-1], []
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        gw, gb = torch.autograd.grad(loss, [last.weight, last.bias])
        rows.append((loss.detach() * torch.cat([gw, gb[:, None]], 1)).reshape(-1))
    return chg_shapley(torch.stack(rows))


def value_epochs(models, x, y, **kw):
    """An EpochValuer fed one separate pass per model (model k = the parameters of epoch k)."""
    valuer = EpochValuer(len(y), **kw)
    for m in models:
        valuer.value_epoch(m, DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=5))
    return valuer


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_skip_epochs_averages_the_later_epochs_only(k):
    x, y = tiny_data()
    models = [tiny_model(s) for s in range(4)]  # four different θ_k: every epoch's values differ
    oracle = torch.stack([dense_values(m, x, y) for m in models])  # (4, n)
    valuer = value_epochs(models, x, y, skip_epochs=k)
    torch.testing.assert_close(valuer.values().to_tensor(), oracle[k:].mean(0), rtol=RTOL, atol=ATOL)
    assert valuer.epochs == 4 and len(valuer.epoch_values) == 4  # the skipped epochs are still kept
    torch.testing.assert_close(torch.stack(valuer.epoch_values), oracle, rtol=RTOL, atol=ATOL)
    if k:
        assert not torch.allclose(valuer.values().to_tensor(), oracle.mean(0))  # the option changes the answer


def test_skip_epochs_with_partial_epochs_averages_each_row_over_its_later_epochs():
    x, y = tiny_data()
    models = [tiny_model(s) for s in range(3)]
    valuer = EpochValuer(N, skip_epochs=1, partial_epochs=True)
    seen = [torch.arange(N), torch.arange(N - 4), torch.arange(4, N)]  # rows N-4.. miss epoch 1, rows 0-3 epoch 2
    oracle = torch.full((3, N), float("nan"), dtype=torch.float64)
    for e, (m, rows) in enumerate(zip(models, seen)):
        if len(rows) < N:
            with pytest.warns(UserWarning, match="4 of the 14 rows"):
                valuer.value_epoch(m, [(x[rows], y[rows], rows)])
        else:
            valuer.value_epoch(m, [(x, y, rows)])
        oracle[e, rows] = dense_values(m, x[rows], y[rows])  # the epoch's game: the rows seen
    expect = torch.from_numpy(np.nanmean(oracle[1:].numpy(), axis=0))  # each row over its epochs ≥ 1
    torch.testing.assert_close(valuer.values().to_tensor(), expect, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", ["pass", "ride"])
def test_value_data_skip_epochs(mode):
    """value_data(skip_epochs=k) averages the epochs ≥ k of the very same run (per-epoch values kept)."""
    x, y = tiny_data(n=40)
    full, v0 = value_data(tiny_model(0), (x, y), epochs=4, lr=0.1, batch_size=8, mode=mode, return_valuer=True)
    skip, v2 = value_data(tiny_model(0), (x, y), epochs=4, lr=0.1, batch_size=8, mode=mode, skip_epochs=2,
                          return_valuer=True)
    per_epoch = torch.stack(v0.epoch_values)  # (4, n)
    torch.testing.assert_close(torch.stack(v2.epoch_values), per_epoch, rtol=0, atol=0)  # same run, same epochs
    assert (full.skip_epochs(2).values == skip.values).all()  # the Values view of the same history
    full, skip = full.to_tensor(), skip.to_tensor()
    torch.testing.assert_close(skip, per_epoch[2:].mean(0), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(full, per_epoch.mean(0), rtol=RTOL, atol=ATOL)
    assert not torch.allclose(skip, full)


def test_value_data_skip_epochs_at_the_first_epoch_equals_the_initial_model():
    """lr = 0: every epoch is at θ_0, so any skip gives the initial model's values (per-sample autograd)."""
    x, y = tiny_data()
    values = value_data(tiny_model(3), (x, y), epochs=3, lr=0.0, batch_size=4, skip_epochs=2)
    torch.testing.assert_close(values.to_tensor(), dense_values(tiny_model(3), x, y), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("1", TypeError),
                                        (None, TypeError)])
def test_bad_skip_epochs_is_a_clear_error(bad, error):
    """A wrong type is a TypeError, a wrong value a ValueError; both say what skip_epochs is."""
    x, y = tiny_data()
    with pytest.raises(error, match=r"skip_epochs must be an integer >= 0 \(the number of first epochs left out"):
        EpochValuer(N, skip_epochs=bad)
    with pytest.raises(error, match=r"skip_epochs must be an integer >= 0 \(the number of first epochs left out"):
        value_data(tiny_model(0), (x, y), epochs=2, skip_epochs=bad)


def test_skip_epochs_that_leaves_nothing_is_a_clear_error():
    x, y = tiny_data()
    for k in (3, 4):
        with pytest.raises(ValueError, match=f"skip_epochs={k} leaves none of the 3 epochs"):
            value_data(tiny_model(0), (x, y), epochs=3, skip_epochs=k)
    valuer = value_epochs([tiny_model(0), tiny_model(1)], x, y, skip_epochs=2)
    with pytest.raises(ValueError, match="all among the first skip_epochs=2"):
        valuer.values().to_tensor()
    assert EpochValuer(N, skip_epochs=np.int64(2)).skip_epochs == 2  # NumPy integers are integers


def test_state_dict_keeps_skip_epochs():
    x, y = tiny_data()
    models = [tiny_model(s) for s in range(3)]
    first = value_epochs(models[:2], x, y, skip_epochs=1)
    resumed = EpochValuer(N, skip_epochs=1)
    resumed.load_state_dict(first.state_dict())
    resumed.value_epoch(models[2], DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=5))
    want = value_epochs(models, x, y, skip_epochs=1).values()
    np.testing.assert_array_equal(resumed.values().values, want.values)
    with pytest.raises(ValueError, match="skip_epochs=1, this one has skip_epochs=0"):
        EpochValuer(N).load_state_dict(first.state_dict())
    old = {k: v for k, v in value_epochs(models[:1], x, y).state_dict().items() if k != "skip_epochs"}
    plain = EpochValuer(N)
    plain.load_state_dict(old)  # a checkpoint written before skip_epochs existed: 0
    assert plain.epochs == 1


@pytest.mark.parametrize("mode", ["pass", "ride"])
def test_eval_batch_size_does_not_change_values(mode):
    """The separate pass's batch size (and the validation pass's) is a speed setting only."""
    x, y = tiny_data(n=50)
    xv, yv = tiny_data(seed=2, n=12)
    runs = [value_data(tiny_model(0), (x, y), (xv, yv), epochs=2, lr=0.1, batch_size=8, mode=mode, alpha="valid",
                       eval_batch_size=b) for b in (1, 7, 50, 1024)]
    for r in runs[1:]:
        torch.testing.assert_close(r, runs[0], rtol=1e-12, atol=1e-14)


def test_pass_cost_benchmark_quick(tmp_path):
    """benchmarks/bench_pass_cost.py --quick runs end to end and writes its ratios (needs Fashion-MNIST)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from chg.experiments.data import DATA_DIR, fashion_mnist_dirs
    if not any((d / "train-images-idx3-ubyte.gz").exists() for d in fashion_mnist_dirs(DATA_DIR)):
        pytest.skip("Fashion-MNIST is not on this machine")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_pass_cost.py"), "--quick", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=900, env={**os.environ})
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "pass_cost_quick.json").read_text())["result"]
    assert set(res["ratio_cpu"]) == {"ride", "pass, eval batch 256", "pass, eval batch 1024"}
    assert res["ratio_cpu"]["ride"] == [1.0]
    assert all(r[0] > 0 for r in res["ratio_cpu"].values())
    assert (tmp_path / "pass_cost_quick.md").read_text().startswith("# Cost of the separate pass")
