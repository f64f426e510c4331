"""chg.sequence: CHG Shapley of the documents (or tokens) a language model or token classifier trains on.

Oracles: per-sequence (per-token) autograd of the loss with respect to an UNTIED copy of the output layer (weight and
bias), x_i = l_i · g_i flattened, then Theorem 1 on the dense vectors (chg.chg_shapley) and exhaustive enumeration
of Definition 1 in exact rationals (chg.games.exact_shapley on the float64 vectors read as Fractions). Models: a tiny
GPT-2 (tied head, no bias, causal shift) and a tiny BERT token classifier (head with bias), both from configs, in
float64. The loss of the oracle is written here from F.cross_entropy on the scored tokens, not taken from chg.
"""
import copy
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import chg
from chg.games import chg_utility, exact_shapley
from chg.sequence import (SequenceValuer, causal_shift, pad_items, sequence_batch, sequence_loss,
                          sequence_shapley, value_sequences)

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-9


# ---- models and data ---------------------------------------------------------------------------------------------

def _gpt2(vocab=13, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=16, n_embd=8, n_layer=1, n_head=2, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, **kw)
    return transformers.GPT2LMHeadModel(cfg).to(dtype)


def _bert(labels=5, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=16, num_labels=labels)
    return transformers.BertForTokenClassification(cfg).to(dtype)


def _docs(n, T=9, vocab=13, seed=1, causal=True, num_labels=5, pad_from=None):
    """n dict items: input_ids, attention_mask (right padding on some rows), labels (-100 at padding and a few
    unscored positions). Causal: labels = input_ids; token classifier: random tags."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        ids = torch.randint(1, vocab, (T,), generator=g)
        length = T - (i % 3) if pad_from is None else pad_from[i]
        mask = (torch.arange(T) < length).long()
        labels = ids.clone() if causal else torch.randint(0, num_labels, (T,), generator=g)
        labels[mask == 0] = -100
        if i % 2 == 1:
            labels[2] = -100  # an unscored position inside the document
        items.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return items


# ---- the oracle: per-sequence autograd on an untied copy of the head -------------------------------------------

def _head(model):
    return model.lm_head if hasattr(model, "lm_head") else model.classifier


def _oracle_x(model, items, shift, reduction="mean", unit="sequence", utility="chg"):
    """(n, C·(D+bias)) dense x_i = l_i ∇_{[W|b]} l_i (or per token), in float64, eval mode."""
    model = copy.deepcopy(model).eval()
    head = _head(model)
    W = head.weight.detach().clone().requires_grad_(True)  # untied: GPT-2's wte is not touched
    b = None if head.bias is None else head.bias.detach().clone().requires_grad_(True)
    grabbed = {}
    hook = head.register_forward_hook(lambda m, i, o: grabbed.update(h=i[0].detach(), z=o.detach()))
    rows = []
    try:
        for it in items:
            with torch.no_grad():
                model(input_ids=it["input_ids"][None], attention_mask=it["attention_mask"][None])
            h = grabbed["h"][0]  # (T, D)
            z = h @ W.T + (b if b is not None else 0)  # (T, C), graph to the untied copy
            torch.testing.assert_close(z.detach(), grabbed["z"][0], rtol=1e-12, atol=1e-12)
            y, keep = it["labels"], it["attention_mask"].bool()
            if shift:
                z, y, keep = z[:-1], y[1:], keep[:-1] & keep[1:]
            scored = keep & (y != -100)
            tok = F.cross_entropy(z[scored], y[scored], reduction="none")  # (T_i,)
            losses = [tok] if unit == "token" else []
            if unit == "token":
                losses = list(tok)
            else:
                losses = [tok.mean() if reduction == "mean" else tok.sum()]
            for loss in losses:
                grads = torch.autograd.grad(loss, [W] + ([b] if b is not None else []), retain_graph=True)
                g = torch.cat([grads[0], grads[1][:, None]], 1) if b is not None else grads[0]
                rows.append((loss.detach() if utility == "chg" else 1.0) * g.reshape(-1))
    finally:
        hook.remove()
    return torch.stack(rows)


def _epoch0(model, items, **kw):
    """The exact (two-sweep) values at the initial parameters: epoch 0 of value_sequences in pass mode."""
    _, valuer = value_sequences(model, items, epochs=1, mode="pass", lr=1e-3, return_valuer=True, **kw)
    return valuer.epoch_values[0], valuer


# ---- oracle tests ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gpt2_values_equal_theorem1_on_autograd_gradients(reduction):
    model, items = _gpt2(), _docs(7)
    want = chg.chg_shapley(_oracle_x(model, items, shift=True, reduction=reduction))
    got, valuer = _epoch0(model, items, reduction=reduction, eval_batch_size=3)
    assert valuer.shift is True and got.shape == (7,)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-12)


class _MyLM(transformers.GPT2LMHeadModel):
    """A user's subclass of a causal LM (a class name of its own)."""


