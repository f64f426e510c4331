"""Issue 13, kind 3: every row enters each epoch's game exactly once, across ranks too; and the behaviours no test
pinned in the valuer: values() averages a row over the epochs it was valued in; value_epoch (and train's factor
pass) runs the model in eval mode, BatchNorm's running statistics untouched, the caller's mode restored."""
import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset
from torch.utils.data.distributed import DistributedSampler
from test_edges_oracle import close, dense_players, dense_values

import chg
from chg.valuation import EpochValuer, IndexedDataset


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def _data(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.arange(n) % 2


def _samples(x, y):
    return [(x[i:i + 1], y[i:i + 1]) for i in range(len(y))]


def test_issue_instance_drop_last_is_an_error_or_an_explicit_partial_epoch():
    model = _model()
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=4, drop_last=True)  # rows 8, 9 never seen
    with pytest.raises(ValueError, match=r"2 of the 10 rows were not added this epoch \(e.g. rows \[8, 9\]\)"):
        chg.EpochValuer(10).value_epoch(model, loader)
    valuer = chg.EpochValuer(10, partial_epochs=True)
    with pytest.warns(UserWarning, match="2 of the 10 rows"):
        got = valuer.value_epoch(model, loader)
    assert torch.isnan(got[8:]).all()
    close(got[:8], dense_values(model, model[-1], _samples(x[:8], y[:8])))  # the 8 seen are the epoch's game


def test_subset_sampler_in_a_ride_along_loop_is_an_error():
    """Another of the kind: a user's own loop whose sampler covers only part of the data."""
    model = _model()
    x, y = _data(12, seed=1)
    valuer = EpochValuer(12)
    loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=5, sampler=SubsetRandomSampler(range(9)))
    with chg.LastLayerTap(model) as tap:
        for xb, yb, idx in loader:
            valuer.add(idx, tap.factors(model(xb), yb), yb)
    with pytest.raises(ValueError, match="3 of the 12 rows were not added"):
        valuer.end_epoch()


def test_a_row_added_twice_on_one_rank_is_one_player():
    """A sampler with replacement (or a loop that repeats a batch): the row counts once (its last factors), and
    end_epoch warns, naming how many rows came twice."""
    model = _model()
    x, y = _data(7, seed=2)
    valuer = EpochValuer(7)
    f = chg.compute_factors(model, x, y)
    valuer.add(torch.arange(7), f, y)
    valuer.add(torch.tensor([2, 5]), f[torch.tensor([2, 5])], y[[2, 5]])
    with pytest.warns(chg.valuation.RepeatedRowsWarning, match=r"2 row\(s\) were added more than once"):
        got = valuer.end_epoch()
    close(got, dense_values(model, model[-1], _samples(x, y)))


def test_values_average_a_row_over_the_epochs_it_was_valued_in():
    """Three epochs at different θ; row 0 misses epoch 2 (partial_epochs): its value is the mean of epochs 1 and 3,
    each epoch's values the game of the rows seen then (oracle: autograd + Theorem 1 per epoch)."""
    x, y = _data(8, seed=3)
    valuer = EpochValuer(8, partial_epochs=True)
    oracle = []
    for epoch in range(3):
        model = _model(seed=epoch)  # a different θ each epoch
        rows = torch.arange(1, 8) if epoch == 1 else torch.arange(8)
        loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=3, sampler=list(rows.tolist()))
        if epoch == 1:
            with pytest.warns(UserWarning, match="1 of the 8 rows"):
                valuer.value_epoch(model, loader)
        else:
            valuer.value_epoch(model, loader)
        v = torch.full((8,), float("nan"), dtype=torch.float64)
        v[rows] = dense_values(model, model[-1], _samples(x[rows], y[rows]))
        oracle.append(v)
    oracle = torch.stack(oracle)
    want = oracle.nanmean(0)
    close(valuer.values().to_tensor(), want)
    assert abs(float(want[0]) - float(oracle[:, 0].nan_to_num().mean())) > 1e-6  # a mean over 3 would differ


