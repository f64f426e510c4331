"""chg.integrations.lightning.CHGCallback inside lightning.pytorch.Trainer.fit().

Oracles, on a small float64 MLP LightningModule (precision="64-true"):
* replay: a callback of the test placed before CHG's records every training step (the parameters, the batch and its
  rows); the library's own ride-along path (LastLayerTap + EpochValuer.add_logits + end_epoch) fed the same batches in
  the same order at the same parameters gives the callback's values (rtol 1e-10);
* per-sample autograd: x_i = l_i · ∂l_i/∂[W | b] of the output layer at the row's step, under the loss training_step
  uses (plain, label-smoothed with class weights), then Theorem 1 (chg.chg_shapley) (rtol 1e-9);
* DDP on gloo, 2 CPU processes, learning rate 0: the values equal one process's separate pass at θ0
  (EpochValuer.value_epoch), with DistributedSampler padding one row onto both ranks.
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
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import chg

pl = pytest.importorskip("lightning.pytorch")
from chg.integrations.lightning import CHGCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lightning_trainer.py"
N = 23


def data(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


class MLP(pl.LightningModule):
    """5 → 8 → 3, tanh; cross-entropy with optional class weights and label smoothing; dict or tuple batches."""

    def __init__(self, lr=0.1, weight=None, label_smoothing=0.0, mse=False):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1 if mse else 3))
        self.lr, self.weight, self.smoothing, self.mse = lr, weight, label_smoothing, mse

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = (batch["x"], batch["labels"]) if isinstance(batch, dict) else batch
        if self.mse:
            return F.mse_loss(self(x).squeeze(1), y.double())
        return F.cross_entropy(self(x), y, weight=self.weight, label_smoothing=self.smoothing)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class DictRows(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def trainer(callbacks, **kw):
    base = dict(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, precision="64-true", num_sanity_val_steps=0)
    return pl.Trainer(callbacks=callbacks, **{**base, **kw})


class Recorder(pl.Callback):
    """Every training step's parameters, inputs, labels and rows, epoch by epoch (before CHG's callback strips the
    index)."""

    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        x, y, idx = (batch["x"], batch["labels"], batch["chg_index"]) if isinstance(batch, dict) else batch
        self.epochs[-1].append((copy.deepcopy(pl_module.net.state_dict()), x.clone(), y.clone(), idx.clone()))


def replay(net, records, n, **loss):
    valuer = chg.EpochValuer(n, **loss)
    m = copy.deepcopy(net)
    for state, x, y, idx in records:
        m.load_state_dict(state)
        with chg.LastLayerTap(m) as tap:
            logits, feat = tap.read(m(x))
            valuer.add_logits(idx, logits, y, feat, tap.bias)
    return valuer.end_epoch()


def autograd_values(net, records, n, weight=None, label_smoothing=0.0):
    m = copy.deepcopy(net)
    x_dense = [None] * n
    for state, x, y, idx in records:
        m.load_state_dict(state)
        head = m[-1]
        for r in range(len(idx)):
            loss = F.cross_entropy(m(x[r:r + 1]), y[r:r + 1], weight=weight, label_smoothing=label_smoothing)
            if weight is not None:  # the per-sample weighted loss (reduction='mean' of one row divides by w_y)
                loss = loss * weight[y[r]]
            gw, gb = torch.autograd.grad(loss, (head.weight, head.bias))
            x_dense[int(idx[r])] = loss.detach() * torch.cat([gw, gb[:, None]], 1).reshape(-1)
    return chg.chg_shapley(torch.stack(x_dense))


def check_epochs(rec, cb, net, n, **loss):
    assert len(rec.epochs) == len(cb.epoch_values) == 2
    for e, records in enumerate(rec.epochs):
        assert sorted(torch.cat([r[3] for r in records]).tolist()) == list(range(n))  # each row once per epoch
        got = cb.epoch_values[e]
        assert got.shape == (n,) and bool(torch.isfinite(got).all())
        torch.testing.assert_close(got, replay(net, records, n, **loss), rtol=1e-10, atol=1e-15)
        torch.testing.assert_close(got, autograd_values(net, records, n, **loss), rtol=1e-9, atol=1e-13)
    assert rec.epochs[0][0][3].tolist() != list(range(4))  # shuffled
    assert cb.values.history.shape == (2, n)


def test_tuple_batches_with_accumulation_equal_replay_and_autograd():
    x, y = data()
    module = MLP()
    init = copy.deepcopy(module.net).double()
    rec, cb = Recorder(), CHGCallback()
    loader = DataLoader(cb.index(TensorDataset(x, y)), batch_size=4, shuffle=True)
    trainer([rec, cb], accumulate_grad_batches=2).fit(module, loader)
    assert not torch.equal(rec.epochs[1][0][0]["2.weight"], init[2].weight)  # it trained
    check_epochs(rec, cb, init, N)
    assert not module.net[2]._forward_hooks  # the tap is closed


def test_dict_batches_with_class_weights_and_label_smoothing():
    x, y = data()
    w = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    module = MLP(weight=w, label_smoothing=0.1)
    init = copy.deepcopy(module.net).double()
    rec, cb = Recorder(), CHGCallback(weight=w, label_smoothing=0.1)
    loader = DataLoader(cb.index(DictRows(x, y)), batch_size=5, shuffle=True)
    trainer([rec, cb]).fit(module, loader)
    check_epochs(rec, cb, init, N, weight=w, label_smoothing=0.1)


def test_a_loss_the_callback_was_not_told_of_is_refused():
    x, y = data()
    cb = CHGCallback()  # training_step smooths its labels, the callback does not know
    with pytest.raises(ValueError, match="is not the mean cross-entropy"):
        trainer([cb]).fit(MLP(label_smoothing=0.3), DataLoader(cb.index(TensorDataset(x, y)), batch_size=4))


def test_a_regression_head_is_refused():
    x, y = data()
    cb = CHGCallback()
    with pytest.raises(ValueError, match="is not the mean binary cross-entropy"):
        trainer([cb]).fit(MLP(mse=True), DataLoader(cb.index(TensorDataset(x, y % 2)), batch_size=4))


def test_a_loader_without_the_index_is_refused():
    x, y = data()
    cb = CHGCallback()
    cb.index(TensorDataset(x, y))
    with pytest.raises(ValueError, match=r"carries no row index.*cb.index\(train_set\)"):
        trainer([cb]).fit(MLP(), DataLoader(TensorDataset(x, y), batch_size=4))


class _ResetHead(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            pl_module.net[2] = nn.Linear(8, 3).double()  # as timm's reset_classifier does


def test_a_head_replaced_between_epochs_is_an_error():
    x, y = data()
    cb = CHGCallback()
    with pytest.raises(RuntimeError, match="'net.2' was replaced during training"):
        trainer([_ResetHead(), cb]).fit(MLP(), DataLoader(cb.index(TensorDataset(x, y)), batch_size=4))
    assert len(cb.epoch_values) == 1


class _FailAt(MLP):
    def training_step(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 3:
            raise RuntimeError("out of memory (simulated)")
        return super().training_step(batch, batch_idx)


def test_an_error_mid_epoch_drops_the_epochs_rows():
    """An error stopped fit in the middle of epoch 1 (3 of its batches added): the callback drops those rows
    (EpochValuer.discard_epoch) — before, they stayed in the valuer and would have played in a later fit's epoch."""
    x, y = data()
    cb = CHGCallback()
    with pytest.raises(RuntimeError, match="simulated"):
        trainer([cb], max_epochs=3).fit(_FailAt(), DataLoader(cb.index(TensorDataset(x, y)), batch_size=4))
    assert len(cb.epoch_values) == 1 and cb.valuer.store.size == 0


