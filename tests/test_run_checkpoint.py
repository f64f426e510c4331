"""Nothing is lost in a long run of value_data, value_sequences or ``chg value``: with ``checkpoint=``
(``--checkpoint``) a run cut short mid-epoch and started again resumes after its last finished epoch and ends with the
values and weights of the run that was not cut short, bit for bit (dropout's random stream included); the finished
run's file returns its values without training, or trains only the epochs added; a file of another run is refused,
naming what differs, and leaves the model as it was (chg.io.RunCheckpoint)."""
import numpy as np
import pytest
import torch
from torch import nn

import chg
from chg import cli
from chg.io import CheckpointError

N, D, C = 120, 6, 3
FINGERPRINT = N + 2 * chg.io.STABLE_ROWS  # rows read to identify the data: the first 16 twice (stable?), then all


def _model(hidden=16):
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(D, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, C))


class Rows(torch.utils.data.Dataset):
    """N rows of a fixed synthetic problem; counts the rows fetched, and raises at the ``crash``-th fetch."""

    def __init__(self, crash=0, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(N, D, generator=g), torch.randint(0, C, (N,), generator=g)
        self.crash, self.fetched = crash, 0

    def __len__(self):
        return N

    def __getitem__(self, i):
        self.fetched += 1
        if self.fetched == self.crash:
            raise RuntimeError("simulated crash")
        return self.x[i], self.y[i]


def _same(a, b):
    return np.array_equal(np.asarray(a.history), np.asarray(b.history), equal_nan=True)


def _weights_equal(m1, m2):
    return all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values()))


@pytest.mark.parametrize("mode", ["pass", "ride"])
def test_a_run_cut_short_resumes_to_the_uncut_values_bit_for_bit(tmp_path, mode):
    kw = dict(epochs=3, mode=mode, batch_size=32, seed=5)
    whole_model, whole_data = _model(), Rows()
    whole = chg.value_data(whole_model, whole_data, **kw)
    per_epoch = N * (2 if mode == "pass" else 1)  # a separate pass reads every row once more
    probe = whole_data.fetched - 3 * per_epoch  # rows value_data reads to learn what the data is
    assert 0 <= probe <= 2
    path = tmp_path / "run.pt"
    with pytest.raises(RuntimeError, match="simulated crash"):  # in the second epoch's training
        chg.value_data(_model(), Rows(crash=probe + FINGERPRINT + 2 * per_epoch - 50), checkpoint=path, **kw)
    assert path.exists()
    data, model = Rows(), _model()
    resumed = chg.value_data(model, data, checkpoint=path, **kw)
    assert data.fetched == probe + FINGERPRINT + 2 * per_epoch  # + the fingerprint, epochs 2 and 3
    assert _same(resumed, whole) and _weights_equal(model, whole_model)
    # the finished run's file: the same call returns the values without training
    data, model = Rows(), _model()
    again = chg.value_data(model, data, checkpoint=path, **kw)
    assert data.fetched == probe + FINGERPRINT and _same(again, whole) and _weights_equal(model, whole_model)