class _Wrapper(nn.Module):
    """A user's module around a causal LM: its forward calls the LM (output layer: the LM's lm_head)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask=None, **kw):
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, **kw)


class _RewardModel(nn.Module):
    """A causal LM as the backbone of another head (the last nn.Linear registered): not shifted."""

    def __init__(self, lm):
        super().__init__()
        self.lm, self.value = lm, nn.Linear(lm.config.n_embd, 3, dtype=torch.float64)


@pytest.mark.parametrize("make", ["subclass", "wrapper"])
def test_a_subclass_or_a_wrapper_of_a_causal_lm_is_shifted_and_equals_the_oracle(make):
    """``class MyLM(GPT2LMHeadModel)`` and a module of the user's around one were taken for token classifiers (no
    shift): other values than the oracle's, and value_sequences trained them to copy the current token. Now they are
    shifted, and valued as the GPT-2 itself; ``torch.compile``'s wrapper and DDP-style ``.module`` are causal too, a
    causal LM under another head is not."""
    from chg.sequence import causal_shift
    base, items = _gpt2(), _docs(6)
    if make == "subclass":
        model = _MyLM(base.config).to(torch.float64)
        model.load_state_dict(base.state_dict())
    else:
        model = _Wrapper(base)
    assert causal_shift(model) and causal_shift(torch.compile(base))
    aux = _Wrapper(base)  # the LM, and an auxiliary nn.Linear registered after it: layer= names the LM's head
    aux.extra = nn.Linear(2, 2, dtype=torch.float64)
    assert not causal_shift(aux)
    _, v = value_sequences(aux, items, epochs=1, mode="pass", lr=0.0, layer=base.lm_head, return_valuer=True)
    assert v.shift is True
    assert not causal_shift(_RewardModel(base)) and causal_shift(_RewardModel(base), base.lm_head)
    want = chg.chg_shapley(_oracle_x(base, items, shift=True))
    got, valuer = _epoch0(model, items, eval_batch_size=3)
    assert valuer.shift is True
    torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-12)


def test_gpt2_values_equal_exhaustive_enumeration_in_exact_rationals():
    model, items = _gpt2(), _docs(6)
    x = _oracle_x(model, items, shift=True)
    xf = [[Fraction(v) for v in row.tolist()] for row in x]  # the float64 vectors, exactly
    n = len(xf)
    alpha = [sum(col, Fraction(0)) / n for col in zip(*xf)]
    exact = exact_shapley(chg_utility(xf, alpha), n)
    got, _ = _epoch0(model, items, eval_batch_size=4)
    np.testing.assert_allclose(got.numpy(), [float(v) for v in exact], rtol=RTOL, atol=1e-12)
    assert abs(float(sum(exact)) - float(got.sum())) < 1e-9  # efficiency: Σφ = U(N)


def test_gpt2_head_is_tied_and_only_its_gradient_is_valued():
    model = _gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight and model.lm_head.bias is None
    assert causal_shift(model) and not causal_shift(_bert())


@pytest.mark.parametrize("unit", ["sequence", "token"])
def test_bert_token_classifier_equals_autograd(unit):
    model, items = _bert(), _docs(6, causal=False, vocab=20)
    want = chg.chg_shapley(_oracle_x(model, items, shift=False, unit=unit))
    got, valuer = _epoch0(model, items, unit=unit, eval_batch_size=4)
    assert valuer.shift is False
    torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-12)
    if unit == "token":  # players in (sequence, position) order, labelled with their tag
        idx = valuer.token_index
        assert idx.shape == (len(want), 2)
        tags = np.concatenate([it["labels"][it["labels"] != -100].numpy() for it in items])
        np.testing.assert_array_equal(valuer.values().labels, tags)


def test_token_unit_exact_enumeration_bert():
    model = _bert()
    items = _docs(2, T=5, causal=False, vocab=20, pad_from=[4, 3])  # 3 + 3 scored tokens (one -100 inside)
    x = _oracle_x(model, items, shift=False, unit="token")
    n = x.shape[0]
    assert 4 <= n <= 8
    xf = [[Fraction(v) for v in row.tolist()] for row in x]
    alpha = [sum(col, Fraction(0)) / n for col in zip(*xf)]
    exact = exact_shapley(chg_utility(xf, alpha), n)
    got, _ = _epoch0(model, items, unit="token")
    np.testing.assert_allclose(got.numpy(), [float(v) for v in exact], rtol=RTOL, atol=1e-12)


def test_gpt2_token_unit_equals_per_token_autograd():
    model, items = _gpt2(), _docs(4)
    want = chg.chg_shapley(_oracle_x(model, items, shift=True, unit="token"))
    got, valuer = _epoch0(model, items, unit="token", eval_batch_size=3)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-12)
    assert (valuer.token_index[:, 1] >= 1).all()  # causal: position 0 is never a target


def test_token_unit_with_left_padding_that_changes_between_epochs_keeps_its_players():
    """A decoder LM's collator pads on the left, so a document's padding changes with the other rows of its batch:
    the token positions were recorded in the padded row, and the second epoch raised "other scored positions than
    when first seen (4 then, 4 now)". Positions now count from each document's first attended token: every epoch
    values the same players, token_index is that of the right-padded run, and the values equal the per-token oracle
    (the model fixed; position_ids from the mask, so that GPT-2 sees each document as it is unpadded)."""
    from torch.utils.data import DataLoader
    model, items = _gpt2(), _docs(5)
    want = chg.chg_shapley(_oracle_x(model, items, shift=True, unit="token"))
    right = SequenceValuer(5, unit="token", shift=True)
    right.value_epoch(model, DataLoader(items, batch_size=5))
    kept = [it["attention_mask"].bool() for it in items]
    docs = [{"input_ids": it["input_ids"][k], "labels": it["labels"][k], "index": torch.tensor(i)}
            for i, (it, k) in enumerate(zip(items, kept))]

    def left_pad(batch):
        T = max(len(d["input_ids"]) for d in batch)
        ids = torch.stack([F.pad(d["input_ids"], (T - len(d["input_ids"]), 0)) for d in batch])
        mask = torch.stack([F.pad(torch.ones_like(d["input_ids"]), (T - len(d["input_ids"]), 0)) for d in batch])
        labels = torch.stack([F.pad(d["labels"], (T - len(d["labels"]), 0), value=-100) for d in batch])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,  # positions from the first token:
                "position_ids": (mask.cumsum(1) - 1).clamp(min=0),  # GPT-2 then sees each document as unpadded
                "index": torch.stack([d["index"] for d in batch])}
    valuer = SequenceValuer(5, unit="token", shift=True)
    for size in (5, 2, 1):  # other rows, other left padding
        got = valuer.value_epoch(model, DataLoader(docs, batch_size=size, collate_fn=left_pad))
        torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-12)
    np.testing.assert_array_equal(valuer.token_index, right.token_index)


def test_gradient_utility_and_validation_alpha():
    model, items, valid = _gpt2(), _docs(6), _docs(3, seed=7)
    g = _oracle_x(model, items, shift=True, utility="gradient")
    got, _ = _epoch0(model, items, utility="gradient")
    torch.testing.assert_close(got, chg.chg_shapley(g), rtol=RTOL, atol=1e-12)
    x, xv = _oracle_x(model, items, shift=True), _oracle_x(model, valid, shift=True)
    got, _ = _epoch0(model, items, valid_dataset=valid, alpha="valid")
    torch.testing.assert_close(got, chg.chg_shapley(x, alpha=xv.mean(0)), rtol=RTOL, atol=1e-12)


def test_float32_model_close_to_float64_oracle():
    model = _gpt2()
    want = chg.chg_shapley(_oracle_x(model, _docs(6), shift=True))
    got, _ = _epoch0(model.float(), _docs(6))
    torch.testing.assert_close(got, want, rtol=2e-4, atol=1e-6 * float(want.abs().max()))


# ---- the maths of a batch: masks, shift, chunks ------------------------------------------------------------------

def _random_batch(B=5, T=7, C=11, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, C, generator=g, dtype=torch.float64) * 2
    h = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (B, T), generator=g)
    y[0, 2], y[1, :3] = -100, -100
    mask = torch.ones(B, T, dtype=torch.long)
    mask[2, 5:] = 0
    return z, y, h, mask


def test_masked_positions_do_not_matter_even_if_not_finite():
    z, y, h, mask = _random_batch()
    ref = sequence_shapley(z, y, h, mask)
    z2, h2, y2 = z.clone(), h.clone(), y.clone()
    off = (mask == 0) | (y == -100)
    z2[off], h2[off] = float("nan"), float("inf")
    y2[mask == 0] = 3  # a label under attention_mask 0 is not scored either
    assert torch.equal(sequence_shapley(z2, y2, h2, mask), ref)
    y3 = y.clone()
    y3[mask == 0] = -100
    assert torch.equal(sequence_shapley(z, y3, h, None), ref)  # the mask acts as -100 labels


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inputs_are_left_untouched(dtype):
    z, y, h, mask = (t.to(dtype) if t.dtype.is_floating_point else t for t in _random_batch())
    before = [t.clone() for t in (z, y, h, mask)]
    sequence_shapley(z, y, h, mask, shift=True, vocab_chunk=4)
    assert all(torch.equal(a, b) for a, b in zip(before, (z, y, h, mask)))


def test_causal_shift_is_logits_t_predict_label_t_plus_1():
    z, y, h, mask = _random_batch()
    shifted = sequence_shapley(z, y, h, mask, shift=True)
    m = mask.bool()
    manual = sequence_shapley(z[:, :-1], y[:, 1:], h[:, :-1], (m[:, :-1] & m[:, 1:]).long())
    assert torch.equal(shifted, manual)


def test_sequence_loss_is_huggingface_loss_of_one_document():
    model, it = _gpt2(), _docs(3)[2]
    out = model(input_ids=it["input_ids"][None], attention_mask=it["attention_mask"][None], labels=it["labels"][None])
    hf = out.loss.double()  # HuggingFace's ForCausalLMLoss takes the cross-entropy in float32
    mine = sequence_loss(out.logits, it["labels"][None], it["attention_mask"][None], shift=True)
    torch.testing.assert_close(mine[0], hf, rtol=1e-6, atol=0)
    summed = sequence_loss(out.logits, it["labels"][None], it["attention_mask"][None], shift=True, reduction="sum")
    torch.testing.assert_close(summed[0], hf * int((it["labels"][1:] != -100).sum()), rtol=1e-6, atol=0)


@pytest.mark.parametrize("chunk", [1, 3, 10, 11, 1000])
def test_vocabulary_chunks_give_the_same_values(chunk):
    z, y, h, mask = _random_batch()
    torch.testing.assert_close(sequence_shapley(z, y, h, mask, vocab_chunk=chunk), sequence_shapley(z, y, h, mask),
                               rtol=1e-12, atol=1e-14)


def test_batch_loss_and_weights():
    z, y, h, mask = _random_batch()
    b = sequence_batch(z, y, h, mask, reduction="mean")
    scored = (y != -100) & mask.bool()
    tok = F.cross_entropy(z.reshape(-1, 11), torch.where(scored, y, -100).reshape(-1), reduction="none").reshape(5, 7)
    torch.testing.assert_close(b.loss, (tok * scored).sum(1) / scored.sum(1), rtol=1e-13, atol=0)
    assert torch.equal(b.counts, scored.sum(1))


# ---- ride-along and the valuer's verbs ---------------------------------------------------------------------------

def test_ride_along_equals_pass_when_parameters_do_not_move():
    model, items = _gpt2(), _docs(7)
    want = chg.chg_shapley(_oracle_x(model, items, shift=True))
    values, valuer = value_sequences(model, items, epochs=3, mode="ride", lr=0.0, batch_size=3, return_valuer=True)
    assert bool(torch.isnan(valuer.epoch_values[0]).all())  # the first epoch only gathers statistics
    for k in (1, 2):
        torch.testing.assert_close(valuer.epoch_values[k], want, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(np.asarray(values), want.numpy(), rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("unit", ["sequence", "token"])
def test_ride_along_with_a_validation_target(unit):
    """alpha='valid' in ride-along: the validation players of the end of epoch k are epoch k+1's target."""
    model, items, valid = _gpt2(), _docs(6), _docs(3, seed=7)
    x, xv = _oracle_x(model, items, shift=True, unit=unit), _oracle_x(model, valid, shift=True, unit=unit)
    _, valuer = value_sequences(model, items, valid, unit=unit, alpha="valid", epochs=2, mode="ride", lr=0.0,
                                batch_size=4, return_valuer=True)
    torch.testing.assert_close(valuer.epoch_values[1], chg.chg_shapley(x, alpha=xv.mean(0)), rtol=RTOL, atol=1e-12)