DDP_SCRIPT = """
import sys, numpy as np, torch
sys.path.insert(0, {tests!r})
from test_integrations_lightning import MLP, data, trainer
from torch.utils.data import DataLoader, TensorDataset
from chg.integrations.lightning import CHGCallback
x, y = data()
cb = CHGCallback()
loader = DataLoader(cb.index(TensorDataset(x, y)), batch_size=4, shuffle=True)
t = trainer([cb], strategy="ddp", devices=2, max_epochs=1)
t.fit(MLP(lr=0.0), loader)
np.save({out!r} + f"/rank{{t.global_rank}}.npy", cb.values.history)
"""


def test_ddp_on_gloo_two_processes_equals_one_separate_pass(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(ROOT / "tests"), out=str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    x, y = data()
    valuer = chg.EpochValuer(N)
    want = valuer.value_epoch(MLP().double(), DataLoader(chg.IndexedDataset(TensorDataset(x, y)), batch_size=7))
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npy")
        assert got.shape == (1, N)
        np.testing.assert_allclose(got[0], want.numpy(), rtol=1e-10, atol=1e-15)


def test_example_runs_as_written(capsys):
    spec = importlib.util.spec_from_file_location("lightning_trainer_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    values = mod.main(epochs=2)
    assert isinstance(values, chg.Values) and values.epochs == 2 and bool(np.isfinite(values.values).all())
    assert "lowest-valued rows" in capsys.readouterr().out


# ---- the loss check: batch after batch until conclusive; partial epochs name the callback's setting ---------------

W3 = torch.tensor([1.0, 5.0, 0.2], dtype=torch.float64)


class ZeroHead(MLP):
    """MLP whose output layer starts at zero (zero logits: weighted mean CE = smoothed CE = log C at first)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with torch.no_grad():
            self.net[2].weight.zero_()
            self.net[2].bias.zero_()


@pytest.mark.parametrize("loss", [dict(weight=W3), dict(label_smoothing=0.3)])
def test_an_output_layer_at_zero_does_not_hide_a_loss_the_callback_was_not_told_of(loss):
    x, y = data()
    cb = CHGCallback()
    with pytest.raises(ValueError, match="is not the mean cross-entropy of the output layer's logits"):
        trainer([cb]).fit(ZeroHead(**loss), DataLoader(cb.index(TensorDataset(x, y)), batch_size=4, shuffle=True))
    assert not cb.epoch_values


def test_an_output_layer_at_zero_is_valued_and_the_check_stops_once_conclusive():
    x, y = data()
    module = ZeroHead(label_smoothing=0.3)
    init = copy.deepcopy(module.net).double()
    rec, cb = Recorder(), CHGCallback(label_smoothing=0.3)
    trainer([rec, cb]).fit(module, DataLoader(cb.index(TensorDataset(x, y)), batch_size=4, shuffle=True))
    check_epochs(rec, cb, init, N, label_smoothing=0.3)
    assert cb._check.done and 2 <= cb._check.checked <= 4  # zero logits could not tell smoothing apart; later ones did


class _Manual(MLP):
    """Manual optimisation: training_step returns nothing; its loss weights the classes."""

    def __init__(self):
        super().__init__(weight=W3)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, weight=self.weight)
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()


def test_manual_optimisation_is_checked_too():
    x, y = data()
    cb = CHGCallback()
    with pytest.raises(ValueError, match="is not the mean cross-entropy of the output layer's logits"):
        trainer([cb]).fit(_Manual(), DataLoader(cb.index(TensorDataset(x, y)), batch_size=4))
    module = _Manual()
    init = copy.deepcopy(module.net).double()
    rec, cb = Recorder(), CHGCallback(weight=W3)
    trainer([rec, cb]).fit(module, DataLoader(cb.index(TensorDataset(x, y)), batch_size=4, shuffle=True))
    check_epochs(rec, cb, init, N, weight=W3)


@pytest.mark.parametrize("case", ["limit_train_batches", "drop_last"])
def test_an_epoch_that_leaves_rows_out_names_the_callbacks_setting(case):
    x, y = data()
    cb = CHGCallback()
    loader = DataLoader(cb.index(TensorDataset(x, y)), batch_size=4, drop_last=case == "drop_last")
    fit = trainer([cb], **({"limit_train_batches": 0.5} if case == "limit_train_batches" else {}))
    with pytest.raises(ValueError, match=rf"{case}.*CHGCallback\(partial_epochs=True\)"):
        fit.fit(MLP(), loader)
    cb = CHGCallback(partial_epochs=True)
    loader = DataLoader(cb.index(TensorDataset(x, y)), batch_size=4, drop_last=case == "drop_last")
    with pytest.warns(UserWarning, match="rows were not added this epoch"):
        trainer([cb], max_epochs=1, **({"limit_train_batches": 0.5} if case == "limit_train_batches" else {})).fit(
            MLP(), loader)
    seen = 12 if case == "limit_train_batches" else 20  # 3 of 6 batches of 4; 5 whole batches of 4
    assert int(np.isfinite(cb.epoch_values[0].numpy()).sum()) == seen


class _Probe(MLP):
    """The last nn.Linear registered runs in the step but its output is not in the loss (a probe)."""

    def __init__(self):
        super().__init__()
        self.probe = nn.Linear(3, 3).double()

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.probe(logits.detach())
        return F.cross_entropy(logits, y)


def test_a_hooked_layer_the_loss_does_not_reach_is_an_error():
    x, y = data()
    cb = CHGCallback()
    with pytest.raises(ValueError, match=r"did not backpropagate through the output layer's logits.*layer="):
        trainer([cb]).fit(_Probe(), DataLoader(cb.index(TensorDataset(x, y)), batch_size=4))


def test_class_weights_of_a_class_absent_from_the_first_batches_are_still_checked():
    """A batch pins the weights of the classes in it only: trained with weight [1, 1, 5], the callback told nothing,
    the first batch (shuffle=False) holds classes 0 and 1 only — the check goes on until class 2 comes, and refuses
    (it stopped after the first batch and valued plain cross-entropy silently before: rel. error 0.999)."""
    x, _ = data(24)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1] + [2, 0, 1] * 5 + [2])
    cb = CHGCallback()
    with pytest.raises(ValueError, match="is not the mean cross-entropy of the output layer's logits"):
        trainer([cb]).fit(MLP(weight=torch.tensor([1.0, 1.0, 5.0], dtype=torch.float64)),
                          DataLoader(cb.index(TensorDataset(x, y)), batch_size=8, shuffle=False))
    assert cb._check.checked == 2 and cb._tap is None  # refused at the batch with class 2; the hook removed


class PooledHead(pl.LightningModule):
    """A head at every position (B, T, 4) → (B, T, 3), the logits of each row's last position; ``temperature``."""

    def __init__(self, temperature=1.0):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.head, self.temperature = nn.Linear(5, 4), nn.Linear(4, 3), temperature

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.head(torch.tanh(self.body(x)))[:, -1]
        return {"loss": F.cross_entropy(logits / self.temperature, y), "logits": logits}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_pooled_head_is_checked_too():
    """A head applied at every position whose output the module pools (training_step returns the pooled logits):
    the check reads each row's position from where the gradient reaches (it never ran on such heads before, and a
    temperature passed with a misleading warning)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, 5, generator=g, dtype=torch.float64), torch.arange(16) % 3
    cb = CHGCallback()
    trainer([cb]).fit(PooledHead(), DataLoader(cb.index(TensorDataset(x, y)), batch_size=8))
    assert cb._check.done and np.isfinite(cb.values.history).all()
    cb = CHGCallback()
    with pytest.raises(ValueError, match="is not the mean cross-entropy of the output layer's logits"):
        trainer([cb]).fit(PooledHead(temperature=2.0), DataLoader(cb.index(TensorDataset(x, y)), batch_size=8))


def test_an_error_during_fit_removes_the_callbacks_hook():
    """Whatever stops fit (here a loss the callback was not told of), the output layer is left without the tap's hook,
    and the module trains again without the callback."""
    x, y = data()
    module, cb = MLP(label_smoothing=0.3), CHGCallback()
    with pytest.raises(ValueError):
        trainer([cb]).fit(module, DataLoader(cb.index(TensorDataset(x, y)), batch_size=4, shuffle=True))
    assert not module.net[2]._forward_hooks
    trainer([]).fit(module, DataLoader(TensorDataset(x, y), batch_size=4))
