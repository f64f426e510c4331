"""Models whose output layer the tap reads in a less usual way, found by review.

* HuggingFace decoder sequence classifiers (``GPT2ForSequenceClassification``, ``LlamaForSequenceClassification``):
  the head ``score`` (no bias) runs at every position and the model returns the logits of each row's last non-pad
  token. The values equal the oracle: per-sample autograd of the cross-entropy of the model's own (pooled) logits
  with respect to ``score.weight``, then Theorem 1 — in the separate pass, in a training step (ride-along) and
  through the Trainer callback, with rows padded on the right and on the left.
  Dict items of different lengths (a tokenizer's output without padding) are padded by value_data on the right:
  their values are those of each row run alone, unpadded.
* timm models built without a head (``num_classes=0``) or with two (distilled DeiT / LeViT): clear messages.
"""
import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import chg
from chg.lastlayer import LastLayerTap

transformers = pytest.importorskip("transformers")

N, T, C, PAD = 12, 7, 3, 0


def _gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=40, n_embd=8, n_layer=1, n_head=2, n_positions=16, num_labels=C,
                                     pad_token_id=PAD, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2ForSequenceClassification(config).double()


def _llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=2, intermediate_size=16, num_labels=C, pad_token_id=PAD,
                                      max_position_embeddings=16)
    return transformers.LlamaForSequenceClassification(config).double()


MODELS = {"gpt2": _gpt2, "llama": _llama}


def _rows(n=N):
    """Token rows of different lengths: a third padded on the right, a third on the left, a third not padded."""
    g = torch.Generator().manual_seed(1)
    ids = 1 + torch.randint(0, 39, (n, T), generator=g)
    mask = torch.ones(n, T, dtype=torch.int64)
    for i in range(n):
        k = int(torch.randint(0, 4, (1,), generator=g)) if i % 3 else 0
        cut = slice(T - k, T) if i % 3 == 1 else slice(0, k)  # right padding, left padding
        ids[i, cut], mask[i, cut] = PAD, 0
    return ids, mask, torch.arange(n) % C


class Rows(torch.utils.data.Dataset):
    def __init__(self, n=N):
        self.ids, self.mask, self.labels = _rows(n)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def _oracle(model, ids, mask, y):
    """Theorem 1 on x_i = l_i ∂l_i/∂score.weight, l_i the cross-entropy of the returned logits of row i alone."""
    assert model.score.bias is None
    x = []
    for i in range(len(y)):
        logits = model(input_ids=ids[i:i + 1], attention_mask=mask[i:i + 1]).logits  # (1, C): the pooled position
        loss = F.cross_entropy(logits, y[i:i + 1])
        gw, = torch.autograd.grad(loss, model.score.weight)
        x.append(loss.detach() * gw.reshape(-1))
    return chg.chg_shapley(torch.stack(x))


def test_rows_are_padded_both_ways():
    ids, mask, _ = _rows()
    assert (ids[:, -1] == PAD).any() and (ids[:, 0] == PAD).any() and (ids != PAD).all(1).any()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_read_gives_the_pooled_rows_logits_and_features_with_their_graph(name):
    model = MODELS[name]()
    ids, mask, y = _rows()
    last = (torch.arange(T) * (ids != PAD)).argmax(1)  # HuggingFace's rule: the last non-pad token
    with LastLayerTap(model) as tap:
        out = model(input_ids=ids, attention_mask=mask, labels=y, output_hidden_states=True)
        logits, feat = tap.read(out)
    assert not tap.bias
    assert torch.equal(logits, out.logits)
    assert torch.equal(feat, out.hidden_states[-1][torch.arange(N), last])
    assert not feat.requires_grad and logits.requires_grad
    got, = torch.autograd.grad(F.cross_entropy(logits, y), model.score.weight, retain_graph=True)
    want, = torch.autograd.grad(out.loss, model.score.weight)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_separate_pass_and_ride_along_equal_per_sample_autograd(name):
    init = MODELS[name]().eval()
    ids, mask, y = _rows()
    want = _oracle(init, ids, mask, y)
    for mode in ("pass", "ride"):  # lr = 0: the ride-along's training steps run at θ0 as well
        values, valuer = chg.value_data(copy.deepcopy(init), Rows(), epochs=1, batch_size=5, lr=0.0, mode=mode,
                                        optimizer="sgd", momentum=0.0, return_valuer=True)
        torch.testing.assert_close(valuer.epoch_values[0], want, rtol=1e-9, atol=1e-13)