def test_ride_along_in_training_differs_from_pass_and_is_finite():
    _, ride = value_sequences(_gpt2(), _docs(8), epochs=3, mode="ride", lr=0.05, batch_size=4, return_valuer=True)
    _, pas = value_sequences(_gpt2(), _docs(8), epochs=3, mode="pass", lr=0.05, batch_size=4, return_valuer=True)
    assert bool(torch.isfinite(ride.epoch_values[2]).all())
    assert not torch.allclose(ride.epoch_values[2], pas.epoch_values[2])  # an approximation, not the same numbers


def test_user_loop_with_the_valuer_verbs():
    """A hand-written training loop: LastLayerTap(sequence=True) + add_logits/end_epoch, as the docs show."""
    model, items = _gpt2(), _docs(6)
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    valuer = SequenceValuer(len(items), shift=True)
    with chg.LastLayerTap(model, sequence=True) as tap:
        for _ in range(2):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            logits, feat = tap.read(out)
            valuer.add_logits(torch.arange(6), logits, batch["labels"], feat, batch["attention_mask"], tap.bias)
            valuer.end_epoch()  # no optimiser step: θ fixed, so epoch 1 is exact
    want = chg.chg_shapley(_oracle_x(model, items, shift=True))
    torch.testing.assert_close(valuer.epoch_values[1], want, rtol=RTOL, atol=1e-12)


