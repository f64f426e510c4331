"""A timm model (ResNet-18, 10 classes, 1×28×28 inputs, random weights) valued by the library, ride-along and
separate pass, and the head swap timm offers (model.reset_classifier) refused between epochs.

Oracles (float64): the separate pass's epoch 0 is Theorem 1 (chg.chg_shapley) on x_i = l_i ∂l_i/∂[W | b] of
model.fc by per-sample autograd at θ0 in eval mode; ride-along at learning rate 0 is the same on each training batch
in train mode (BatchNorm's batch statistics: each row's gradient is taken inside its own batch's forward pass).
"""
import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import chg

pytest.importorskip("timm")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "timm_model.py"


def _example():
    spec = importlib.util.spec_from_file_location("timm_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ex = _example()


def _dense_x(model, xb, yb):
    """(B, C·(D+1)) rows x_i = l_i [∂l_i/∂W | ∂l_i/∂b] of model.fc, from one forward pass of the batch."""
    loss = F.cross_entropy(model(xb), yb, reduction="none")  # (B,)
    rows = []
    for i in range(len(yb)):
        gw, gb = torch.autograd.grad(loss[i], (model.fc.weight, model.fc.bias), retain_graph=True)
        rows.append(loss[i].detach() * torch.cat([gw, gb[:, None]], 1).reshape(-1))
    return torch.stack(rows)


def test_separate_pass_epoch0_equals_autograd_at_theta0():
    x, y, _ = ex.images(40)
    x = x.double()
    model = ex.resnet().double()
    init = copy.deepcopy(model).eval()
    want = chg.chg_shapley(torch.cat([_dense_x(init, x[i:i + 8], y[i:i + 8]) for i in range(0, 40, 8)]))
    values, valuer = chg.value_data(model, (x, y), epochs=1, batch_size=16, lr=1e-3, mode="pass",
                                    return_valuer=True)
    assert isinstance(values, chg.Values) and values.shape == (40,)
    torch.testing.assert_close(valuer.epoch_values[0], want, rtol=1e-9, atol=1e-13)


def test_ride_along_at_lr0_equals_autograd_in_each_training_batch():
    x, y, _ = ex.images(48)
    x = x.double()
    model = ex.resnet().double()
    oracle_model = copy.deepcopy(model).train()
    values = ex.own_loop(model, x, y, epochs=1, lr=0.0)
    loader = torch.utils.data.DataLoader(chg.IndexedDataset(torch.utils.data.TensorDataset(x, y)), batch_size=32,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))  # own_loop's order
    dense = torch.zeros(48, 10 * 513, dtype=torch.float64)
    seen = []
    for xb, yb, idx in loader:
        dense[idx] = _dense_x(oracle_model, xb, yb)
        seen += idx.tolist()
    assert sorted(seen) == list(range(48))
    np.testing.assert_allclose(values.history[0], chg.chg_shapley(dense).numpy(), rtol=1e-9, atol=1e-13)


def test_reset_classifier_between_epochs_is_an_error():
    x, y, _ = ex.images(24)
    model = ex.resnet()
    valuer = chg.EpochValuer(24)
    loader = torch.utils.data.DataLoader(chg.IndexedDataset(torch.utils.data.TensorDataset(x, y)), batch_size=12)
    valuer.value_epoch(model, loader)
    model.reset_classifier(10)
    with pytest.raises(ValueError, match="output layer of this ResNet changed"):
        valuer.value_epoch(model, loader)  # the separate pass
    assert valuer.epochs == 1
    with pytest.raises(ValueError, match="output layer of this ResNet changed"):
        ex.own_loop(ex.resnet(), x, y, epochs=2, reset_at=1)  # ride-along, one tap per epoch
    fresh = chg.EpochValuer(24)
    fresh.value_epoch(model, loader)  # a new valuation of the new head is fine
    fresh.value_epoch(ex.resnet(seed=1), loader)  # and so is another model object (e.g. a checkpoint)


def test_example_runs_as_written(capsys):
    ride, passed = ex.main(n=48, epochs=2)
    for v in (ride, passed):
        assert isinstance(v, chg.Values) and v.shape == (48,) and v.epochs == 2 and bool(np.isfinite(v.values).all())
    assert "lowest-valued rows" in capsys.readouterr().out