class _BNDrop(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("start_training", [True, False])
def test_value_epoch_runs_in_eval_mode_and_restores_the_mode(start_training):
    torch.manual_seed(0)
    model = _BNDrop().double()
    x, y = _data(9, seed=4)
    model.train()
    model(x * 3 + 1)  # running statistics away from their initial values
    model.train(start_training)
    buffers = copy.deepcopy(dict(model.named_buffers()))
    got = EpochValuer(9).value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4))
    assert model.training == start_training
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name  # BatchNorm statistics untouched
    reference = copy.deepcopy(model).eval()
    close(got, dense_values(reference, reference.head, _samples(x, y)))  # eval mode: dropout off, running stats


def test_train_factor_pass_runs_in_eval_mode():
    """chg.experiments.train's selection factors (pool_factors): eval mode, BatchNorm untouched, mode restored."""
    from chg.experiments.train import TrainConfig, pool_factors
    torch.manual_seed(0)
    model = _BNDrop().double()
    x, y = _data(9, seed=5)
    model.train()
    model(x * 3 + 1)
    buffers = copy.deepcopy(dict(model.named_buffers()))
    f = pool_factors(model, x, y, TrainConfig(factor_batch_size=4), torch.device("cpu"))
    assert model.training
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    reference = copy.deepcopy(model).eval()
    xs = dense_players(reference, reference.head, _samples(x, y), weighting="gradient")
    close(f.err[:, :, None].mul(torch.cat([f.feat, torch.ones(9, 1, dtype=f.feat.dtype)], 1)[:, None, :])
          .reshape(9, -1), xs)


CONFIGS = [dict(), dict(per_class=True), dict(utility="hardness"), dict(utility="gradient", per_class=True)]


def _ddp_worker(rank, world, init_file, out_dir, n):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x, y = _data(n, seed=6)
    data = IndexedDataset(TensorDataset(x, y))
    out = {}
    for i, kw in enumerate(CONFIGS):
        model = _model(seed=1)
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=i)
        out[i] = EpochValuer(n, **kw).value_epoch(model, DataLoader(data, batch_size=3, sampler=sampler))
    # ride-along: each rank adds its shard's factors from its own batches (padded rows included)
    model, valuer = _model(seed=1), EpochValuer(n)
    with chg.LastLayerTap(model) as tap:
        for xb, yb, idx in DataLoader(data, batch_size=2, sampler=DistributedSampler(data, world, rank, seed=9)):
            valuer.add(idx, tap.factors(model(xb), yb), yb)
    out["ride"] = valuer.end_epoch()
    try:  # drop_last: a row no rank sees is an error on every rank
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, drop_last=True)
        EpochValuer(n).value_epoch(_model(seed=1), DataLoader(data, batch_size=3, sampler=sampler))
        out["drop_last"] = "no error"
    except ValueError as exc:
        out["drop_last"] = str(exc)
    torch.save(out, os.path.join(out_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_distributed_sampler_padding_gives_the_single_process_values(tmp_path):
    """gloo, 3 ranks, n = 10: DistributedSampler pads to 12 (two rows on two ranks). Every rank gets exactly the
    one-process values (whole pool, per class, hardness, gradient), in pass and ride-along; drop_last is an error."""
    n, world = 10, 3
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path), n), nprocs=world, join=True)
    x, y = _data(n, seed=6)
    model = _model(seed=1)
    for r in range(world):
        got = torch.load(tmp_path / f"{r}.pt")
        for i, kw in enumerate(CONFIGS):
            single = EpochValuer(n, **kw).value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4))
            torch.testing.assert_close(got[i], single, rtol=1e-12, atol=1e-14)
        close(got["ride"], dense_values(model, model[-1], _samples(x, y)))
        close(got[0], dense_values(model, model[-1], _samples(x, y)))
        assert "1 of the 10 rows were not added" in got["drop_last"]


