"""Issue 13, kind 5: the OpenDataVal plugin goes through the core's path (chg.loop.train_and_value and
chg.lastlayer.LastLayerTap): a bias-free output layer is valued right; an extra nn.Linear registered after the output
layer, or the output layer run twice in one forward pass, is a clear error — as in the core."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from test_edges_oracle import dense_values

pytest.importorskip("opendataval.dataval")

from opendataval.model import ClassifierMLP, LogisticRegression  # noqa: E402

import chg  # noqa: E402
from chg.opendataval import CHGShapley  # noqa: E402


def _toy(n=18, d=5, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % c
    return x, F.one_hot(y, c).double(), y


def _values(model, mode="pass", **kw):
    x, y1h, _ = _toy()
    ev = CHGShapley(mode=mode, random_state=0, **kw)
    ev.input_data(x, y1h, x[:6], y1h[:6]).input_model(model)
    ev.train_data_values(epochs=2, batch_size=5, lr=0.0)
    return ev.evaluate_data_values()


@pytest.mark.parametrize("mode", ["pass", "ride"])
def test_bias_free_output_layer_is_valued_right(mode):
    """The issue's instance: before, the plugin valued a bias column that does not exist."""
    torch.manual_seed(0)
    model = LogisticRegression(5, 3).double()
    model.linear = nn.Linear(5, 3, bias=False).double()
    x, _, y = _toy()
    want = dense_values(model, model.linear, [(x[i:i + 1], y[i:i + 1]) for i in range(len(y))])
    np.testing.assert_allclose(_values(model, mode), want.numpy(), rtol=1e-10, atol=1e-12)


def test_bias_free_mlp_head_per_class():
    """Another of the kind: opendataval's MLP (softmax output) with a bias-free last layer, per-class games."""
    torch.manual_seed(1)
    model = ClassifierMLP(5, 3, layers=3, hidden_dim=7).double()
    head = chg.find_last_linear(model)
    head.bias = None
    x, _, y = _toy()
    want = dense_values(model, head, [(x[i:i + 1], y[i:i + 1]) for i in range(len(y))], groups=y)
    np.testing.assert_allclose(_values(model, per_class=True), want.numpy(), rtol=1e-10, atol=1e-12)


class _AuxAfter(LogisticRegression):
    """An auxiliary nn.Linear registered after the output layer and run in forward on the inputs (not the output)."""

    def __init__(self, d, c):
        super().__init__(d, c)
        self.aux = nn.Linear(d, 2)

    def forward(self, x):
        self.aux_out = self.aux(x)
        return torch.sigmoid(self.linear(x))


class _UnusedAfter(LogisticRegression):
    def __init__(self, d, c):
        super().__init__(d, c)
        self.spare = nn.Linear(c, c)


class _HeadTwice(LogisticRegression):
    def forward(self, x):
        return torch.sigmoid(0.5 * (self.linear(x) + self.linear(2 * x)))


@pytest.mark.parametrize("mode", ["pass", "ride"])
def test_extra_linear_after_the_output_layer_or_a_head_run_twice_is_an_error(mode):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="not the output of the hooked nn.Linear 'aux'"):
        _values(_AuxAfter(5, 3).double(), mode)
    with pytest.raises(RuntimeError, match="no forward pass went through the hooked nn.Linear 'spare'"):
        _values(_UnusedAfter(5, 3).double(), mode)
    with pytest.raises(ValueError, match="ran 2 times"):
        _values(_HeadTwice(5, 3).double(), mode)


def test_the_same_errors_in_the_core():
    """The core path gives the same answers on the same models (output="probabilities" as the plugin's)."""
    x, _, y = _toy()
    for model, err, match in ((_AuxAfter(5, 3).double(), ValueError, "not the output of the hooked"),
                              (_UnusedAfter(5, 3).double(), RuntimeError, "no forward pass"),
                              (_HeadTwice(5, 3).double(), ValueError, "ran 2 times")):
        with pytest.raises(err, match=match):
            chg.compute_factors(model, x, y, output="probabilities")


def test_labels_as_a_column_are_classes_and_other_shapes_are_refused():
    """(n, 1) integer labels were read as a one-hot of one class: every row class 0, valued with no error (reviewer
    R7's r1_odv_column_labels.py). A column is the classes; a 2-D array that is not one-hot, floating labels of one
    column and fractional or boolean epochs are refused."""
    _, y1h, y = _toy()
    torch.testing.assert_close(CHGShapley._labels(y[:, None]), y)
    torch.testing.assert_close(CHGShapley._labels(y[:, None].numpy()), y)
    torch.testing.assert_close(CHGShapley._labels(y1h), y)
    torch.testing.assert_close(CHGShapley._labels(y1h.float().numpy()), y)
    soft = y1h.clone()
    soft[4] = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"read as one-hot \(one 1 per row, the rest 0\), but row 4 is \[0.5, 0.5"):
        CHGShapley._labels(soft)
    codes = torch.stack([y, y], 1)  # two columns of codes: not one-hot
    with pytest.raises(ValueError, match=r"row 0 is \[0, 0\]"):
        CHGShapley._labels(codes)
    with pytest.raises(ValueError, match=r"needs classification labels .*got \(18, 1\) torch.float64"):
        CHGShapley._labels(y[:, None].double())
    torch.testing.assert_close(CHGShapley._labels(y1h.bool()), y)  # one-hot of True/False (reviewer R8)
    torch.testing.assert_close(CHGShapley._labels(y1h.bool().numpy()), y)
    torch.testing.assert_close(CHGShapley._labels((y[:, None] % 2).bool()), y % 2)
    import pandas as pd
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable NumPy array" warning from a pandas column
        torch.testing.assert_close(CHGShapley._labels(pd.Series(y.numpy())), y)
    x, _, _ = _toy()
    model = LogisticRegression(5, 3).double()
    by_column = CHGShapley(random_state=0).input_data(x, y[:, None], x[:6], y[:6, None]).input_model(model)
    by_column.train_data_values(epochs=1, batch_size=5, lr=0.0)
    by_onehot = CHGShapley(random_state=0).input_data(x, y1h, x[:6], y1h[:6]).input_model(model)
    by_onehot.train_data_values(epochs=1, batch_size=5, lr=0.0)
    np.testing.assert_array_equal(by_column.evaluate_data_values(), by_onehot.evaluate_data_values())
    for bad in (2.7, "3", True):
        with pytest.raises(TypeError, match="epochs must be an integer >= 1"):
            CHGShapley(epochs=bad)
    for text in (np.array(["a", "b", "a"]), pd.Series(["a", "b", "a"]), pd.Categorical(["a", "b", "a"])):
        with pytest.raises(ValueError, match=r"CHGShapley: labels: the labels must be integer class labels .* such "
                                             r"as 'a': encode them"):
            CHGShapley._labels(text)