def test_a_run_cut_in_its_first_epoch_and_retried_with_the_same_model_object(tmp_path):
    """A notebook's Ctrl-C in the first epoch, the cell run again: the model object is partly trained and the global
    random state has moved on; the file written before training (epoch 0) restores both (reviewer R8's
    r_first_epoch_retry.py)."""
    kw = dict(epochs=2, mode="ride", batch_size=32)
    whole_model = _model()
    whole = chg.value_data(whole_model, Rows(), **kw)
    path, model = tmp_path / "run.pt", _model()
    calls = {"n": 0}

    def crash_at_third_batch(module, inputs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C in the first epoch's third batch (of 4)
    hook = model.register_forward_pre_hook(crash_at_third_batch)
    with pytest.raises(KeyboardInterrupt):
        chg.value_data(model, Rows(), checkpoint=path, **kw)
    hook.remove()
    assert path.exists() and not _weights_equal(model, _model())  # trained two batches
    again = chg.value_data(model, Rows(), checkpoint=path, **kw)  # the same object, the random state moved on
    assert _same(again, whole) and _weights_equal(model, whole_model)


def test_more_epochs_train_only_the_new_ones(tmp_path):
    path = tmp_path / "run.pt"
    chg.value_data(_model(), Rows(), epochs=2, mode="ride", checkpoint=path)
    model, data = _model(), Rows()
    longer = chg.value_data(model, data, epochs=4, mode="ride", checkpoint=path)
    assert 2 * N + FINGERPRINT <= data.fetched <= 2 * N + FINGERPRINT + 2  # + value_data's probe, epochs 3 and 4
    fresh_model = _model()
    fresh = chg.value_data(fresh_model, Rows(), epochs=4, mode="ride")
    assert _same(longer, fresh) and _weights_equal(model, fresh_model)
    assert len(longer.history) == 4


def test_a_file_of_another_run_is_refused_and_changes_nothing(tmp_path):
    path = tmp_path / "run.pt"
    chg.value_data(_model(), Rows(), epochs=2, lr=0.01, checkpoint=path)
    cases = [(dict(lr=0.02), "is of a run with lr=0.01; this run has lr=0.02"),
             (dict(label_smoothing=0.1), "with loss="),
             (dict(epochs=1), "holds 2 finished epochs, more than the 1 asked for"),
             (dict(data=Rows(seed=1)), "other training data")]
    for change, needle in cases:
        kw = dict(epochs=2, lr=0.01)
        data = change.pop("data", Rows())
        kw.update(change)
        model = _model()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(CheckpointError, match=needle) as err:
            chg.value_data(model, data, checkpoint=path, **kw)
        assert f"delete {path}" in str(err.value)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model = _model(hidden=8)  # another architecture: refused, the model left as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"another model: .* at line 2 \('\(0\): Linear\(in_features=6, "
                                              r"out_features=16, bias=True\)' there"):
        chg.value_data(model, Rows(), epochs=2, lr=0.01, checkpoint=path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    class Hidden(nn.Module):  # a module whose printed structure does not show its sizes
        def __init__(self, width):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(width, D))
            self.head = nn.Linear(width, C)

        def forward(self, x):
            return self.head(x @ self.w.T)

        def __repr__(self):
            return "Hidden()"

    hidden = tmp_path / "hidden.pt"
    chg.value_data(Hidden(4), Rows(), epochs=1, checkpoint=hidden)
    model = Hidden(5)  # its printed structure is the same: its parameters' shapes tell it
    with pytest.raises(CheckpointError, match=r"its parameters differs at line 1 \('w float32 \(4, 6\)' there"):
        chg.value_data(model, Rows(), epochs=1, checkpoint=hidden)
    state = torch.load(hidden)  # a damaged file: settings that match, weights that do not fit
    state["model"]["head.weight"] = torch.zeros(C, 7)
    torch.save(state, hidden)
    model = Hidden(4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"does not fit this run's model: its entries \['head.weight'\]"):
        chg.value_data(model, Rows(), epochs=1, checkpoint=hidden)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    state["model"]["head.weight"] = torch.zeros(C, 4)  # the weights fit, the valuer's record does not: undone
    state["valuer"]["epoch_values"] = [torch.zeros(N - 1, dtype=torch.float64)]
    torch.save(state, hidden)
    with pytest.raises(CheckpointError, match="does not fit this run's model, optimiser or valuer"):
        chg.value_data(model, Rows(), epochs=1, checkpoint=hidden)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    dropout = _model()
    dropout[2].p = 0.5  # the same class and shapes, another dropout rate
    with pytest.raises(CheckpointError, match=r"another model: its printed structure differs at line 4 "
                                              r"\('\(2\): Dropout\(p=0.3, inplace=False\)' there"):
        chg.value_data(dropout, Rows(), epochs=2, lr=0.01, checkpoint=path)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="is not a run checkpoint of chg"):
        chg.value_data(_model(), Rows(), epochs=2, checkpoint=other)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read as a run checkpoint"):
        chg.value_data(_model(), Rows(), epochs=2, checkpoint=tmp_path / "text.pt")
    with pytest.raises(TypeError, match="checkpoint must be a file path"):
        chg.value_data(_model(), Rows(), epochs=2, checkpoint=True)