class _WithThird(torch.utils.data.Dataset):
    """A data set of (x, y, third) items of its own: a record id, a sample weight, a constant — not the row index."""

    def __init__(self, x, y, third):
        self.x, self.y, self.third = x, y, third

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], self.third[i]


@pytest.mark.parametrize("third", ["record_id", "weight", "constant"])
def test_a_third_element_of_a_data_set_of_its_own_is_not_read_as_the_row_index(third):
    """Review 2: value_epoch read any (x, y, third) batch's third element as the row index — a permuted record id put
    every value on a wrong row silently, a float weight gave 'indices must be integers', a constant '149 of the 150
    rows were not added'. It is read as the index only over chg.IndexedDataset; a sequential loader over another
    data set numbers its rows in order (as value_data does), a shuffled one is an error saying to wrap it."""
    model = _model()
    x, y = _data(12)
    g = torch.Generator().manual_seed(1)
    col = {"record_id": torch.randperm(12, generator=g), "weight": torch.rand(12, generator=g, dtype=torch.float64),
           "constant": torch.zeros(12, dtype=torch.int64)}[third]
    want = dense_values(model, model[2], _samples(x, y))
    data = _WithThird(x, y, col)
    close(EpochValuer(12).value_epoch(model, DataLoader(data, batch_size=5)), want)
    close(chg.value_data(copy.deepcopy(model), data, epochs=1, lr=0.0, optimizer="sgd", momentum=0.0), want)
    with pytest.raises(ValueError, match=r"value_epoch: the loader's batches are \(x, y, third element\), but its data "
                                         r"set \(_WithThird\) is not a chg.IndexedDataset.*"
                                         r"DataLoader\(chg.IndexedDataset\(dataset\), ...\)"):
        EpochValuer(12).value_epoch(model, DataLoader(data, batch_size=5, shuffle=True))
    shuffled = DataLoader(IndexedDataset(data), batch_size=5, shuffle=True, generator=g)  # the fix the message names
    close(EpochValuer(12).value_epoch(model, shuffled), want)


def test_row_indices_that_are_known_are_read_where_they_are_given():
    """What keeps working: (x, y, index) batches written by hand in a list (indices as given, any order), a Subset of
    an IndexedDataset (the wrapped data set's rows), the trainer callbacks' cb.index, and value_data's batches."""
    model = _model()
    x, y = _data(12)
    want = dense_values(model, model[2], _samples(x, y))
    order = torch.randperm(12, generator=torch.Generator().manual_seed(2))
    close(EpochValuer(12).value_epoch(model, [(x[order[:7]], y[order[:7]], order[:7]),
                                              (x[order[7:]], y[order[7:]], order[7:])]), want)
    rows = torch.utils.data.Subset(IndexedDataset(TensorDataset(x, y)), order[:8].tolist())
    sub = chg.shapley_from_factors(chg.compute_factors(model, x[order[:8]], y[order[:8]]))
    got = EpochValuer(12, partial_epochs=True)
    with pytest.warns(UserWarning, match="4 of the 12 rows"):
        got.value_epoch(model, DataLoader(rows, batch_size=3, shuffle=True))
    close(got.values().to_tensor()[order[:8]], sub)
    from chg.integrations.rows import IndexedRows
    close(EpochValuer(12).value_epoch(model, DataLoader(IndexedRows(TensorDataset(x, y)), batch_size=5,
                                                        shuffle=True)), want)
    close(chg.value_data(copy.deepcopy(model), (x, y), epochs=1, lr=0.0, optimizer="sgd", momentum=0.0), want)
    assert chg.lastlayer.carries_index([]) and chg.lastlayer.carries_index(DataLoader(IndexedDataset(rows)))
    assert not chg.lastlayer.carries_index(DataLoader(TensorDataset(x, y)))
