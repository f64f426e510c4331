"""Issue 22, item 2: the loss practitioners train with — class weights and label smoothing — valued as trained.

Oracles: ``torch.nn.functional.cross_entropy(..., weight, label_smoothing, reduction="none")`` and its autograd
gradient with respect to the logits (for the factors), and per-sample autograd of the output layer under that loss
followed by Theorem 1 on the dense vectors (tests/test_edges_oracle.py) for the values. Tolerances: 1e-12 relative in
float64."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from test_edges_oracle import close, dense_values

import chg
from chg import EpochValuer, loss_and_error
from chg.lastlayer import check_loss


def _autograd(z, y, weight, s):
    z = z.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(z, y, weight=weight, label_smoothing=s, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), z)  # rows are independent: row i of the grad is ∂l_i/∂z_i
    return loss.detach(), grad


@pytest.mark.parametrize("C", [2, 3, 7])
@pytest.mark.parametrize("s", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_error_equal_autograd_of_cross_entropy(C, s, weighted):
    g = torch.Generator().manual_seed(C * 10 + int(s * 10))
    z = 3 * torch.randn(11, C, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (11,), generator=g)
    w = torch.rand(C, generator=g, dtype=torch.float64) * 4 + 0.1 if weighted else None
    want_l, want_e = _autograd(z, y, w, s)
    got_l, got_e = loss_and_error(z, y, weight=w, label_smoothing=s)
    torch.testing.assert_close(got_l, want_l, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got_e, want_e, rtol=1e-12, atol=1e-14)
    # a list or numpy array of weights is the same loss
    if weighted:
        l2, e2 = loss_and_error(z, y, weight=w.tolist(), label_smoothing=s)
        torch.testing.assert_close((l2, e2), (got_l, got_e), rtol=0, atol=0)


def test_unweighted_unsmoothed_path_is_the_plain_cross_entropy():
    """weight=None, s=0 takes the fast path; weight=ones takes the general one: both equal autograd."""
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.arange(8) % 4
    a = loss_and_error(z, y)
    b = loss_and_error(z, y, weight=torch.ones(4, dtype=torch.float64))
    want = _autograd(z, y, None, 0.0)
    for got in (a, b):
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-14)


def _net(seed=0, c=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, c)).double()


@pytest.mark.parametrize("weight,s", [([0.2, 1.0, 5.0], 0.0), (None, 0.1), ([0.2, 1.0, 5.0], 0.1)])
@pytest.mark.parametrize("per_class", [False, True])
def test_nine_rows_values_equal_per_sample_autograd_of_the_trained_loss(weight, s, per_class):
    """The case the issue names: 9 rows, 3 classes, class weights [0.2, 1, 5] (and smoothing): EpochValuer's values
    equal Theorem 1 on per-sample autograd gradients of ``F.cross_entropy(weight, label_smoothing)``, whole pool and
    per class, in batches that split the classes."""
    model = _net()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1, 0, 2, 2, 1])
    wt = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    samples = [(x[i:i + 1], y[i:i + 1]) for i in range(9)]
    want = dense_values(model, model[-1], samples, groups=y if per_class else None, weight=wt, label_smoothing=s)
    got = EpochValuer(9, per_class=per_class, weight=weight, label_smoothing=s).value_epoch(
        model, DataLoader(TensorDataset(x, y), batch_size=4))
    close(got, want, rtol=1e-12)
    plain = dense_values(model, model[-1], samples, groups=y if per_class else None)
    assert (want - plain).abs().max() > 1e-3 * plain.abs().max()  # the weighted loss changes the values: not vacuous


def test_value_data_trains_and_values_with_the_weighted_loss():
    """value_data(weight=...) trains on the weighted loss: its model differs from the unweighted run's, and the
    values it returns are finite for every row."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=g), torch.arange(30) % 3
    data = TensorDataset(x, y)
    a = chg.value_data(_net().float(), data, epochs=2, batch_size=10, seed=0)
    b = chg.value_data(_net().float(), data, epochs=2, batch_size=10, seed=0, weight=[0.2, 1.0, 5.0])
    assert a.shape == b.shape == (30,)
    assert torch.isfinite(b.to_tensor()).all()
    assert not torch.allclose(a.to_tensor(), b.to_tensor())


@pytest.mark.parametrize("kw,err", [({"weight": [1.0, 2.0]}, ValueError), ({"weight": [1.0, -1.0, 1.0]}, ValueError),
                                    ({"weight": [1.0, float("nan"), 1.0]}, ValueError),
                                    ({"label_smoothing": 1.5}, ValueError), ({"label_smoothing": "0.1"}, TypeError)])
def test_bad_weight_or_smoothing_is_refused_with_a_clear_error(kw, err):
    z, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    with pytest.raises(err):
        loss_and_error(z, y, **kw)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_weight_tensor_is_a_weight(dtype):
    """A bfloat16 / float16 weight tensor is the weight its values are (review: bfloat16 was refused as 'got Tensor',
    NumPy having no bfloat16); [0.25, 1, 4] are exact in both, so the values equal float64's."""
    w = [0.25, 1.0, 4.0]
    assert check_loss(3, torch.tensor(w, dtype=dtype)).tolist() == w
    model = _net()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1, 0, 2, 2, 1])
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    want = EpochValuer(9, weight=torch.tensor(w, dtype=torch.float64)).value_epoch(model, loader)
    close(EpochValuer(9, weight=torch.tensor(w, dtype=dtype)).value_epoch(model, loader), want, rtol=0)


