"""chg.integrations.lightning.CHGCallback across checkpoints: ``trainer.fit(..., ckpt_path=...)``.

The reviewer's t7_pl.py: a fit of 2 epochs saved with ModelCheckpoint, resumed to max_epochs=4 with the callback, had
``epoch_values`` of 2 epochs and ``values`` the mean of epochs 2-3, without a word. The callback's state now rides in
the checkpoint. Oracle: the uninterrupted 4-epoch fit. The resumed fit is bit-identical to it on the CPU in float64
when (a) the module is float64 before the checkpoint is restored (Lightning restores the weights before
``precision="64-true"`` converts the module: a float32 module would round them) and (b) the shuffling depends on the
epoch alone (a ``DistributedSampler`` of one replica, whose ``set_epoch`` Lightning calls; ``shuffle=True`` draws
from torch's global RNG, which Lightning's checkpoints do not restore) — so the values are compared exactly.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

pl = pytest.importorskip("lightning.pytorch")
from chg.integrations.lightning import CHGCallback  # noqa: E402
from test_integrations_lightning import MLP, data, trainer  # noqa: E402


class Validated(MLP):
    """With a validation loop: the epoch's checkpoint is saved after validation, before ``on_train_epoch_end``."""

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))


def fit(max_epochs, callback=True, ckpt_path=None, checkpoint=None, validate=False, **kw):
    """One fit of the float64 MLP (SGD, lr 0.1) on the 23 rows in batches of 4 (6 per epoch), shuffled by epoch."""
    x, y = data()
    cb = CHGCallback(**(callback if isinstance(callback, dict) else {})) if callback is not False else None
    rows = cb.index(TensorDataset(x, y)) if cb is not None else TensorDataset(x, y)  # the same order
    loader = DataLoader(rows, batch_size=4, sampler=DistributedSampler(rows, num_replicas=1, rank=0, seed=0))
    callbacks = ([cb] if cb is not None else []) + ([checkpoint] if checkpoint is not None else [])
    module = (Validated if validate else MLP)().double()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*(num_workers|callbacks used to create the checkpoint|resuming from a "
                                          "checkpoint that ended before).*")
        trainer(callbacks, max_epochs=max_epochs, enable_checkpointing=checkpoint is not None, **kw).fit(
            module, loader, DataLoader(TensorDataset(x, y), batch_size=8) if validate else None, ckpt_path=ckpt_path)
    return cb


@pytest.fixture(scope="module")
def uninterrupted():
    return fit(4)