class Edited(Rows):
    """Rows with one middle row changed, or rows 1..n−2 in reverse order."""

    def __init__(self, how):
        super().__init__()
        if how == "middle":
            self.x[N // 2, 0] += 1.0
        else:
            self.x[1:-1], self.y[1:-1] = self.x[1:-1].flip(0), self.y[1:-1].flip(0)


class Augmented(Rows):
    """Rows with noise drawn at each read (a random transform)."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x + 0.01 * torch.randn(D), y


def test_any_data_set_is_fingerprinted_by_every_row(tmp_path):
    """Only the first and last rows of a data set other than a TensorDataset identified it: a middle row changed, or
    the middle rows reordered, resumed on the old run (reviewer R8's r_custom_dataset_changed.py). Augmentation drawn
    from torch's generator reads the same under the check's fixed seed; rows drawn from a generator of the data
    set's own cannot be checked: a warning."""
    path = tmp_path / "run.pt"
    chg.value_data(_model(), Rows(), epochs=1, checkpoint=path)
    for how in ("middle", "reversed"):
        with pytest.raises(CheckpointError, match="other training data"):
            chg.value_data(_model(), Edited(how), epochs=1, checkpoint=path)
    aug = tmp_path / "aug.pt"  # noise from torch's generator: read under a fixed seed, the same in every run
    chg.value_data(_model(), Augmented(), epochs=1, checkpoint=aug)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(chg.value_data(_model(), Augmented(), epochs=2, checkpoint=aug).history) == 2
    own = tmp_path / "own.pt"  # noise from a generator of the data set's own: cannot be checked
    chg.value_data(_model(), OwnGenerator(), epochs=1, checkpoint=own)
    with pytest.warns(UserWarning, match="rows read differently each time"):
        chg.value_data(_model(), OwnGenerator(), epochs=2, checkpoint=own)


def test_a_path_that_cannot_be_written_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("x")
    data = Rows()
    with pytest.raises(OSError, match="checkpoint .* cannot be written"):
        chg.value_data(_model(), data, epochs=1, checkpoint=tmp_path / "file" / "run.pt")
    assert data.fetched <= 2 + FINGERPRINT  # no epoch ran


def test_a_tensor_data_set_is_fingerprinted_by_every_row(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, D, generator=g), torch.randint(0, C, (N,), generator=g)
    path = tmp_path / "run.pt"
    chg.value_data(_model(), (x, y), epochs=1, checkpoint=path)
    x2 = x.clone()
    x2[N // 2, 0] += 1.0  # one value of a middle row
    with pytest.raises(CheckpointError, match="other training data"):
        chg.value_data(_model(), (x2, y), epochs=1, checkpoint=path)
    assert len(chg.value_data(_model(), (x.clone(), y.clone()), epochs=1, checkpoint=path).history) == 1  # same rows


def test_value_sequences_resumes_bit_for_bit(tmp_path):
    pytest.importorskip("transformers")
    from test_sequence import _docs, _gpt2

    class Docs(torch.utils.data.Dataset):
        def __init__(self, crash=0):
            self.items, self.crash, self.fetched = _docs(7), crash, 0

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            self.fetched += 1
            if self.fetched == self.crash:
                raise RuntimeError("simulated crash")
            return self.items[i]

    kw = dict(mode="ride", epochs=3, batch_size=3, lr=1e-2)
    whole_model = _gpt2()
    whole = chg.sequence.value_sequences(whole_model, Docs(), **kw)
    path = tmp_path / "lm.pt"
    with pytest.raises(RuntimeError, match="simulated crash"):  # in the third epoch
        chg.sequence.value_sequences(_gpt2(), Docs(crash=2 * 7 + 7 + 4), checkpoint=path, **kw)
    model = _gpt2()
    resumed = chg.sequence.value_sequences(model, Docs(), checkpoint=path, **kw)
    assert _same(resumed, whole) and _weights_equal(model, whole_model)
    classifier = tmp_path / "classifier.pt"
    chg.value_data(_model(), Rows(), epochs=1, checkpoint=classifier)
    with pytest.raises(CheckpointError, match="is of a run of value_data, not of value_sequences"):
        chg.value_data(_gpt2(), Docs(), checkpoint=classifier, **kw)  # (documents: value_data is value_sequences)


def test_the_command_line_resumes_and_refuses_another_run(tmp_path, capsys):
    import pandas as pd
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(80, 4)), columns=list("abcd"))
    frame["target"] = rng.integers(0, 3, 80)
    csv = tmp_path / "d.csv"
    frame.to_csv(csv, index=False)
    ck = tmp_path / "run.pt"

    def value(out, *args):
        return cli.main(["value", str(csv), "--label", "target", "--out", str(tmp_path / out), "--no-progress",
                         "--quiet", *args])

    assert value("fresh", "--epochs", "3") == 0
    assert value("first", "--epochs", "2", "--checkpoint", str(ck)) == 0
    assert value("resumed", "--epochs", "3", "--checkpoint", str(ck)) == 0
    fresh = pd.read_csv(tmp_path / "fresh" / "values.csv")
    resumed = pd.read_csv(tmp_path / "resumed" / "values.csv")
    assert fresh["value"].tolist() == resumed["value"].tolist()
    capsys.readouterr()
    assert value("other", "--epochs", "3", "--lr", "0.1", "--checkpoint", str(ck)) == 2
    assert "--checkpoint: checkpoint" in capsys.readouterr().err


class Flipped(Rows):
    """Rows flipped at p = 0.5 by torch's global generator (a torchvision-style random transform)."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return (x.flip(0) if torch.rand(()) < 0.5 else x), y


class OwnGenerator(Rows):
    """Rows with noise from a generator of the data set's own, unseeded."""

    def __init__(self):
        super().__init__()
        self.g = np.random.default_rng()

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x + float(self.g.normal()), y


def test_augmentation_by_the_global_generators_is_read_the_same_in_every_run():
    """Only row 0 was read twice to tell augmented data: a flip at p = 0.5 escaped half the time and was then
    fingerprinted under whatever random state the run had, so a genuine resume was refused as "other training data"
    (reviewer R9's ck_aug2.py). The rows are read under one fixed seed of torch's, NumPy's and Python's generators;
    a generator of the data set's own is told (None) by its first 16 rows read twice."""
    import random
    prints = set()
    for seed in range(6):
        torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)
        state = torch.get_rng_state()
        prints.add(chg.io.data_fingerprint(Flipped()))
        assert torch.equal(torch.get_rng_state(), state)  # left as it was
    assert len(prints) == 1 and None not in prints
    assert chg.io.data_fingerprint(OwnGenerator()) is None