@pytest.mark.parametrize("weight", [2.0, 2, torch.tensor(2.0), torch.tensor(2.0, dtype=torch.bfloat16)])
@pytest.mark.parametrize("C", [3, None])
def test_a_single_number_as_weight_is_refused_clearly(weight, C):
    """A scalar or 0-d tensor is not one weight per class (review: raw 'len() of a 0-d tensor'); with C not known yet
    (None) the length is not checked, the rest is."""
    what = "C = 3 numbers, one per class" if C else "one number per class"
    with pytest.raises(ValueError, match=rf"weight must be {what} \(a 1-D tensor, array or list\), got the single "
                                         r"number 2\.0"):
        check_loss(C, weight)
    if C:
        with pytest.raises(ValueError, match="got the single number 2.0"):
            loss_and_error(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), weight=weight)
    else:
        assert check_loss(None, [1.0, 2.0, 3.0, 4.0]).shape == (4,)
    with pytest.raises(TypeError, match="got a torch.complex64 tensor"):
        check_loss(C, torch.ones(3, dtype=torch.complex64))


def test_a_weight_of_another_length_is_refused_at_the_first_batch():
    """C is known at the epoch's first batch: a weight for 2 classes on a 3-class head is refused there, not after
    the epoch's training (found by review)."""
    v = EpochValuer(8, weight=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"add_logits: weight must have one entry per class, shape \(3,\), got \(2,\)"):
        v.add_logits(torch.arange(4), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.randn(4, 5))
    assert v.store.size == 0


def test_a_checkpoint_resumes_only_under_the_loss_it_was_valued_with(tmp_path):
    """state_dict keeps the loss (weights, smoothing): a checkpoint of plain cross-entropy does not load into a
    weighted valuer, nor one smoothed at 0.1 into one at 0.2 — their epochs are of other games (found by review);
    the same loss round-trips through torch.save / torch.load(weights_only=True)."""
    g = torch.Generator().manual_seed(0)
    z, h, y = torch.randn(8, 3, generator=g), torch.randn(8, 5, generator=g), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    made = {}
    for key, kw in {"plain": {}, "w": {"weight": [1.0, 2.0, 3.0]}, "s1": {"label_smoothing": 0.1},
                    "s2": {"label_smoothing": 0.2}}.items():
        v = EpochValuer(8, **kw)
        v.add_logits(torch.arange(8), z, y, h)
        v.end_epoch()
        torch.save(v.state_dict(), tmp_path / f"{key}.pt")
        made[key] = kw
    for have, kw in made.items():
        for want, kw2 in made.items():
            v = EpochValuer(8, **kw2)
            state = torch.load(tmp_path / f"{have}.pt", weights_only=True)
            if have == want:
                v.load_state_dict(state)
                assert len(v.epoch_values) == 1
            else:
                with pytest.raises(ValueError, match="valued under another loss"):
                    v.load_state_dict(state)
    old = torch.load(tmp_path / "plain.pt", weights_only=True)
    del old["loss"]  # a checkpoint from before the loss was kept: plain cross-entropy
    EpochValuer(8).load_state_dict(old)
    with pytest.raises(ValueError, match="valued under another loss"):
        EpochValuer(8, weight=[1.0, 2.0, 3.0]).load_state_dict(old)


@pytest.mark.parametrize("weight", [2.0, torch.tensor(2.0)])
def test_a_single_number_as_the_valuers_weight_is_refused_with_the_reason(weight):
    """EpochValuer / StreamingValuer(weight=2.0): the clear message (was Python's "object of type 'float' has no
    len()" from the valuer's own constructor)."""
    from chg.streaming import StreamingValuer
    for cls in (chg.EpochValuer, StreamingValuer):
        with pytest.raises(ValueError, match="weight must be one number per class.*single number 2"):
            cls(5, weight=weight)


def test_the_trainer_callbacks_loss_check_takes_a_bfloat16_weight():
    """The callbacks' gradient check converts the class weights as check_loss does (a bfloat16 tensor included; its
    own NumPy conversion refused one): trained with those weights, the check settles and matches."""
    from chg.integrations.rows import LossCheck
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(12) % 3
    w = torch.tensor([1.0, 2.0, 5.0], dtype=torch.bfloat16)
    check = LossCheck(weight=w)
    check.watch(z, y)
    F.cross_entropy(z, y, weight=w.double()).backward()
    assert check.done and check.checked == 1


def test_class_weights_for_a_one_logit_head_say_so_at_once():
    """Review 2: value_data(nn.Linear(30, 1), (X, y), weight=[1.0, 3.0]) said 'weight must have one entry per class,
    shape (1,), got (2,)', and following that, weight=[3.0] said that weights apply only to a softmax head. The second
    message — the cause — comes first now, whatever the weight's length, from every entry point."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(20, 30, generator=g), torch.arange(20) % 2
    for weight in ([1.0, 3.0], [3.0], torch.tensor([1.0, 2.0, 3.0])):
        with pytest.raises(ValueError, match=r"weight and label_smoothing apply to a softmax head \(C >= 2, "
                                             r"cross-entropy\); a 1-logit head .* pass neither"):
            check_loss(1, weight)
        with pytest.raises(ValueError, match=r"^separate_pass: weight and label_smoothing apply to a softmax head|"
                                             r"^value_data: weight and label_smoothing apply to a softmax head"):
            chg.value_data(nn.Linear(30, 1), (X, y), weight=weight, epochs=1)
        with pytest.raises(ValueError, match=r"^add_logits: weight and label_smoothing apply to a softmax head"):
            EpochValuer(20, weight=weight).add_logits(torch.arange(4), torch.randn(4, 1), y[:4], torch.randn(4, 5))