def test_batch_order_and_size_do_not_change_the_pass():
    a, _ = _epoch0(_gpt2(), _docs(7), eval_batch_size=1)
    b, _ = _epoch0(_gpt2(), _docs(7), eval_batch_size=7)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_items_of_different_lengths_are_padded_and_masked():
    items = _docs(5)
    trimmed = []
    for it in items:
        L = int(it["attention_mask"].sum())
        trimmed.append({"input_ids": it["input_ids"][:L], "labels": it["labels"][:L]})  # no mask, no padding
    a, _ = _epoch0(_gpt2(), items, eval_batch_size=5)
    b, _ = _epoch0(_gpt2(), trimmed, eval_batch_size=5)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_a_batch_sampler_of_the_users_own_is_refused_without_an_index_and_right_with_one():
    """A length-bucketing batch sampler (here: the documents in reverse) leaves the loader's ``sampler`` the default
    sequential one, but the rows come in its order: numbered by arrival they were given each other's values
    (reversed, no error). Without an index it is an error now; with an ``index`` key the values are the plain
    loader's."""
    from torch.utils.data import DataLoader
    model, items = _gpt2(), _docs(6)
    order = [[5, 4], [3, 2], [1, 0]]
    want = SequenceValuer(6, shift=True).value_epoch(model, DataLoader(items, batch_size=2))
    with pytest.raises(ValueError, match="batch_sampler of your own"):
        SequenceValuer(6, shift=True).value_epoch(model, DataLoader(items, batch_sampler=order))
    indexed = [{**it, "index": torch.tensor(i)} for i, it in enumerate(items)]
    got = SequenceValuer(6, shift=True).value_epoch(model, DataLoader(indexed, batch_sampler=order))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_value_data_sweeps_a_language_models_documents_at_its_batch_size():
    """chg.value_data hands documents to value_sequences, but passed its classifier default eval_batch_size=256: the
    no-grad sweeps ran 32× the training batch (3.7× the peak memory at a 50k vocabulary: logits are (B, T, V)). It
    now takes batch_size as value_sequences does; an eval_batch_size given is kept."""
    model, items = _gpt2(), _docs(7)
    seen = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append((m.training, kw["input_ids"].shape[0])),
                                    with_kwargs=True)
    chg.value_data(model, items, epochs=1, batch_size=2, mode="pass", lr=1e-3)
    assert max(b for training, b in seen if not training) == 2
    seen.clear()
    chg.value_data(model, items, epochs=1, batch_size=2, eval_batch_size=5, mode="pass", lr=1e-3)
    assert max(b for training, b in seen if not training) == 5


