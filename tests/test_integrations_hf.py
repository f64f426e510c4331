"""chg.integrations.huggingface.CHGCallback inside transformers.Trainer.train().

Oracles, on a tiny BERT built from a config (float64, dropout 0, no download):
* replay: every training forward pass is recorded (the parameters, the batch, its rows) by a hook of the test; the
  library's own ride-along path (LastLayerTap + EpochValuer.add_logits + end_epoch) fed the same batches in the same
  order at the same parameters gives the callback's values (rtol 1e-10);
* per-sample autograd: x_i = l_i · ∂l_i/∂[W | b] of the classifier at the parameters the row was trained at, under
  the loss the Trainer optimised (plain, label-smoothed, class-weighted), then Theorem 1 (chg.chg_shapley) over the
  epoch's rows (rtol 1e-9).
Each row enters each epoch exactly once, with shuffling, gradient accumulation (an uneven last batch and step), and
remove_unused_columns on or off (the items carry an unused string column). Multi-process: torchrun, 2 CPU processes
on gloo, learning rate 0: every rank's values equal one process's separate pass at θ0 (accelerate pads the last
batch with rows of the other shard: those rows are one player each).
"""
import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import pytest
import torch
import torch.nn.functional as F

import chg

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers import (BertConfig, BertForSequenceClassification, Trainer, TrainerCallback,  # noqa: E402
                          TrainingArguments)

from chg.integrations.huggingface import CHGCallback  # noqa: E402

RTOL = 1e-10
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hf_trainer.py"


class Tokens(torch.utils.data.Dataset):
    """n token rows of 3 classes, dict items with an unused string column ('text')."""

    def __init__(self, n=23, length=6):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % 3
        self.ids = 1 + self.labels[:, None] * 30 + torch.randint(0, 30, (n, length), generator=g)
        self.labels[::7] = (self.labels[::7] + 1) % 3  # some wrong labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i],
                "text": f"row {i}"}


def tiny_bert(num_labels=3):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, num_labels=num_labels, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, max_position_embeddings=16)
    return BertForSequenceClassification(config).double()


def train_args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=4, learning_rate=5e-2,
                use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
                seed=3)
    return TrainingArguments(**{**base, **kw})


class Recorder(TrainerCallback):
    """Records every training forward pass (parameters, inputs, rows, labels), epoch by epoch. Its pre-hook is
    registered before training, so it runs before the callback's and sees the batch as the model is called."""

    def __init__(self, model):
        self.epochs, self.model = [], model
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def on_epoch_begin(self, args, state, control, **kw):
        self.epochs.append([])

    def _hook(self, module, args, kwargs):
        if module.training and torch.is_grad_enabled() and "chg_index" in kwargs:
            rows = kwargs["chg_index"]
            inputs = {k: v.detach().clone() for k, v in kwargs.items()
                      if k in ("input_ids", "attention_mask")}
            self.epochs[-1].append((copy.deepcopy(module.state_dict()), inputs, rows["index"].clone(),
                                    rows["labels"].clone()))


def replay(model, records, n, **loss):
    """The library's own ride-along loop fed the recorded batches at the recorded parameters."""
    valuer = chg.EpochValuer(n, **loss)
    m = copy.deepcopy(model)
    for state, inputs, idx, y in records:
        m.load_state_dict(state)
        m.train()
        with chg.LastLayerTap(m) as tap:
            logits, feat = tap.read(m(**inputs))
            valuer.add_logits(idx, logits, y, feat, tap.bias)
    return valuer.end_epoch()


def autograd_values(model, records, n, weight=None, label_smoothing=0.0):
    """Theorem 1 on dense x_i = l_i ∇_{[W|b]} l_i of model.classifier, one row at a time, each at the parameters of
    the step that trained it."""
    m = copy.deepcopy(model)
    x = [None] * n
    for state, inputs, idx, y in records:
        m.load_state_dict(state)
        m.train()
        for r in range(len(idx)):
            logits = m(**{k: v[r:r + 1] for k, v in inputs.items()}).logits  # (1, C)
            loss = F.cross_entropy(logits, y[r:r + 1], weight=weight, label_smoothing=label_smoothing)
            if weight is not None:  # reduction='mean' divides by w_y: the per-sample loss is the weighted sum
                loss = loss * weight[y[r]]
            gw, gb = torch.autograd.grad(loss, (m.classifier.weight, m.classifier.bias))
            x[int(idx[r])] = loss.detach() * torch.cat([gw, gb[:, None]], 1).reshape(-1)
    return chg.chg_shapley(torch.stack(x))


