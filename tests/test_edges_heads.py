"""Issue 13, kind 2: heads the formula can serve. A bias-free output nn.Linear (g = e ⊗ h, ‖g‖² = ‖e‖²‖h‖², no "+1")
and a one-logit binary head trained with BCEWithLogitsLoss (e = σ(z) − y, l = BCE). Values against the oracle:
per-sample autograd of the output layer with the loss a user trains with, then Theorem 1 on the dense vectors."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from test_edges_oracle import close, dense_values

import chg
from chg.lastlayer import LastLayerTap, compute_factors, factors_from_logits
from chg.loop import value_data
from chg.valuation import EpochValuer


def _samples(x, y):
    return [(x[i:i + 1], y[i:i + 1]) for i in range(len(y))]


def _bias_free(seed=0, d_in=5, d=6, c=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, d), nn.Tanh(), nn.Linear(d, c, bias=False)).double()


@pytest.mark.parametrize("weighting", ["chg", "gradient"])
def test_bias_free_head_equals_autograd(weighting):
    """A decoder-style head (no bias): chg.factored's eq. (3), whole pool and per class (many chunks of rows:
    tests/test_factored.py::test_many_chunks_equal_the_dense_oracle)."""
    model = _bias_free()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(17, 5, generator=g, dtype=torch.float64), torch.arange(17) % 4
    want = dense_values(model, model[-1], _samples(x, y), weighting)
    f = compute_factors(model, x, y)
    assert not f.bias
    close(chg.shapley_from_factors(f, utility=weighting), want)
    close(EpochValuer(17, utility=weighting).value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=5)),
          want)
    per = dense_values(model, model[-1], _samples(x, y), weighting, groups=y)
    close(chg.shapley_from_factors(f, utility=weighting, groups=y), per)
    close(EpochValuer(17, utility=weighting, per_class=True).value_epoch(
        model, DataLoader(TensorDataset(x, y), batch_size=5)), per)


def test_bias_free_head_other_model_and_errors():
    """Another of the kind: the whole model is one bias-free Linear (features = the inputs), trained by value_data."""
    torch.manual_seed(2)
    model = nn.Linear(3, 2, bias=False).double()
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(9, 3, generator=g, dtype=torch.float64), torch.tensor([0, 1] * 4 + [1])
    want = dense_values(model, model, _samples(x, y))
    close(value_data(model, TensorDataset(x, y), epochs=2, lr=0.0, optimizer="sgd", momentum=0.0), want)
    f = compute_factors(model, x, y)
    with pytest.raises(ValueError, match="bias-free output layer"):
        chg.shapley_from_factors(f, gradient="bias")
    with pytest.raises(ValueError, match="output layer has no bias"):
        EpochValuer(9, gradient="bias").value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4))
    with pytest.raises(ValueError, match="bias-free output layer"):
        chg.factored_shapley(f.err, None, f.loss, bias=False)


def _binary(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double()


@pytest.mark.parametrize("weighting,gradient", [("chg", "full"), ("gradient", "full"), ("chg", "bias")])
def test_issue_instance_one_logit_bce_head(weighting, gradient):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    model = _binary()
    got = EpochValuer(20, utility=weighting, gradient=gradient).value_epoch(
        model, DataLoader(TensorDataset(X, y), batch_size=4))
    close(got, dense_values(model, model[-1], _samples(X, y), weighting, gradient))
    f = compute_factors(model, X, y)  # the loss is BCE-with-logits, per sample
    z = model(X)
    torch.testing.assert_close(f.loss, nn.BCEWithLogitsLoss(reduction="none")(z[:, 0], y.double()).detach(),
                               rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(f.err, (torch.sigmoid(z) - y[:, None]).detach(), rtol=1e-14, atol=1e-15)


def test_one_logit_head_other_inputs():
    """All labels 0 (not all-zero values), float (B, 1) targets as BCEWithLogitsLoss takes them, value_data training
    with BCE, per-class games; labels outside {0, 1} are an error before any row is valued."""
    g = torch.Generator().manual_seed(5)
    X = torch.randn(12, 3, generator=g, dtype=torch.float64)
    zeros = torch.zeros(12, dtype=torch.int64)
    model = _binary(1)
    got = EpochValuer(12).value_epoch(model, DataLoader(TensorDataset(X, zeros), batch_size=5))
    want = dense_values(model, model[-1], _samples(X, zeros))
    close(got, want)
    assert want.abs().max() > 1e-6  # the oracle's values are not all zero, so the test sees a zero answer
    yf = (X[:, 1] > 0).double()[:, None]  # (B, 1) float targets
    with LastLayerTap(model) as tap:
        f = tap.factors(model(X), yf)
    close(chg.shapley_from_factors(f), dense_values(model, model[-1], _samples(X, yf.long())))
    y = (X[:, 1] > 0).long()
    close(value_data(model, TensorDataset(X, y), epochs=2, lr=0.0, optimizer="sgd", momentum=0.0, batch_size=5,
                     per_class=True),
          dense_values(model, model[-1], _samples(X, y), groups=y))
    from chg.lastlayer import per_sample_loss
    before = per_sample_loss(model(X), y).mean().item()
    value_data(model, TensorDataset(X, y), epochs=30, lr=0.05, batch_size=4)  # trains with BCE: the loss drops
    assert per_sample_loss(model(X), y).mean().item() < 0.8 * before
    bad = torch.tensor([0, 1, 2, 0] * 3)
    valuer = EpochValuer(12)
    with pytest.raises(ValueError, match=r"needs targets 0 or 1, got range \[0, 2\]"):
        valuer.value_epoch(model, DataLoader(TensorDataset(X, bad), batch_size=5))
    with pytest.raises(ValueError, match="soft targets"):
        factors_from_logits(torch.zeros(2, 1), torch.tensor([0.5, 1.0]), torch.zeros(2, 3))


def test_a_head_replaced_after_the_tap_was_built_is_a_clear_error():
    """timm's reset_classifier (or assigning a new head) between epochs: the tap built once refuses to go on with
    another head instead of valuing a different game silently; a new tap on the new head works."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(8, 4)
    tap = LastLayerTap(model)
    with tap:
        tap.read(model(x))
    model[2] = nn.Linear(6, 3)  # the head replaced
    with tap, pytest.raises(RuntimeError, match="output layer was replaced since the tap was built"):
        tap.read(model(x))
    with LastLayerTap(model) as fresh:
        logits, feat = fresh.read(model(x))
    assert logits.shape == (8, 3) and feat.shape == (8, 6)