def test_a_text_column_left_in_documents_of_different_lengths_is_carried_and_changes_nothing():
    """A tokenized data set that still has its "text" column, documents of different lengths: pad_items called
    torch.as_tensor on the strings (torch's "new(): invalid data type 'str'"). The text is now kept as a list, as
    torch's default collation keeps it, and the values are those of the items without it."""
    model, items = _gpt2(), _docs(6)
    trimmed = [{"input_ids": it["input_ids"][:int(it["attention_mask"].sum())],
                "labels": it["labels"][:int(it["attention_mask"].sum())]} for it in items]
    texts = [{**it, "text": "x" * (i + 1)} for i, it in enumerate(trimmed)]
    assert len({len(it["input_ids"]) for it in texts}) > 1
    want, _ = _epoch0(copy.deepcopy(model), trimmed, eval_batch_size=3)  # (it trains the model it is given)
    got, _ = _epoch0(model, texts, eval_batch_size=3)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert pad_items(texts[:2])["text"] == ["x", "xx"]


# ---- bad input: clear errors --------------------------------------------------------------------------------------

def test_no_labels_is_a_clear_error():
    items = [{"input_ids": it["input_ids"]} for it in _docs(3)]
    with pytest.raises(ValueError, match="labels = input_ids"):
        value_sequences(_gpt2(), items, epochs=1)
    z, y, h, mask = _random_batch()
    with pytest.raises(ValueError, match="labels are missing"):
        sequence_batch(z, None, h)