def check_epochs(rec, cb, model, n, **loss):
    assert len(rec.epochs) == len(cb.epoch_values) == 2
    for e, records in enumerate(rec.epochs):
        rows = torch.cat([r[2] for r in records])
        assert sorted(rows.tolist()) == list(range(n))  # every row once per epoch
        got = cb.epoch_values[e]
        assert got.shape == (n,) and bool(torch.isfinite(got).all())
        torch.testing.assert_close(got, replay(model, records, n, **loss), rtol=RTOL, atol=1e-15)
        torch.testing.assert_close(got, autograd_values(model, records, n, **loss), rtol=1e-9, atol=1e-13)
    assert rec.epochs[0][0][2].tolist() != list(range(4))  # the batches were shuffled
    values = cb.values
    assert isinstance(values, chg.Values) and values.history.shape == (2, n)
    torch.testing.assert_close(torch.tensor(values.history), torch.stack(cb.epoch_values))


@pytest.mark.parametrize("remove_unused_columns", [True, False])
def test_values_equal_replay_and_autograd_with_accumulation(tmp_path, remove_unused_columns):
    model, data = tiny_bert(), Tokens()
    init = copy.deepcopy(model)
    rec = Recorder(model)
    cb = CHGCallback()
    args = train_args(tmp_path, gradient_accumulation_steps=2, remove_unused_columns=remove_unused_columns)
    Trainer(model, args, train_dataset=cb.index(data), callbacks=[rec, cb]).train()
    assert sum(len(r) for r in rec.epochs) == 2 * 6  # 6 micro-batches of ≤ 4 rows per epoch, 3 optimiser steps
    assert not torch.equal(rec.epochs[1][0][0]["classifier.weight"], init.classifier.weight)  # it trained
    check_epochs(rec, cb, init, len(data))
    assert len(model._forward_pre_hooks) == 1 and not model._forward_hooks  # the callback's hooks are gone


def test_label_smoothing_factor_is_the_valued_loss(tmp_path):
    model, data = tiny_bert(), Tokens()
    init = copy.deepcopy(model)
    rec, cb = Recorder(model), CHGCallback()
    Trainer(model, train_args(tmp_path, label_smoothing_factor=0.2), train_dataset=cb.index(data),
            callbacks=[rec, cb]).train()
    assert cb.valuer.label_smoothing == 0.2 and cb.values.meta["label_smoothing"] == 0.2
    check_epochs(rec, cb, init, len(data), label_smoothing=0.2)


def test_class_weights_of_a_compute_loss_func(tmp_path):
    weight = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)

    def weighted_ce(outputs, labels, num_items_in_batch=None):
        return F.cross_entropy(outputs.logits, labels, weight=weight)

    model, data = tiny_bert(), Tokens()
    init = copy.deepcopy(model)
    rec, cb = Recorder(model), CHGCallback(weight=weight)
    Trainer(model, train_args(tmp_path), train_dataset=cb.index(data), callbacks=[rec, cb],
            compute_loss_func=weighted_ce).train()
    check_epochs(rec, cb, init, len(data), weight=weight)


def test_max_steps_mid_epoch_values_the_whole_epochs_only(tmp_path):
    model, data = tiny_bert(), Tokens()
    cb = CHGCallback()
    with pytest.warns(UserWarning, match=r"stopped after 2 of the epoch.s 6 batches .*max_steps.*"
                                         r"CHGCallback\(partial_epochs=True\)"):
        Trainer(model, train_args(tmp_path, max_steps=8), train_dataset=cb.index(data), callbacks=[cb]).train()
    assert len(cb.epoch_values) == 1 and cb.values.history.shape == (1, len(data))


def test_evaluation_during_training_is_not_valued(tmp_path):
    model, data = tiny_bert(), Tokens()
    cb = CHGCallback()
    Trainer(model, train_args(tmp_path, eval_strategy="epoch", num_train_epochs=1), train_dataset=cb.index(data),
            eval_dataset=Tokens(n=9), callbacks=[cb]).train()
    assert cb.values.history.shape == (1, len(data)) and bool(torch.isfinite(cb.epoch_values[0]).all())