def test_trainer_callback_equals_per_sample_autograd(tmp_path):
    from chg.integrations.huggingface import CHGCallback

    model = _gpt2()
    ids, mask, y = _rows()
    want = _oracle(copy.deepcopy(model).eval(), ids, mask, y)
    cb = CHGCallback()
    args = transformers.TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, per_device_train_batch_size=5,
                                          learning_rate=0.0, use_cpu=True, report_to="none", save_strategy="no",
                                          logging_strategy="no", disable_tqdm=True, seed=3)
    transformers.Trainer(model, args, train_dataset=cb.index(Rows()), callbacks=[cb]).train()
    torch.testing.assert_close(cb.epoch_values[0], want, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trainer_callback_with_bf16_mixed_precision_values_the_pooled_rows(tmp_path, name):
    """``TrainingArguments(bf16=True)``: the head runs in bfloat16 and accelerate returns the pooled logits upcast to
    float32 (a copy off the loss's path). It was refused — first as "expected (B, D) features", then by the loss check
    ("did not backpropagate through the output layer's logits"); now the callback reads the pooled rows and checks
    the loss at the head's output. The values are the float32 oracle's to bfloat16's rounding (stated bound: max |Δ|
    ≤ 0.02 · std of the values; measured 2.9e-3 GPT-2, 2.0e-3 Llama)."""
    from chg.integrations.huggingface import CHGCallback

    model = MODELS[name]().float()
    ids, mask, y = _rows()
    want = _oracle(copy.deepcopy(model).double().eval(), ids, mask, y)
    cb = CHGCallback()
    args = transformers.TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, per_device_train_batch_size=5,
                                          learning_rate=0.0, use_cpu=True, bf16=True, report_to="none",
                                          save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (half precision: a loss check may be inconclusive, and says so)
        transformers.Trainer(model, args, train_dataset=cb.index(Rows()), callbacks=[cb]).train()
    got = cb.epoch_values[0]
    assert got.shape == (N,) and bool(torch.isfinite(got).all())
    assert float((got - want).abs().max()) <= 0.02 * float(want.std())


def test_a_tie_of_positions_is_told_apart_by_the_last_non_pad_token():
    """A head of zero weights gives equal logits at every position: the pooled one is the model's rule's."""
    model = _gpt2()
    with torch.no_grad():
        model.score.weight.zero_()
    ids, mask, y = _rows()
    want = _oracle(model.eval(), ids, mask, y)
    values, valuer = chg.value_data(model, Rows(), epochs=1, batch_size=5, lr=0.0, mode="pass", return_valuer=True)
    torch.testing.assert_close(valuer.epoch_values[0], want, rtol=1e-9, atol=1e-13)


class Pooled(nn.Module):
    """A head applied per position, the model returning the position ``pick(z)`` of each row (or something else)."""

    def __init__(self, pick, zero=False):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.head, self.pick = nn.Linear(4, 6), nn.Linear(6, C), pick
        if zero:
            nn.init.zeros_(self.head.weight), nn.init.zeros_(self.head.bias)
        self.double()

    def forward(self, x):  # x (B, T, 4)
        return self.pick(self.head(torch.tanh(self.body(x))))


def test_a_model_of_its_own_pooling_one_position_is_valued_with_its_bias():
    x, y = torch.randn(9, 5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64), torch.arange(9) % C
    pos = torch.tensor([4, 0, 2, 3, 1, 4, 4, 0, 2])
    model = Pooled(lambda z: z[torch.arange(z.shape[0]), pos])
    with LastLayerTap(model) as tap:
        f = tap.factors(model(x), y)
    h = torch.tanh(model.body(x))[torch.arange(9), pos].detach()
    assert f.bias and torch.equal(f.feat, h)
    xs = []
    for i in range(9):
        loss = F.cross_entropy(model(x)[i:i + 1], y[i:i + 1])
        gw, gb = torch.autograd.grad(loss, (model.head.weight, model.head.bias))
        xs.append(loss.detach() * torch.cat([gw, gb[:, None]], 1).reshape(-1))
    torch.testing.assert_close(chg.shapley_from_factors(f), chg.chg_shapley(torch.stack(xs)), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("pick", [lambda z: z.mean(1), lambda z: z, lambda z: z[:, -1] * 2.0],
                         ids=["mean of positions", "every position (a token classifier)", "post-processed"])
def test_logits_of_no_single_position_keep_a_clear_error(pick):
    x, y = torch.randn(4, 5, 4), torch.arange(4) % C
    model = Pooled(pick)
    with LastLayerTap(model) as tap, pytest.raises(ValueError, match=r"got input of shape \(4, 5, 6\).*one position "
                                                                      r"per row.*chg\.sequence"):
        tap.factors(model(x.double()), y)


def test_a_tie_with_no_rule_to_break_it_is_a_clear_error():
    model = Pooled(lambda z: z[:, 2], zero=True)
    with LastLayerTap(model) as tap, pytest.raises(ValueError, match=r"row 0 equal the output of 'head' at positions "
                                                                      r"\[0, 1, 2, 3, 4\] whose features differ"):
        tap.factors(model(torch.randn(4, 5, 4, dtype=torch.float64)), torch.arange(4) % C)


# ---- dict items of different lengths, as a tokenizer gives them without padding --------------------------------------
def _ragged(mask=True, n=N):
    """n dict items whose input_ids have 2..T tokens (none the pad id), a label each; ``mask``: with an all-ones
    attention_mask, as a tokenizer gives it."""
    g = torch.Generator().manual_seed(4)
    seqs = [1 + torch.randint(0, 39, (int(k),), generator=g) for k in 2 + torch.randint(0, T - 1, (n,), generator=g)]
    y = torch.arange(n) % C
    items = [{"input_ids": s, **({"attention_mask": torch.ones_like(s)} if mask else {}), "labels": y[i]}
             for i, s in enumerate(seqs)]
    return items, seqs, y


def _padded(seqs, y):
    """The same items padded by hand: right padding with PAD to the longest, attention_mask 0 on the padding."""
    longest = max(len(s) for s in seqs)
    return [{"input_ids": torch.cat([s, torch.full((longest - len(s),), PAD)]),
             "attention_mask": (torch.arange(longest) < len(s)).long(), "labels": y[i]} for i, s in enumerate(seqs)]


def _unpadded_oracle(model, seqs, y):
    """Theorem 1 on x_i = l_i ∂l_i/∂score.weight, each row alone and unpadded (no padding, no mask)."""
    x = []
    for s, label in zip(seqs, y):
        loss = F.cross_entropy(model(input_ids=s[None]).logits, label[None])
        gw, = torch.autograd.grad(loss, model.score.weight)
        x.append(loss.detach() * gw.reshape(-1))
    return chg.chg_shapley(torch.stack(x))


@pytest.mark.parametrize("mask", [True, False], ids=["with attention_mask", "input_ids only"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_ragged_dict_items_are_padded_and_equal_per_sample_autograd_of_each_row_alone(name, mask):
    """What a tokenizer gives without padding (reviewer: torch's "stack expects each tensor to be equal size"):
    value_data pads each batch on the right with the config's pad_token_id, the attention_mask 0 there (added when
    the items have none), so the model pools each row's last real token — the values are those of every row run
    alone, unpadded, in the separate pass and in ride-along."""
    init = MODELS[name]().eval()
    items, seqs, y = _ragged(mask)
    assert len({len(s) for s in seqs[:5]}) > 1  # the first batch of 5 is ragged
    want = _unpadded_oracle(init, seqs, y)
    for mode in ("pass", "ride"):
        values, valuer = chg.value_data(copy.deepcopy(init), items, epochs=1, batch_size=5, eval_batch_size=5,
                                        lr=0.0, mode=mode, optimizer="sgd", momentum=0.0, return_valuer=True)
        torch.testing.assert_close(valuer.epoch_values[0], want, rtol=1e-9, atol=1e-13)


def test_ragged_dict_items_value_as_the_same_items_padded_by_hand_in_training():
    """Two epochs of Adam (reviewer: hand right-padded items were within 1e-6 of the oracle, ragged ones failed)."""
    items, seqs, y = _ragged()
    got = chg.value_data(_gpt2(), items, epochs=2, batch_size=4, lr=1e-2, valid_dataset=items, alpha="valid")
    want = chg.value_data(_gpt2(), _padded(seqs, y), epochs=2, batch_size=4, lr=1e-2, valid_dataset=_padded(seqs, y),
                          alpha="valid")
    np.testing.assert_allclose(got.history, want.history, rtol=1e-9, atol=1e-13)


def test_ragged_dict_items_and_no_pad_token_id_say_to_set_it():
    """GPT-2 finds each row's last token by config.pad_token_id; without one, padding would be read as a token."""
    model = _gpt2()
    model.config.pad_token_id = None
    items, _, _ = _ragged()
    with pytest.raises(ValueError, match=r"input_ids of different lengths \(rows \d+ and \d+ of the data: \d+ and "
                                         r"\d+ tokens\).*no pad_token_id.*model\.config\.pad_token_id = "
                                         r"tokenizer\.pad_token_id"):
        chg.value_data(model, items, epochs=1, batch_size=4)


class MaskedMean(nn.Module):
    """A model of one's own taking HuggingFace-style keywords: the mean of the attended tokens' embeddings."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Embedding(40, 6), nn.Linear(6, C)
        self.double()

    def forward(self, input_ids, attention_mask):
        m = attention_mask[..., None].to(torch.float64)  # (B, T, 1)
        return self.head((self.embed(input_ids) * m).sum(1) / m.sum(1))


def test_ragged_dict_items_for_a_model_without_a_config_are_padded_with_0_and_masked():
    items, seqs, y = _ragged()
    got = chg.value_data(MaskedMean(), items, epochs=2, batch_size=4, lr=1e-2)
    want = chg.value_data(MaskedMean(), _padded(seqs, y), epochs=2, batch_size=4, lr=1e-2)
    np.testing.assert_allclose(got.history, want.history, rtol=1e-9, atol=1e-13)


# ---- timm: no head, or two ------------------------------------------------------------------------------------------
def _timm(name, **kw):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kw)


VIT = dict(img_size=32, patch_size=8)


@pytest.mark.parametrize("name,kw", [("vit_tiny_patch16_224", VIT), ("resnet18", {}), ("convnext_atto", {})])
def test_a_timm_model_without_head_says_so(name, kw):
    model = _timm(name, num_classes=0, **kw)
    x, y = torch.randn(6, 3, 32, 32), torch.arange(6) % 2
    with pytest.raises(ValueError, match=r"has no classifier head \(num_classes=0\).*num_classes=C"):
        chg.value_data(model, (x, y), epochs=1, batch_size=3)


@pytest.mark.parametrize("name,kw", [("deit_tiny_distilled_patch16_224", VIT), ("levit_128s", dict(img_size=32))])
@pytest.mark.parametrize("layer", ["head_dist", "head"])
def test_a_distilled_timm_model_says_its_logits_are_the_mean_of_two_heads(name, kw, layer):
    model = _timm(name, num_classes=4, **kw).eval()
    lin = getattr(model, layer)
    lin = lin if isinstance(lin, nn.Linear) else lin.linear  # LeViT's NormLinear
    with pytest.raises(ValueError, match=r"distilled model: its logits are the mean of two heads.*layer= cannot "
                                         r"help.*without the distillation head"):
        chg.compute_factors(model, torch.randn(3, 3, 32, 32), torch.arange(3), layer=lin)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pooled_logits_upcast_from_a_half_precision_head_are_read_as_the_pooled_rows(name):
    """Mixed precision (the Trainer's bf16=True: accelerate returns the logits upcast to float32 while the head ran in
    bfloat16): the returned (B, C) float32 logits are an exact upcast of the head's output at each row's last
    non-pad token, read as the pooled rows — it was "expected (B, D) features ... none of which" — and a candidate
    narrower than the head's output is still not taken for its copy."""
    model = MODELS[name]().to(torch.bfloat16)
    ids, mask, y = _rows()
    last = (torch.arange(T) * (ids != PAD)).argmax(1)
    with LastLayerTap(model) as tap:
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        logits, feat = tap.read({"logits": out.logits.float()})
        assert logits.dtype == torch.float32 and torch.equal(logits, out.logits.float())
        assert torch.equal(feat, out.hidden_states[-1][torch.arange(N), last])
        model.float()
        out = model(input_ids=ids, attention_mask=mask)
        with pytest.raises(ValueError, match="expected"):
            tap.read({"logits": out.logits.to(torch.bfloat16)})
