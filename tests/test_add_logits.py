"""EpochValuer.add_logits (ride-along's cheap step: factors made once at end_epoch) against two oracles: the
per-batch path add(indices, factors_from_logits(...)) bit for bit, and per-sample autograd + chg_shapley (Theorem 1
on dense vectors) for the values themselves."""
import pytest
import torch
import torch.nn.functional as F

from chg import chg_shapley
from chg.lastlayer import factors_from_logits
from chg.valuation import EpochValuer, RepeatedRowsWarning

N, C, D = 37, 4, 6


def batches(seed, n=N, c=C, d=D, dtype=torch.float32, batch=8):
    """Random (rows, logits, targets, feat) batches covering 0..n-1 once, in a shuffled order."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    out = []
    for b in range(0, n, batch):
        rows = perm[b:b + batch]
        z = (3 * torch.randn(len(rows), c, generator=g, dtype=torch.float64)).to(dtype)
        y = torch.randint(max(c, 2), (len(rows),), generator=g)
        h = torch.randn(len(rows), d, generator=g, dtype=torch.float64).to(dtype)
        out.append((rows, z, y, h))
    return out


def both_paths(bs, bias=True, **kw):
    """The epoch's values through add_logits and through add(factors_from_logits(...))."""
    lazy, eager = EpochValuer(N, **kw), EpochValuer(N, **kw)
    for rows, z, y, h in bs:
        lazy.add_logits(rows, z, y, h, bias)
        eager.add(rows, factors_from_logits(z, y, h, bias), y.long())
    return lazy.end_epoch(), eager.end_epoch()