def test_a_training_set_not_indexed_is_refused(tmp_path):
    cb = CHGCallback()
    cb.index(Tokens())
    trainer = Trainer(tiny_bert(), train_args(tmp_path), train_dataset=Tokens(), callbacks=[cb])
    with pytest.raises(ValueError, match=r"train_dataset=cb.index\(train_set\)"):
        trainer.train()
    with pytest.raises(ValueError, match="no training epoch has ended"):
        CHGCallback().values


def test_a_regression_head_is_refused(tmp_path):
    cb = CHGCallback()
    data = Tokens()
    trainer = Trainer(tiny_bert(num_labels=1), train_args(tmp_path), train_dataset=cb.index(data), callbacks=[cb])
    with pytest.raises(ValueError, match=r"regression head \(num_labels=1: its own loss is MSE\).*one-logit binary "
                                         r"head, train with binary cross-entropy"):
        trainer.train()


class _Tempered(torch.nn.Module):
    """A classifier whose loss is not the cross-entropy of its output layer's logits (a temperature inside the
    loss only): the callback's one-time loss check must refuse it."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.EmbeddingBag(100, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.head(self.emb(input_ids))
        return {"loss": F.cross_entropy(logits / 2.0, labels), "logits": logits}


def test_a_loss_other_than_the_logits_cross_entropy_is_refused(tmp_path):
    cb = CHGCallback()
    trainer = Trainer(_Tempered(), train_args(tmp_path), train_dataset=cb.index(Tokens()), callbacks=[cb])
    with pytest.raises(ValueError, match="is not the mean cross-entropy of the output layer's logits"):
        trainer.train()


def test_an_iterable_dataset_is_refused():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield {}
    with pytest.raises(TypeError, match="no stable row positions"):
        CHGCallback().index(Stream())


DDP_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_integrations_hf import Tokens, tiny_bert, train_args
from transformers import Trainer
from chg.integrations.huggingface import CHGCallback
cb = CHGCallback()
trainer = Trainer(tiny_bert(), train_args({out!r}, learning_rate=0.0, num_train_epochs=1),
                  train_dataset=cb.index(Tokens()), callbacks=[cb])
trainer.train()
assert trainer.args.world_size == 2
np.save({out!r} + f"/rank{{trainer.args.process_index}}.npy", cb.values.history)
import torch.distributed as dist
dist.destroy_process_group()  # (gloo's threads left to the interpreter's exit sometimes abort it)
"""


class _NoText(torch.utils.data.Dataset):
    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return {k: v for k, v in self.data[i].items() if k != "text"}


def test_torchrun_two_processes_equal_one_separate_pass(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).resolve().parent), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    saved = all((tmp_path / f"rank{r}.npy").is_file() for r in (0, 1))
    # a gloo process group's teardown on a loaded machine sometimes aborts a rank after its work is done (seen ~1 run
    # in 15 here: "terminate called without an active exception" once both ranks had saved their values): that is
    # not this test's subject, so with both results saved the values are still compared; any other failure fails
    teardown = saved and "terminate called without an active exception" in out.stderr
    assert out.returncode == 0 or teardown, out.stderr[-4000:]
    data = Tokens()
    want = chg.EpochValuer(len(data)).value_epoch(
        tiny_bert(), torch.utils.data.DataLoader(chg.IndexedDataset(_NoText(data)), batch_size=8))
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npy")
        assert got.shape == (1, len(data))
        np.testing.assert_allclose(got[0], want.numpy(), rtol=1e-10, atol=1e-15)