def test_labels_out_of_range_name_the_verb_called_and_the_row_of_the_data():
    """Review 2: value_data on labels 1..3 with 3 logits said 'add_logits: targets must lie in [0, 3), got range
    [1, 3] (first in batch 0 of this epoch, at its position 130)' — a verb the user never called and a batch of the
    separate pass's own. The rows of a separate pass are named as rows of the data, under the verb called, with the
    fix (labels 0..C-1: pandas.factorize, LabelEncoder); a loop of the user's own keeps its verb and batches."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(150, 4, generator=g, dtype=torch.float64)
    y = torch.arange(150) // 50 + 1  # 1..3: the first 3 is row 100
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    fix = r"class labels must be 0..2, one per output of the output layer — encode them \(codes, classes = " \
          r"pandas.factorize\(y\), or sklearn.preprocessing.LabelEncoder\)"
    tail = rf"got range \[1, 3\] \(first outside it: row 100 of the data, target 3\): {fix}"
    with pytest.raises(ValueError, match=rf"^value_epoch: targets must lie in \[0, 3\), {tail}"):
        EpochValuer(150).value_epoch(model, DataLoader(TensorDataset(X, y), batch_size=32))
    with pytest.raises(ValueError, match=rf"^value_data: targets must lie in \[0, 3\), {tail}"):
        chg.separate_pass(EpochValuer(150), model, DataLoader(TensorDataset(X, y), batch_size=32),
                          caller="value_data")
    with pytest.raises(ValueError, match=rf"^value_data: targets must lie in \[0, 3\), {tail}"):
        value_data(model, (X, y), epochs=1)
    ride = (rf"^value_data: targets must lie in \[0, 3\), got range \[\d, 3\] \(first outside it in this batch: row "
            rf"\d+ of the data, target 3\): {fix}")
    with pytest.raises(ValueError, match=ride):  # ride-along: the training batch's check, the same message
        value_data(model, (X, y), epochs=1, mode="ride")
    shuffled = DataLoader(chg.IndexedDataset(TensorDataset(X, y)), batch_size=32, shuffle=True)
    with pytest.raises(ValueError, match=rf"^value_epoch: .*{tail}"):  # the data row, whatever the order
        EpochValuer(150).value_epoch(model, shuffled)
    binary = nn.Sequential(nn.Linear(4, 1)).double()
    with pytest.raises(ValueError, match=r"^value_epoch: a 1-logit head \(binary cross-entropy\) needs targets 0 or 1, "
                                         r"got range \[1, 3\] \(first outside it: row 50 of the data, target 2\); for "
                                         r"more classes give the output layer one output per class"):
        EpochValuer(150).value_epoch(binary, DataLoader(TensorDataset(X, y), batch_size=32))
    valuer = EpochValuer(150)  # the user's own loop: the verb and the batch it called with
    valuer.add_logits(torch.arange(150), torch.randn(150, 3), y, torch.randn(150, 5))
    with pytest.raises(ValueError, match=rf"^add_logits: targets must lie in \[0, 3\), got range \[1, 3\] \(first in "
                                         rf"batch 0 of this epoch, at its position 100\): {fix}"):
        valuer.end_epoch()


def test_an_error_mid_epoch_in_the_training_loop_drops_the_epochs_rows():
    """train_and_value (behind value_data, chg value and the OpenDataVal plugin) stopped by an error in the middle of
    a ride-along epoch drops that epoch's rows (EpochValuer.discard_epoch): a valuer given from outside, used again,
    starts its next epoch empty — before, the rows stayed and would have played in it."""
    from chg.loop import ValueDataConfig, train_and_value
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, 4, generator=g, dtype=torch.float64), torch.arange(40) % 3
    model = nn.Sequential(nn.Linear(4, 3)).double()
    calls = []

    def loss_fn(out, logits, targets, index):
        calls.append(1)
        if len(calls) == 8:  # epoch 1, its 3rd batch of 5
            raise RuntimeError("simulated")
        return torch.nn.functional.cross_entropy(logits, targets)
    valuer = EpochValuer(40)
    with pytest.raises(RuntimeError, match="simulated"):
        train_and_value(model, TensorDataset(X, y), None, ValueDataConfig(epochs=3, batch_size=8, mode="ride",
                                                                          progress=False), valuer, loss_fn=loss_fn)
    assert len(valuer.epoch_values) == 1 and valuer.store.size == 0
