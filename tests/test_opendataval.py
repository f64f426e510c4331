"""The OpenDataVal plugin: registration, values against dense per-sample autograd, and a real mediator run."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("opendataval.dataval")

from opendataval.dataloader import DataFetcher, mix_labels  # noqa: E402
from opendataval.dataval import DataEvaluator, KNNShapley  # noqa: E402
from opendataval.experiment import ExperimentMediator  # noqa: E402
from opendataval.model import ClassifierMLP, ClassifierSkLearnWrapper, LogisticRegression  # noqa: E402
from sklearn.linear_model import LogisticRegression as SkLogReg  # noqa: E402

import chg.opendataval  # noqa: E402,F401
from chg import chg_shapley  # noqa: E402
from chg.opendataval import CHGShapley  # noqa: E402

RTOL, ATOL = 1e-9, 1e-12


def toy(n=24, d=5, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % c
    return x, F.one_hot(y, c).double(), y


def dense(model, x, y, layer):
    """x_i = l_i ∇_{[W|b]} CE(logits_i, y_i) of the final linear layer, by per-sample autograd (the oracle)."""
    rows = []
    for i in range(len(y)):
        feats = {}
        h = layer.register_forward_hook(lambda m, inp, out: feats.update(z=out))
        model(x[i:i + 1])
        h.remove()
        loss = F.cross_entropy(feats["z"], y[i:i + 1])
        gw, gb = torch.autograd.grad(loss, [layer.weight, layer.bias])
        rows.append((loss.detach() * torch.cat([gw, gb[:, None]], 1)).reshape(-1))
    return torch.stack(rows)


def test_registered_for_mediator_and_cli():
    assert DataEvaluator.Evaluators["chgshapley"].__name__ == "CHGShapley"
    from opendataval.__main__ import DataEvaluatorsEnum
    assert "chgshapley" in {e.value for e in DataEvaluatorsEnum}


def test_cli_entry_point_lists_chgshapley():
    out = subprocess.run([sys.executable, "-m", "chg.opendataval", "run", "--help"], capture_output=True, text=True,
                         timeout=120, env={"COLUMNS": "400", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert "chgshapley" in out.stdout


@pytest.mark.parametrize("model_cls", [LogisticRegression, ClassifierMLP])
@pytest.mark.parametrize("mode", ["pass", "ride"])
def test_values_equal_dense_autograd_at_lr0(model_cls, mode):
    """lr = 0: θ stays at the model's initial value, so every epoch's values are eq. (3) at θ0 (both modes)."""
    x, y1h, y = toy()
    torch.manual_seed(0)
    model = model_cls(5, 3).double()
    ev = CHGShapley(mode=mode, random_state=0)
    ev.input_data(x, y1h, x[:6], y1h[:6]).input_model(model)
    ev.train_data_values(epochs=2, batch_size=7, lr=0.0)
    layer = chg.lastlayer.find_last_linear(model)
    want = chg_shapley(dense(model, x, y, layer)).numpy()
    np.testing.assert_allclose(ev.evaluate_data_values(), want, rtol=RTOL, atol=ATOL)
    assert ev.model_fits == 1 and ev.valuer.epochs == 2


def test_per_class_and_validation_alpha_equal_dense():
    x, y1h, y = toy()
    xv, yv1h, yv = toy(n=9, seed=3)
    torch.manual_seed(0)
    model = LogisticRegression(5, 3).double()
    ev = CHGShapley(per_class=True, alpha="valid", random_state=0)
    ev.input_data(x, y1h, xv, yv1h).input_model(model)
    ev.train_data_values(epochs=1, lr=0.0)
    xs, xsv = dense(model, x, y, model.linear), dense(model, xv, yv, model.linear)
    want = torch.empty(len(y), dtype=torch.float64)
    for c in range(3):
        want[y == c] = chg_shapley(xs[y == c], xsv[yv == c].mean(0))
    np.testing.assert_allclose(ev.evaluate_data_values(), want.numpy(), rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module")
def noisy_fetcher():
    return DataFetcher.setup("breast_cancer", random_state=np.random.RandomState(0), train_count=150,
                             valid_count=50, test_count=100, add_noise=mix_labels, noise_kwargs={"noise_rate": 0.2})


def test_experiment_mediator_finds_flipped_labels(noisy_fetcher):
    """Through stock ExperimentMediator: CHG ranks flipped labels low (AUC well above chance), one model fit."""
    from sklearn.metrics import roc_auc_score
    torch.manual_seed(0)
    model = LogisticRegression(*noisy_fetcher.covar_dim, *noisy_fetcher.label_dim)
    exper = ExperimentMediator(noisy_fetcher, model, {"epochs": 10, "batch_size": 32, "lr": 0.01},
                               raises_error=True)
    exper.compute_data_values([CHGShapley(random_state=0), CHGShapley(loss="model", random_state=0),
                               KNNShapley(k_neighbors=10)])
    noisy = np.zeros(150, dtype=bool)
    noisy[noisy_fetcher.noisy_train_indices] = True
    chg_logits, chg_model, _ = exper.data_evaluators
    for ev in (chg_logits, chg_model):
        v = ev.data_values
        assert v.shape == (150,) and np.isfinite(v).all()
        assert roc_auc_score(noisy, -v) > 0.8
    assert not np.allclose(chg_logits.data_values, chg_model.data_values)  # the two losses train differently


def test_bad_input():
    x, y1h, _ = toy()
    with pytest.raises(ValueError, match="mode"):
        CHGShapley(mode="both")
    with pytest.raises(ValueError, match="loss"):
        CHGShapley(loss="mse")
    with pytest.raises(ValueError, match="utility"):
        CHGShapley(utility="loss")
    sk = ClassifierSkLearnWrapper(SkLogReg, 3)
    with pytest.raises(ValueError, match="nn.Module"):
        CHGShapley().input_data(x, y1h, x, y1h).input_model(sk).train_data_values()
    with pytest.raises(ValueError, match="classification labels"):
        CHGShapley().input_data(x, x[:, 0], x, x[:, 0]).input_model(LogisticRegression(5, 3).double()) \
            .train_data_values()
    with pytest.raises(ValueError, match="before evaluate"):
        CHGShapley().evaluate_data_values()