def test_example_runs_as_written(capsys):
    spec = importlib.util.spec_from_file_location("hf_trainer_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    values = mod.main(epochs=2)
    assert isinstance(values, chg.Values) and values.shape == (96,) and values.epochs == 2
    assert "lowest-valued rows" in capsys.readouterr().out


def test_settings_are_checked_when_the_callback_is_made_and_drop_last_when_training_begins():
    """A misspelt setting fails at CHGCallback(...), naming it (not inside trainer.train()); dataloader_drop_last that
    drops rows fails before the first step and says to pass CHGCallback(partial_epochs=True)."""
    from chg.integrations.huggingface import CHGCallback
    with pytest.raises(TypeError, match=r"CHGCallback\(\) got an unexpected keyword argument 'skip_epoch'; did you "
                                        r"mean 'skip_epochs'\?"):
        CHGCallback(skip_epoch=1)
    with pytest.raises(ValueError, match="utility must be one of"):
        CHGCallback(utility="shap")
    import types
    cb = CHGCallback()
    cb.index([{"input_ids": torch.zeros(3, dtype=torch.long), "labels": 0}] * 10)
    args = types.SimpleNamespace(dataloader_drop_last=True, train_batch_size=4, n_gpu=1, label_smoothing_factor=0.0)
    loader = torch.utils.data.DataLoader(cb.dataset, batch_size=4)
    with pytest.raises(ValueError, match=r"dataloader_drop_last=True\) .* CHGCallback\(partial_epochs=True\)"):
        cb.on_train_begin(args, types.SimpleNamespace(global_step=0), None, model=None, train_dataloader=loader)


# ---- the loss actually trained on is checked (from its gradient at the logits), whoever computes it -----------------

W3 = torch.tensor([1.0, 5.0, 0.2], dtype=torch.float64)


def _weighted_ce(outputs, labels, num_items_in_batch=None):
    return F.cross_entropy(outputs.logits, labels, weight=W3)


class _SmoothingTrainer(Trainer):
    """A Trainer whose compute_loss pops the labels and smooths them (the model computes no loss)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = F.cross_entropy(outputs.logits, labels, label_smoothing=0.3)
        return (loss, outputs) if return_outputs else loss


def test_a_compute_loss_func_with_class_weights_the_callback_was_not_told_of_is_refused(tmp_path):
    cb = CHGCallback()
    trainer = Trainer(tiny_bert(), train_args(tmp_path), train_dataset=cb.index(Tokens()), callbacks=[cb],
                      compute_loss_func=_weighted_ce)
    with pytest.raises(ValueError, match=r"the loss the Trainer trains on is not the mean cross-entropy of the output "
                                         r"layer's logits.*CHGCallback\(weight=\.\.\., label_smoothing=\.\.\.\)"):
        trainer.train()
    assert not cb.epoch_values


def test_a_compute_loss_of_a_trainer_subclass_with_smoothing_not_told_is_refused(tmp_path):
    cb = CHGCallback()
    trainer = _SmoothingTrainer(tiny_bert(), train_args(tmp_path), train_dataset=cb.index(Tokens()), callbacks=[cb])
    with pytest.raises(ValueError, match="is not the mean cross-entropy of the output layer's logits"):
        trainer.train()
    cb = CHGCallback(label_smoothing=0.3)  # told: valued, and equal to the smoothed oracle
    model = tiny_bert()
    init = copy.deepcopy(model)
    rec = Recorder(model)
    _SmoothingTrainer(model, train_args(tmp_path), train_dataset=cb.index(Tokens()), callbacks=[rec, cb]).train()
    check_epochs(rec, cb, init, len(Tokens()), label_smoothing=0.3)
    assert cb._check.done and cb._check.checked <= 3  # conclusive once every class was in a batch, then no more


@pytest.mark.parametrize("told", [dict(weight=W3), dict(label_smoothing=0.3)])
def test_a_loss_told_to_the_callback_but_not_trained_on_is_refused(tmp_path, told):
    """The Trainer trains on the model's own plain cross-entropy; the callback was told of weights / smoothing."""
    cb = CHGCallback(**told)
    trainer = Trainer(tiny_bert(), train_args(tmp_path), train_dataset=cb.index(Tokens()), callbacks=[cb])
    with pytest.raises(ValueError, match="The gradient is that of plain cross-entropy .* drop weight= / "
                                         "label_smoothing= from CHGCallback"):
        trainer.train()


def _zero_head(model):
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    return model


def test_an_output_layer_at_zero_is_checked_until_a_batch_tells_the_losses_apart(tmp_path):
    """At zero logits every label smoothing gives the same gradient direction: the first batch cannot tell; the check
    goes on to the next batch (after a step the head is no longer zero), which refuses the untold smoothing."""
    cb = CHGCallback()
    trainer = _SmoothingTrainer(_zero_head(tiny_bert()), train_args(tmp_path), train_dataset=cb.index(Tokens()),
                                callbacks=[cb])
    with pytest.raises(ValueError, match="is not the mean cross-entropy of the output layer's logits"):
        trainer.train()
    assert cb._check.checked >= 2
    model = _zero_head(tiny_bert())
    init = copy.deepcopy(model)
    rec, cb = Recorder(model), CHGCallback(label_smoothing=0.3)
    _SmoothingTrainer(model, train_args(tmp_path), train_dataset=cb.index(Tokens()), callbacks=[rec, cb]).train()
    check_epochs(rec, cb, init, len(Tokens()), label_smoothing=0.3)
    assert cb._check.done and 2 <= cb._check.checked <= 4  # inconclusive at zero, conclusive later, then never again


class _BinaryTokens(Tokens):
    def __getitem__(self, i):
        item = super().__getitem__(i)
        return {**item, "labels": (item["labels"] % 2).double()[None]}  # (1,) float 0/1, as BCEWithLogitsLoss takes


def _bce(outputs, labels, num_items_in_batch=None):
    return F.binary_cross_entropy_with_logits(outputs.logits[:, 0], labels.view(-1))


def test_a_one_logit_head_trained_with_binary_cross_entropy_is_valued(tmp_path):
    """num_labels=1 with a BCE compute_loss_func (the model computes no loss): valued with binary cross-entropy,
    equal to the per-sample autograd oracle of F.binary_cross_entropy_with_logits."""
    model, data = tiny_bert(num_labels=1), _BinaryTokens()
    init = copy.deepcopy(model)
    rec, cb = Recorder(model), CHGCallback()
    Trainer(model, train_args(tmp_path), train_dataset=cb.index(data), callbacks=[rec, cb],
            compute_loss_func=_bce).train()
    assert len(cb.epoch_values) == 2
    m = copy.deepcopy(init)
    for e, records in enumerate(rec.epochs):
        x = [None] * len(data)
        for state, inputs, idx, y in records:
            m.load_state_dict(state)
            for r in range(len(idx)):
                logit = m(**{k: v[r:r + 1] for k, v in inputs.items()}).logits[:, 0]
                loss = F.binary_cross_entropy_with_logits(logit, y[r:r + 1].view(-1))
                gw, gb = torch.autograd.grad(loss, (m.classifier.weight, m.classifier.bias))
                x[int(idx[r])] = loss.detach() * torch.cat([gw, gb[:, None]], 1).reshape(-1)
        torch.testing.assert_close(cb.epoch_values[e], chg.chg_shapley(torch.stack(x)), rtol=1e-9, atol=1e-13)
    cb = CHGCallback()  # the same head trained on squared error: refused

    def mse(outputs, labels, num_items_in_batch=None):
        return F.mse_loss(outputs.logits[:, 0], labels.view(-1))
    trainer = Trainer(tiny_bert(num_labels=1), train_args(tmp_path), train_dataset=cb.index(_BinaryTokens()),
                      callbacks=[cb], compute_loss_func=mse)
    with pytest.raises(ValueError, match="is not the mean binary cross-entropy of the output layer's logits"):
        trainer.train()


def test_the_callbacks_hooks_leave_the_model_on_its_errors_and_with_close(tmp_path):
    """A loss-check error removes the callback's hooks (the model then trains without it); after an error of
    another cause, ``close()`` does (the next run's message says so)."""
    model, cb = tiny_bert(), CHGCallback()
    with pytest.raises(ValueError, match="is not the mean cross-entropy"):
        _SmoothingTrainer(model, train_args(tmp_path), train_dataset=cb.index(Tokens()), callbacks=[cb]).train()
    assert not model._forward_pre_hooks and not model._forward_hooks and not model.classifier._forward_hooks
    Trainer(model, train_args(tmp_path), train_dataset=Tokens()).train()

    class Broken(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            model(**inputs)
            raise RuntimeError("a bug in my compute_loss")

    model, cb = tiny_bert(), CHGCallback()
    with pytest.raises(RuntimeError, match="a bug in my compute_loss"):
        Broken(model, train_args(tmp_path), train_dataset=cb.index(Tokens()), callbacks=[cb]).train()
    with pytest.raises(ValueError, match=r"call callback.close\(\) first"):
        Trainer(model, train_args(tmp_path), train_dataset=Tokens()).train()
    cb.close()
    Trainer(model, train_args(tmp_path), train_dataset=Tokens()).train()