@pytest.mark.parametrize("kw", [{}, {"per_class": True}, {"utility": "gradient"}, {"utility": "hardness"},
                                {"gradient": "bias"}, {"skip_epochs": 0, "partial_epochs": True}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_add_logits_gives_the_per_batch_values_bit_for_bit(kw, dtype):
    lazy, eager = both_paths(batches(0, dtype=dtype), **kw)
    assert lazy.dtype == torch.float64 and bool(torch.isfinite(lazy).all())
    assert torch.equal(lazy, eager)


def test_add_logits_one_logit_head_and_no_bias():
    bs = [(r, z, (y % 2).float(), h) for r, z, y, h in batches(1, c=1)]  # BCE targets 0.0 / 1.0
    lazy, eager = both_paths(bs)
    assert torch.equal(lazy, eager)
    lazy, eager = both_paths(batches(2), bias=False)
    assert torch.equal(lazy, eager)


def test_add_logits_matches_per_sample_autograd():
    """The oracle: x_i = l_i ∇_{[W|b]} l_i by autograd of a real last layer, Theorem 1 on the dense vectors."""
    g = torch.Generator().manual_seed(3)
    head = torch.nn.Linear(D, C).double()
    h = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randint(C, (N,), generator=g)
    rows = []
    for i in range(N):
        loss = F.cross_entropy(head(h[i:i + 1]), y[i:i + 1])
        gw, gb = torch.autograd.grad(loss, [head.weight, head.bias])
        rows.append((loss.detach() * torch.cat([gw, gb[:, None]], 1)).reshape(-1))
    oracle = chg_shapley(torch.stack(rows))
    valuer = EpochValuer(N)
    perm = torch.randperm(N, generator=g)
    for b in range(0, N, 5):
        r = perm[b:b + 5]
        valuer.add_logits(r, head(h[r]), y[r], h[r], bias=True)
    torch.testing.assert_close(valuer.end_epoch(), oracle, rtol=1e-10, atol=1e-13)


def test_a_row_added_again_keeps_its_last_record_whichever_method():
    bs = batches(4)
    other = batches(5)  # the same rows with other logits
    mixed, ref = EpochValuer(N), EpochValuer(N)
    for rows, z, y, h in bs:
        mixed.add_logits(rows, z, y, h)
    for rows, z, y, h in other:  # the same rows (another order) with other logits: every add_logits is replaced
        mixed.add(rows, factors_from_logits(z, y, h), y)
        ref.add(rows, factors_from_logits(z, y, h), y)
    for rows, z, y, h in bs[:2]:
        mixed.add(rows, factors_from_logits(z, y, h), y)
        mixed.add_logits(rows, z, y, h)  # and back: the last record is the add_logits one, same numbers
        ref.add(rows, factors_from_logits(z, y, h), y)
    # the same rows; float32 features stored centred on each valuer's first batch (other first batches: other
    # roundings of h − μ), so equal to float32 precision rather than bit for bit
    with pytest.warns(RepeatedRowsWarning):  # rows added again: warned, each counts once
        want = ref.end_epoch()
    with pytest.warns(RepeatedRowsWarning):
        got = mixed.end_epoch()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * want.abs().max().item())


def test_the_next_epoch_starts_empty():
    valuer = EpochValuer(N)
    for rows, z, y, h in batches(6):
        valuer.add_logits(rows, z, y, h)
    first = valuer.end_epoch()
    eager = EpochValuer(N)
    for rows, z, y, h in batches(7):
        valuer.add_logits(rows, z, y, h)
        eager.add(rows, factors_from_logits(z, y, h), y)
    assert torch.equal(valuer.end_epoch(), eager.end_epoch())
    assert torch.equal(valuer.epoch_values[0], first)


def test_add_logits_bad_input():
    rows, z, y, h = batches(8)[0]
    for bad, message in (((rows, z, y + C, h), r"add_logits: targets must lie in \[0, 4\), got range \[4, 7\] "
                          r"\(first in batch 1 of this epoch"),
                         ((rows + N, z, y, h), rf"add_logits: indices must lie in \[0, {N}\).*batch 1 of this epoch")):
        late = EpochValuer(N)  # value checks wait for end_epoch (no host sync per batch), naming the batch
        late.add_logits(rows, z, y, h)
        late.add_logits(*bad)
        with pytest.raises(ValueError, match=message):
            late.end_epoch()
    v = EpochValuer(N)
    with pytest.raises(ValueError, match="indices must be integers"):
        v.add_logits(rows.double(), z, y, h)
    with pytest.raises(ValueError, match="8 indices, 7 rows of logits"):
        v.add_logits(rows, z[:7], y[:7], h[:7])
    with pytest.raises(ValueError, match=r"feat must be a \(B, D\) tensor"):
        v.add_logits(rows, z, y, h[0])
    v.add_logits(rows, z, y, h)
    with pytest.raises(ValueError, match="C=5, D=6 but earlier batches had C=4, D=6"):
        v.add_logits(rows, torch.randn(len(rows), 5), y, h)
    with pytest.raises(ValueError, match="head with bias and of a head without bias"):
        v.add_logits(rows, z, y, h, bias=False)
    nan = z.clone()
    nan[0, 0] = float("nan")
    v2 = EpochValuer(len(rows))
    v2.add_logits(torch.arange(len(rows)), nan, y, h)
    with pytest.raises(ValueError, match="end_epoch: logits contain NaN or Inf.*add_logits"):
        v2.end_epoch()


def test_nan_logits_name_the_batch_and_the_row():
    """NaN logits (e.g. from a NaN feature) are found at end_epoch, named by batch, position and data row."""
    v = EpochValuer(10)
    z = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    z[7, 1] = float("nan")
    f = torch.randn(10, 4)
    order = torch.tensor([3, 1, 0, 9, 8, 7, 2, 4, 6, 5])
    v.add_logits(order[:5], z[order[:5]], torch.zeros(5, dtype=torch.long), f[:5])
    v.add_logits(order[5:], z[order[5:]], torch.zeros(5, dtype=torch.long), f[5:])
    with pytest.raises(ValueError, match=r"NaN or Inf.*first in batch 1 of this epoch, at its position 0, row 7 of "
                                         r"the data"):
        v.end_epoch()
