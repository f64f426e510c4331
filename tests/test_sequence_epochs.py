"""Nothing is lost with chg.sequence.SequenceValuer: a tuple batch's third element is read as the rows' index only
when the loader is known to carry it (chg.lastlayer.carries_index, the rule of the classifier's separate pass); a run
checkpointed after an epoch (``state_dict``, through ``torch.save`` and a weights-only ``torch.load``) resumes to the
values of the uninterrupted run, bit for bit; an epoch cut short is dropped with ``discard_epoch``."""
import copy

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import chg
from chg.sequence import SequenceValuer

pytest.importorskip("transformers")
from test_sequence import _bert, _docs, _gpt2  # noqa: E402
from test_streaming_epochs import checkpoint  # noqa: E402


def _tensors(n=8):
    items = _docs(n)
    return torch.stack([it["input_ids"] for it in items]), torch.stack([it["labels"] for it in items])


# ---- 5. which element is the index ----------------------------------------------------------------------------------

def test_a_third_element_is_the_index_only_over_an_indexed_data_set():
    """(input_ids, labels, record id) batches: a shuffled loader over a plain TensorDataset is refused (the third
    element may be anything), a sequential one numbers the rows in order (the record ids, 100..107, are not read),
    and a shuffled loader over chg.IndexedDataset reads the index: all three give the same values."""
    ids, labels = _tensors()
    records = torch.arange(100, 108)
    model = _gpt2()
    want = SequenceValuer(8, shift=True).value_epoch(model, DataLoader(TensorDataset(ids, labels), batch_size=3))
    plain = TensorDataset(ids, labels, records)
    with pytest.raises(ValueError, match=r"value_epoch: the loader's batches are \(x, y, third element\), but its data "
                                         r"set \(TensorDataset\) is not a chg.IndexedDataset"):
        SequenceValuer(8, shift=True).value_epoch(
            model, DataLoader(plain, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(0)))
    got = SequenceValuer(8, shift=True).value_epoch(model, DataLoader(plain, batch_size=3))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    shuffled = DataLoader(chg.IndexedDataset(plain), batch_size=3, shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(SequenceValuer(8, shift=True).value_epoch(model, shuffled), want, rtol=1e-12,
                               atol=1e-14)


# ---- checkpoints and an epoch cut short ---------------------------------------------------------------------------

def _run(valuer, model_fn, epochs, first=0, state=None, crash=None):
    """Ride-along training of ``model_fn()`` on 7 documents, batches of 3 in a new order each epoch (Adam); from the
    checkpoint ``state`` (after epoch ``first``) when given; raises at ``crash`` = (epoch, batch) after adding. Returns
    the checkpoint after the last epoch (its ``"valuer"`` None: the valuer is left as it is)."""
    causal = valuer.unit == "sequence"
    items = _docs(7, causal=causal)
    model = model_fn().eval()  # dropout off: a resumed process does not replay the global random stream
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(4)
    if state is not None:
        state = copy.deepcopy(state)  # (the optimiser would update the checkpoint's tensors in place)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        order.set_state(state["order"])
        if state["valuer"] is not None:
            valuer.load_state_dict(state["valuer"])
    tap = chg.LastLayerTap(model, sequence=True)
    for epoch in range(first, epochs):
        perm = torch.randperm(7, generator=order)
        with tap:
            for b, a in enumerate(range(0, 7, 3)):
                rows = perm[a:a + 3]
                batch = {k: torch.stack([items[i][k] for i in rows]) for k in items[0]}
                logits, feat = tap.read(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
                valuer.add_logits(rows, logits, batch["labels"], feat, batch["attention_mask"], tap.bias)
                if crash == (epoch, b):
                    raise RuntimeError("out of memory (simulated)")
                loss = chg.sequence.sequence_loss(logits, batch["labels"], batch["attention_mask"], valuer.shift)
                opt.zero_grad()
                loss.mean().backward()
                opt.step()
        valuer.end_epoch()
    return checkpoint(model, opt, order, valuer)


@pytest.mark.parametrize("unit,model_fn,shift", [("sequence", _gpt2, True), ("token", _bert, False)])
def test_a_ride_along_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run(unit, model_fn, shift):
    whole = SequenceValuer(7, unit=unit, shift=shift)
    _run(whole, model_fn, 3)
    state = _run(SequenceValuer(7, unit=unit, shift=shift), model_fn, 2)
    resumed = SequenceValuer(7, unit=unit, shift=None)  # the shift comes from the checkpoint
    _run(resumed, model_fn, 3, first=2, state=state)
    assert resumed.shift is shift and resumed.epochs == 3
    torch.testing.assert_close(torch.stack(resumed.epoch_values), torch.stack(whole.epoch_values), rtol=0, atol=0,
                               equal_nan=True)  # bit for bit
    if unit == "token":
        assert (resumed.token_index == whole.token_index).all()


def test_a_sequence_checkpoint_of_another_valuer_or_damaged_is_refused():
    state = _run(SequenceValuer(7, shift=True), _gpt2, 1)["valuer"]
    with pytest.raises(ValueError, match="other n or options"):
        SequenceValuer(7, reduction="sum", shift=True).load_state_dict(state)
    with pytest.raises(ValueError, match="shift=True, this one shift=False"):
        SequenceValuer(7, shift=False).load_state_dict(state)
    cut = {**state, "epoch_values": [v[:-1] for v in state["epoch_values"]]}
    with pytest.raises(ValueError, match=r"epoch 0 of the checkpoint holds 6 values, but this valuer has 7 "
                                         r"sequences \(one value each\)"):
        SequenceValuer(7, shift=True).load_state_dict(cut)
    with pytest.raises(ValueError, match="skip_epochs=0, this one has skip_epochs=1"):
        SequenceValuer(7, shift=True, skip_epochs=1).load_state_dict(state)
    tokens = _run(SequenceValuer(7, unit="token", shift=True), _gpt2, 1)["valuer"]
    count = sum(t[0].shape[0] for t in tokens["tokens"])
    cut = {**tokens, "epoch_values": [v[:-2] for v in tokens["epoch_values"]]}
    with pytest.raises(ValueError, match=rf"holds {count - 2} values, but this valuer has {count} tokens"):
        SequenceValuer(7, unit="token", shift=True).load_state_dict(cut)
    with pytest.raises(ValueError, match="holds .* values, but this valuer has no record of its players"):
        SequenceValuer(7, unit="token", shift=True).load_state_dict({**tokens, "tokens": None})


def test_discard_epoch_lets_a_cut_short_epoch_run_again():
    """An epoch cut short after two batches: run again as it is, its sequences are 'added twice' (an error); after
    discard_epoch the rerun (model and optimiser restored from before the epoch, as a retry does) equals the run
    without the error, bit for bit."""
    state = _run(SequenceValuer(7, shift=True), _gpt2, 1)  # a checkpoint after the first epoch
    whole = SequenceValuer(7, shift=True)
    _run(whole, _gpt2, 2, first=1, state=state)
    valuer = SequenceValuer(7, shift=True)
    valuer.load_state_dict(state["valuer"])
    model_only = {**state, "valuer": None}
    with pytest.raises(RuntimeError, match="simulated"):
        _run(valuer, _gpt2, 2, first=1, state=model_only, crash=(1, 1))
    with pytest.raises(ValueError, match="a sequence was added twice in one epoch"):
        _run(valuer, _gpt2, 2, first=1, state=model_only)
    assert valuer.discard_epoch() == 6 and valuer.epochs == 1
    _run(valuer, _gpt2, 2, first=1, state=model_only)
    torch.testing.assert_close(torch.stack(valuer.epoch_values), torch.stack(whole.epoch_values), rtol=0, atol=0,
                               equal_nan=True)