def test_the_models_dtype_is_part_of_it(tmp_path):
    path = tmp_path / "run.pt"
    chg.value_data(_model(), Rows(), epochs=1, checkpoint=path)
    with pytest.raises(CheckpointError, match=r"another model: its parameters differs at line 1 \('0.weight "
                                              r"float32 \(16, 6\)' there, '0.weight float64 \(16, 6\)' here\)"):
        chg.value_data(_model().double(), Rows(), epochs=2, checkpoint=path)


def test_a_run_that_fails_in_its_first_epoch_does_not_block_the_corrected_run(tmp_path):
    """A mistake found in the first batch (a head of 2 classes for 3) left the file written before training, and the
    corrected run (a head of 3) was refused as another model (reviewer R9's ck1.py T4). A file with no finished
    epoch is replaced, with a warning; one with a finished epoch is still refused."""
    path = tmp_path / "run.pt"
    wrong = nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(ValueError, match="targets must lie in"):
        chg.value_data(wrong, Rows(), epochs=2, checkpoint=path)
    assert path.exists()
    with pytest.warns(UserWarning, match="holds no finished epoch of a run that is of a run of another model"):
        fixed = chg.value_data(_model(), Rows(), epochs=2, checkpoint=path)
    assert _same(fixed, chg.value_data(_model(), Rows(), epochs=2))
    with pytest.raises(CheckpointError, match="another model"):  # now it holds finished epochs
        chg.value_data(wrong, Rows(), epochs=2, checkpoint=path)