def test_all_tokens_masked_is_a_clear_error():
    z, y, h, mask = _random_batch()
    y[3] = -100
    with pytest.raises(ValueError, match=r"sequence\(s\) \[3\] of the batch have no scored token"):
        sequence_shapley(z, y, h)
    items = _docs(3)
    items[1]["labels"][:] = -100
    with pytest.raises(ValueError, match=r"document\(s\) 1 of train_dataset have no scored token"):
        value_sequences(_gpt2(), items, epochs=1)


def _bytes(texts):
    return [{"input_ids": torch.tensor(list(t.encode())), "labels": torch.tensor(list(t.encode()))} for t in texts]


TEXTS = ["hello", "abc", "the mean.", "ok!", "some text", "x", "more text"]  # document 5: one byte


@pytest.mark.parametrize("mode", ["pass", "ride"])
def test_a_document_without_a_scored_token_is_named_by_its_row_before_training(mode):
    """Reviewer: document 5, one byte "x", has nothing left after the causal shift; the message named its position in
    a shuffled batch ("sequence(s) [1] of the batch"). Now every such document is named by its row in the data set,
    all of them at once, before the first training step — in ride-along too, where training comes first."""
    docs = _bytes(TEXTS)
    docs[2]["labels"][:] = -100  # a second one: every label unscored
    model = _gpt2(vocab=256)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"document\(s\) 2, 5 of train_dataset have no scored token \(every label "
                                         r"-100 or masked, or a single token.*drop it from the data set"):
        value_sequences(model, docs, epochs=2, batch_size=4, mode=mode)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # not one step taken
    with pytest.raises(ValueError, match=r"document\(s\) 2, 5 of train_dataset"):
        chg.value_data(model, docs, epochs=2, batch_size=4, mode=mode)
    with pytest.raises(ValueError, match=r"document\(s\) 5 of valid_dataset"):
        value_sequences(model, _bytes(TEXTS[:5]), _bytes(TEXTS), alpha="valid", epochs=2, batch_size=4, mode=mode)


def test_a_users_loop_names_the_document_by_the_batch_index():
    """The valuer's own verbs name the row given in the batch's index, not the position in the batch."""
    model = _gpt2(vocab=256)
    docs = _bytes(TEXTS)
    batch = chg.sequence_loop.pad_items(docs[4:7])  # rows 4, 5, 6: "x" is the batch's second
    batch["index"] = torch.tensor([4, 5, 6])
    valuer = SequenceValuer(7, shift=True)
    with pytest.raises(ValueError, match=r"document\(s\) \[5\] of the data set have no scored token"):
        valuer.value_epoch(model, [batch])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    with pytest.raises(ValueError, match=r"document\(s\) \[5\] of the data set have no scored token"):
        valuer.add_logits(batch["index"], out.logits, batch["labels"], out.hidden_states[-1],
                          batch["attention_mask"], False)


class _EinsumHead(nn.Module):
    """A Linear in the body, but the output layer is an einsum with a parameter (not an nn.Linear)."""

    def __init__(self):
        super().__init__()
        self.emb, self.body = nn.Embedding(13, 8), nn.Linear(8, 8)
        self.out = nn.Parameter(torch.randn(13, 8))

    def forward(self, input_ids, attention_mask=None):
        return {"logits": torch.einsum("btd,cd->btc", self.body(self.emb(input_ids)), self.out)}


class _NoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(13, 13)

    def forward(self, input_ids, attention_mask=None):
        return self.emb(input_ids)


