"""Nothing is lost with chg.streaming.StreamingValuer: every row enters each epoch (the rule of EpochValuer, with
the same ``partial_epochs``), an empty batch is accepted, an epoch cut short is dropped with ``discard_epoch``, a head
changed between epochs is refused, and a run checkpointed after an epoch (``state_dict``, through ``torch.save`` and a
weights-only ``torch.load``) resumes to the values of the uninterrupted run, bit for bit."""
import io

import pytest
import torch
from torch import nn

import chg
from chg.streaming import StreamingValuer

N, C, D, B = 23, 3, 4, 5


def checkpoint(model, opt, order, valuer) -> dict:
    """What a run saves after an epoch (model, optimiser, shuffling generator, valuer), through torch.save and a
    weights-only torch.load, as a resumed run reads it."""
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "order": order.get_state(),
                "valuer": valuer.state_dict()}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _run(valuer, epochs, seed=0, first=0, lr=0.1, state=None):
    """Train a small model ``epochs`` epochs (SGD, a new order each epoch), ride-along into ``valuer``; the model,
    optimiser and order generator start from ``state`` (a checkpoint after epoch ``first``) when given. Returns the
    checkpoint after the last epoch."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.randn(N, 6, generator=g, dtype=torch.float64)
    y = torch.arange(N) % C
    model = nn.Sequential(nn.Linear(6, D), nn.Tanh(), nn.Linear(D, C)).double()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed + 1)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        order.set_state(state["order"])
        valuer.load_state_dict(state["valuer"])
    tap = chg.LastLayerTap(model)
    for _ in range(first, epochs):
        perm = torch.randperm(N, generator=order)
        with tap:
            for a in range(0, N, B):
                idx = perm[a:a + B]
                logits, feat = tap.read(model(x[idx]))
                valuer.add_logits(idx, logits, y[idx], feat, tap.bias)
                opt.zero_grad()
                nn.functional.cross_entropy(logits, y[idx]).backward()
                opt.step()
        valuer.end_epoch()
    return checkpoint(model, opt, order, valuer)


def _rows(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, C, generator=g, dtype=torch.float64), torch.arange(n) % C,
            torch.randn(n, D, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("kw", [{}, {"per_class": True}, {"utility": "hardness", "skip_epochs": 1}])
def test_a_run_resumed_from_a_checkpoint_after_an_epoch_equals_the_uninterrupted_run(kw):
    whole = StreamingValuer(N, **kw)
    _run(whole, 4)
    state = _run(StreamingValuer(N, **kw), 2)  # killed after epoch 2; a new process resumes
    resumed = StreamingValuer(N, **kw)
    _run(resumed, 4, first=2, state=state)
    assert resumed.epochs == 4
    assert torch.equal(torch.stack(resumed.epoch_values), torch.stack(whole.epoch_values))
    assert (resumed.values().values == whole.values().values).all()


def test_a_checkpoint_of_another_valuer_or_damaged_is_refused():
    state = _run(StreamingValuer(N), 2)["valuer"]
    with pytest.raises(ValueError, match="other n or options"):
        StreamingValuer(N, per_class=True).load_state_dict(state)
    with pytest.raises(ValueError, match="another loss"):
        StreamingValuer(N, label_smoothing=0.1).load_state_dict(state)
    cut = {**state, "epoch_values": [v[:-1] for v in state["epoch_values"]]}
    with pytest.raises(ValueError, match=f"epoch 0 of the checkpoint holds {N - 1} values, but this valuer has {N} "
                                         "rows"):
        StreamingValuer(N).load_state_dict(cut)
    with pytest.raises(ValueError, match="no statistics of the last one"):
        StreamingValuer(N).load_state_dict({**state, "previous": None})


def test_a_row_not_added_is_an_error_unless_partial_epochs():
    """As EpochValuer: 2 of 10 rows missing is an error naming how many (the epoch dropped); partial_epochs=True
    values the rows seen, with a warning, and NaN for the others."""
    L, Y, F = _rows(10)
    s = StreamingValuer(10)
    s.add_logits(torch.arange(8), L[:8], Y[:8], F[:8])
    with pytest.raises(ValueError, match=r"end_epoch: 2 of the 10 rows were not added this epoch \(e\.g\. rows \[8, "
                                         r"9\]\).*StreamingValuer\(\.\.\., partial_epochs=True\)"):
        s.end_epoch()
    assert s.epochs == 0 and s.discard_epoch() == 0  # the epoch was dropped
    p = StreamingValuer(10, partial_epochs=True)
    p.add_logits(torch.arange(8), L[:8], Y[:8], F[:8])
    with pytest.warns(UserWarning, match="StreamingValuer.end_epoch: 2 of the 10 rows were not added"):
        v = p.end_epoch()
    assert torch.isnan(v[8:]).all() and torch.isfinite(v[:8]).all()


def test_an_empty_batch_is_accepted_and_changes_nothing():
    L, Y, F = _rows()
    a, b = StreamingValuer(N), StreamingValuer(N)
    for v in (a, b):
        if v is a:
            assert v.add_logits(torch.arange(0), L[:0], Y[:0], F[:0]).shape == (0,)
        v.add_logits(torch.arange(N), L, Y, F)
        v.end_epoch()
    assert torch.equal(a.epoch_values[0], b.epoch_values[0])


def test_discard_epoch_drops_a_cut_short_epoch():
    """Rows added before an error are dropped with discard_epoch; the rerun equals a run without the error (values
    and the statistics the next epoch is valued against)."""
    L, Y, F = _rows()
    L2, _, F2 = _rows(seed=5)
    a, b = StreamingValuer(N), StreamingValuer(N)
    a.add_logits(torch.arange(10), L2[:10], Y[:10], F2[:10])  # the cut-short epoch, other factors
    assert a.discard_epoch() == 10
    for v in (a, b):
        for e in range(2):
            v.add_logits(torch.arange(N), L, Y, F)
            v.end_epoch()
    assert torch.equal(torch.stack(a.epoch_values), torch.stack(b.epoch_values))


def test_a_head_changed_between_epochs_is_refused():
    L, Y, F = _rows()
    s = StreamingValuer(N)
    s.add_logits(torch.arange(N), L, Y, F)
    s.end_epoch()
    with pytest.raises(ValueError, match=r"add_logits: values of different heads are not averaged.*3 output\(s\) on 4 "
                                         r"features, with a bias, this one has 3 output\(s\) on 5 features"):
        s.add_logits(torch.arange(N), L, Y, torch.randn(N, 5, dtype=torch.float64))
    state = s.state_dict()
    assert state["head"] == (C, D, True)
    resumed = StreamingValuer(N)
    resumed.load_state_dict(state)
    with pytest.raises(ValueError, match="values of different heads are not averaged"):
        resumed.add_logits(torch.arange(N), L, Y, F, False)
    resumed.add_logits(torch.arange(N), L, Y, F, True)
    assert resumed.end_epoch().shape == (N,) and resumed.epochs == 2