@pytest.mark.parametrize("validate", [False, True], ids=["no-validation", "validation-each-epoch"])
def test_a_fit_resumed_from_an_epochs_end_continues_the_values(tmp_path, uninterrupted, validate):
    """Resumed from the checkpoint of epoch 1's end, the values over epochs 0-3 equal the uninterrupted fit's, bit for
    bit. With validation and ModelCheckpoint(save_on_train_epoch_end=False) (Lightning's own choice when validation
    runs within an epoch) the checkpoint is saved in on_validation_end, before on_train_epoch_end: the callback values
    an epoch right after its last training batch, so that checkpoint holds epoch 1 too."""
    fit(2, checkpoint=pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1,
                                                   save_on_train_epoch_end=not validate), validate=validate)
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]["CHGCallback"]  # plain data
    assert len(state["valuer"]["epoch_values"]) == 2 and state["epochs"] == [0, 1] and state["pending"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "epochs not valued" warning
        warnings.filterwarnings("ignore", ".*(num_workers|callbacks used to create|LeafSpec).*")
        resumed = fit(4, ckpt_path=tmp_path / "last.ckpt", validate=validate)
    assert len(resumed.epoch_values) == 4
    for e, (got, want) in enumerate(zip(resumed.epoch_values, uninterrupted.epoch_values)):
        assert torch.equal(got, want), f"epoch {e}"
    assert torch.equal(torch.as_tensor(resumed.values.values), torch.as_tensor(uninterrupted.values.values))
    assert resumed.values.history.shape == (4, 23) and "trainer_epochs" not in resumed.values.meta


def test_a_second_fit_of_the_same_trainer_continues_the_values(uninterrupted):
    """fit() again on the same trainer with more epochs (no checkpoint file) continues the callback's history."""
    x, y = data()
    cb = CHGCallback()
    rows = cb.index(TensorDataset(x, y))
    loader = DataLoader(rows, batch_size=4, sampler=DistributedSampler(rows, num_replicas=1, rank=0, seed=0))
    t, module = trainer([cb], max_epochs=2), MLP().double()
    t.fit(module, loader)
    t.fit_loop.max_epochs = 4
    t.fit(module, loader)
    assert len(cb.epoch_values) == 4
    assert all(torch.equal(a, b) for a, b in zip(cb.epoch_values, uninterrupted.epoch_values))


def test_a_checkpoint_without_the_callbacks_state_warns_and_values_the_epochs_after(tmp_path, uninterrupted):
    """A checkpoint made without the callback, resumed with it: a warning says the earlier epochs are not valued; the
    values are those of epochs 2-3 (equal to the uninterrupted fit's), and their meta says which epochs they are."""
    fit(2, callback=False, checkpoint=pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1))
    with pytest.warns(UserWarning, match=r"resumes at epoch 2 .*without CHGCallback's state: the epochs trained before "
                                         r"it are not valued"):
        resumed = fit(4, ckpt_path=tmp_path / "last.ckpt")
    assert len(resumed.epoch_values) == 2
    assert all(torch.equal(a, b) for a, b in zip(resumed.epoch_values, uninterrupted.epoch_values[2:]))
    assert resumed.values.meta["trainer_epochs"] == [2, 3]


@pytest.mark.parametrize("saved_with_callback", [True, False])
def test_a_checkpoint_saved_mid_epoch_is_refused(tmp_path, saved_with_callback):
    """A checkpoint of step 2 of epoch 0's 6 (every_n_train_steps): the rows of its first 2 batches are not in it and
    Lightning resumes the epoch at batch 2, so the epoch cannot be valued whole — refused, naming the remedy, never
    valued with rows missing (before: 'rows were not added this epoch … partial_epochs=True', which would have
    valued the rest)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "CHGCallback: training stopped after 2")
        fit(1, callback=saved_with_callback, max_steps=2,
            checkpoint=pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=2))
    where = "saved in the middle of an epoch, after 2 of its training batches" if saved_with_callback else \
        "resumes epoch 0 at its batch 2"
    with pytest.raises(ValueError, match=rf"CHGCallback: (the checkpoint was|this fit) {where}.*Resume from a "
                                         r"checkpoint saved at an epoch's end"):
        fit(2, ckpt_path=tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match=where):
        fit(2, callback={"partial_epochs": True}, ckpt_path=tmp_path / "last.ckpt")


def test_a_checkpoint_of_other_settings_or_another_format_is_refused(tmp_path):
    """Epochs valued under other settings are not averaged with new ones (EpochValuer.load_state_dict's check, in the
    callback's words); a state of another format is named, not misread."""
    fit(1, checkpoint=pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1))
    with pytest.raises(ValueError, match=r"CHGCallback: the checkpoint's values cannot be continued: .*other n or "
                                         r"options.*Resume with the callback settings"):
        fit(2, callback={"per_class": True}, ckpt_path=tmp_path / "last.ckpt")
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    checkpoint["callbacks"]["CHGCallback"]["format"] = "chg.integrations.lightning.CHGCallback/99"  # a later chg's
    torch.save(checkpoint, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match=r"state under 'CHGCallback' is not of this callback \(format "
                                         r"'chg.integrations.lightning.CHGCallback/99'"):
        fit(2, ckpt_path=tmp_path / "other.ckpt")