@pytest.mark.parametrize("model, match", [(_EinsumHead(), "output layer must be an nn.Linear applied per position"),
                                          (_NoLinear(), "has no nn.Linear module")])
def test_a_head_that_is_not_a_linear_is_a_clear_error(model, match):
    with pytest.raises(ValueError, match=match):
        value_sequences(model, _docs(3), epochs=1, shift=True)


@pytest.mark.parametrize("change, match", [
    (lambda z, y, h, m: (z, y + 100, h, m), r"labels must lie in \[0, 11\) or be -100"),
    (lambda z, y, h, m: (z, y.double(), h, m), "labels must be an integer tensor"),
    (lambda z, y, h, m: (z, y, h, m * 2), "attention_mask must hold 0/1"),
    (lambda z, y, h, m: (z, y, h[:, :3], m), "must share"),
    (lambda z, y, h, m: (z[0], y, h, m), r"logits must be a floating \(B, T, C\) tensor"),
    (lambda z, y, h, m: (z.masked_fill(y[..., None] == 4, float("nan")), y.clamp(0), h, None), "NaN or Inf"),
])
def test_bad_batches_are_clear_errors(change, match):
    z, y, h, m = change(*_random_batch())
    with pytest.raises(ValueError, match=match):
        sequence_shapley(z, y, h, m)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="train at least 2 epochs"):
        value_sequences(_gpt2(), _docs(3), epochs=1, mode="ride")
    with pytest.raises(ValueError, match="unit must be one of"):
        SequenceValuer(3, unit="word")
    with pytest.raises(ValueError, match="shift=True"):
        z, y, h, m = _random_batch()
        SequenceValuer(5).add_logits(range(5), z, y, h)
    with pytest.raises(ValueError, match="added twice"):
        z, y, h, m = _random_batch()
        SequenceValuer(5, shift=False).add_logits([0, 1, 1, 2, 3], z, y, h)
    with pytest.raises(ValueError, match="ride-along values start at the second epoch"):
        v = SequenceValuer(5, shift=False)
        v.add_logits(range(5), *_random_batch()[:3])
        v.end_epoch()
        v.values()


# ---- memory: chunks over the vocabulary ---------------------------------------------------------------------------

_MEMORY_CHILD = textwrap.dedent("""
    import sys, torch
    from chg.sequence import sequence_batch, sequence_stats, sequence_dots

    def kib(key):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

    torch.set_num_threads(1)
    B, T, C, D = 32, 64, 5000, 32
    chunk = None if sys.argv[1] == "default" else int(sys.argv[1])
    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, T, C, generator=g)  # float32 logits, 39 MiB
    h = torch.randn(B, T, D, generator=g)
    y = torch.randint(0, C, (B, T), generator=g)
    small = sequence_batch(z[:2, :4, :50], y[:2, :4] % 50, h[:2, :4])  # warm every kernel up
    sequence_dots(small, sequence_stats(small)[0].sum)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size (VmHWM) to the current one
    base = kib("VmRSS:")
    b = sequence_batch(z, y, h, vocab_chunk=chunk)
    stats, sq = sequence_stats(b, vocab_chunk=chunk)
    sequence_dots(b, stats.sum, vocab_chunk=chunk)
    print((kib("VmHWM:") - base) / 1024)  # MiB of peak above the resident set before the sweeps
""")


def _peak_mib(chunk: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1",
           # glibc: blocks over 128 KiB are mapped and unmapped (its adaptive threshold otherwise keeps freed chunks
           # in the heap, so the resident peak would measure the allocator's history, not the sweeps' arrays)
           "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, chunk], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs")
def test_peak_memory_with_a_vocabulary_of_5000():
    """The sweeps' extra peak memory (peak resident set above the one before them, Linux's VmHWM after a reset) on
    32 × 64 tokens, C = 5,000, D = 32: a (B, T, C) float64 array is 78 MiB. Default chunks (256 columns here) stay
    under 0.4 of it (about 18 MiB measured); one chunk of the whole vocabulary (an unchunked float64 softmax) goes
    above it (about 164 MiB), so the bound can fail."""
    full = 32 * 64 * 5000 * 8 / 2**20
    chunked, whole = _peak_mib("default"), _peak_mib("5000")
    assert chunked < 0.4 * full, (chunked, whole)
    assert whole > full, (chunked, whole)


# ---- chg.value_data and chg.EpochValuer hand sequences over ---------------------------------------------------------