def test_a_folder_or_an_unwritable_path(tmp_path, capsys):
    with pytest.raises(CheckpointError, match=r"is a folder: pass a file path, e.g. .*run.pt$"):
        chg.value_data(_model(), Rows(), epochs=1, checkpoint=tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=r"cannot be written \(.*file is a file, not a folder\)"):
        chg.value_data(_model(), Rows(), epochs=1, checkpoint=tmp_path / "file" / "run.pt")
    import pandas as pd
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(30, 3)), columns=list("abc"))
    frame["target"] = np.arange(30) % 2
    frame.to_csv(tmp_path / "d.csv", index=False)
    status = cli.main(["value", str(tmp_path / "d.csv"), "--label", "target", "--out", str(tmp_path / "out"),
                       "--no-progress", "--quiet", "--checkpoint", str(tmp_path / "file" / "run.pt")])
    err = capsys.readouterr().err
    assert status == 2 and "--checkpoint: checkpoint" in err and "is a file, not a folder" in err
    assert "Traceback" not in err


class NumpyNoise(Rows):
    """Rows with noise from NumPy's global generator (a transform written with np.random)."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x + float(np.random.normal()) * 0.1, y


def test_numpy_and_python_global_random_states_are_restored(tmp_path):
    """Only torch's random state was saved: a transform drawing from np.random resumed on other draws, 0.012 off
    the uncut values (reviewer R10's np_aug_resume.py)."""
    import random
    kw = dict(epochs=3, mode="ride", batch_size=32)

    def start():  # what a new process does at its top
        np.random.seed(7), random.seed(7), torch.manual_seed(7)

    start()
    whole_model = _model()
    whole = chg.value_data(whole_model, NumpyNoise(), **kw)
    path = tmp_path / "run.pt"
    start()
    model = _model()
    calls = {"n": 0}

    def crash_in_epoch_two(module, inputs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("simulated crash")
    hook = model.register_forward_pre_hook(crash_in_epoch_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        chg.value_data(model, NumpyNoise(), checkpoint=path, **kw)
    hook.remove()
    start()
    model = _model()
    resumed = chg.value_data(model, NumpyNoise(), checkpoint=path, **kw)
    assert _same(resumed, whole) and _weights_equal(model, whole_model)


def test_lazy_layers_and_reprs_with_memory_addresses(tmp_path):
    """A lazy layer's uninitialised parameter crashed the model's signature (reviewer R10's lazy_ckpt.py); a repr
    that prints a memory address ("<function <lambda> at 0x7f…>") could never match in another process."""
    torch.manual_seed(0)
    lazy = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, C))
    path = tmp_path / "lazy.pt"
    chg.value_data(lazy, Rows(), epochs=1, checkpoint=path)
    torch.manual_seed(0)
    assert len(chg.value_data(nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, C)), Rows(), epochs=2,
                              checkpoint=path).history) == 2
    sig = chg.io.model_signature(nn.Sequential(nn.LazyLinear(8)))
    assert sig["parameters"][0] == "0.weight float32 (uninitialised)"
    # a refused resume leaves a lazy layer uninitialised: it was filled in from the file before the refusal (R11)
    other = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 2))
    run = chg.io.RunCheckpoint(path, "value_data", {}, Rows())
    run.settings = torch.load(path)["settings"]  # (through value_data the parameters' shapes refuse it earlier)
    with pytest.raises(CheckpointError, match=r"does not fit this run's model: its entries \['2.weight', '2.bias'\]"):
        run.resume(other, torch.optim.SGD(other[2].parameters(), lr=0.1), chg.EpochValuer(N), torch.Generator(), 5)
    assert isinstance(other[0].weight, nn.parameter.UninitializedParameter)

    class Fn(nn.Module):
        def __init__(self, f):
            super().__init__()
            self.f = f

        def forward(self, x):
            return self.f(x)

        def extra_repr(self):
            return f"f={self.f}"
    a = chg.io.model_signature(nn.Sequential(nn.Linear(D, 4), Fn(lambda t: t)))
    b = chg.io.model_signature(nn.Sequential(nn.Linear(D, 4), Fn(lambda t: t)))  # another function object
    assert " at 0x" not in a["model"] and a["model"] == b["model"]