def test_value_data_values_a_gpt2_and_a_token_classifier():
    model, items = _gpt2(), _docs(6)
    want = chg.chg_shapley(_oracle_x(model, items, shift=True))
    values, valuer = chg.value_data(model, items, epochs=1, lr=1e-3, return_valuer=True)
    assert isinstance(values, chg.Values) and isinstance(valuer, SequenceValuer) and values.meta["unit"] == "sequence"
    torch.testing.assert_close(valuer.epoch_values[0], want, rtol=RTOL, atol=1e-12)
    bert, tagged = _bert(), _docs(5, causal=False, vocab=20)
    want = chg.chg_shapley(_oracle_x(bert, tagged, shift=False, unit="token"))
    values, valuer = chg.value_data(bert, tagged, unit="token", epochs=1, lr=1e-3, return_valuer=True)
    torch.testing.assert_close(valuer.epoch_values[0], want, rtol=RTOL, atol=1e-12)
    assert len(values) == len(want)


def test_epoch_valuer_with_a_unit_is_a_sequence_valuer():
    v = chg.EpochValuer(6, unit="sequence", shift=True, skip_epochs=1)
    assert isinstance(v, SequenceValuer) and v.shift is True and v.skip_epochs == 1
    t = chg.EpochValuer(6, unit="token", utility="gradient")
    assert isinstance(t, SequenceValuer) and t.unit == "token" and t.utility == "gradient"
    assert type(chg.EpochValuer(6)) is chg.EpochValuer and type(chg.EpochValuer(6, unit=None)) is chg.EpochValuer
    for bad, match in ((dict(per_class=True), "classifier's valuer only"), (dict(weight=[1.0, 2.0]), "classifier"),
                       (dict(gradient="bias"), "classifier"),
                       (dict(utility="hardness"), "not available for sequences")):
        with pytest.raises(ValueError, match=match):
            chg.EpochValuer(6, unit="sequence", **bad)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'utilty' for a sequence valuer \(unit='token'\); "
                                        r"did you mean 'utility'\?"):
        chg.EpochValuer(6, unit="token", utilty="chg")
    with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
        chg.EpochValuer(6, unit="sequence", nonsense=1)
    with pytest.raises(ValueError, match="classifier"):
        chg.value_data(_gpt2(), _docs(3), epochs=1, per_class=True)


def test_classifier_data_is_not_taken_for_sequences():
    from chg.sequence import is_sequence_data
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    assert not is_sequence_data((x, y)) and not is_sequence_data(torch.utils.data.TensorDataset(x, y))
    assert not is_sequence_data([{"input_ids": torch.arange(4), "labels": torch.tensor(1)}])
    assert is_sequence_data(_docs(2)) and is_sequence_data([{"input_ids": [1, 2], "labels": [1, -100]}])
    assert is_sequence_data([(torch.arange(4), torch.arange(4))]) and not is_sequence_data([])


def test_documents_longer_than_the_positions_or_ids_beyond_the_vocabulary_are_named():
    """A GPT-2 fed documents longer than its n_positions, or token ids of another tokenizer, fails in its embedding
    with torch's IndexError; value_sequences names the cause and the fix instead."""
    model = _gpt2()  # vocab 13, 16 positions
    long_docs = _docs(4, T=20)
    with pytest.raises(ValueError, match=r"sequences of 20 tokens > the model's 16 positions \(truncate: "
                                         r"tokenizer\(\.\.\., truncation=True, max_length=16\)\)"):
        value_sequences(model, long_docs, epochs=1, mode="pass", lr=0.0)
    foreign = _docs(4, vocab=40, seed=3)
    with pytest.raises(ValueError, match=r"a token id [1-3]\d ≥ the model's vocab_size 13"):
        value_sequences(_gpt2(), foreign, epochs=2, mode="ride", lr=0.0)


def test_a_bert_fed_documents_longer_than_its_positions_names_the_truncation():
    """BERT expands its position ids rather than indexing them: too-long documents fail with a RuntimeError, which
    forward_batch explains as for GPT-2; a RuntimeError with no such cause passes through unchanged."""
    model = _bert()  # max_position_embeddings 16
    items = _docs(4, T=20, vocab=20, causal=False)
    with pytest.raises(ValueError, match=r"sequences of 20 tokens > the model's 16 positions"):
        value_sequences(model, items, epochs=1, mode="pass", lr=0.0)
    from chg.lastlayer import forward_batch

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("not ours")
    with pytest.raises(RuntimeError, match="^not ours$"):
        forward_batch(Broken(), torch.zeros(2, 3), "cpu")
