"""Nothing is lost between epochs of an EpochValuer: an epoch that an error cut short is dropped
(``discard_epoch``; the separate pass and the HuggingFace callback drop it themselves), rows added twice in an epoch
are warned of, a head changed between epochs (or after a resume) is refused, a damaged checkpoint is refused, and under
torchrun a rank whose shard is empty takes part in the epoch's end while an error in one rank's rows stops every rank.

Oracle: a fresh valuer fed only the rows of the complete epoch (the values an uninterrupted run gives), compared bit
for bit."""
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import chg
from chg.valuation import RepeatedRowsWarning

N, B = 40, 8


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (N,), generator=g)


def _model(seed=0, C=3, D=5, bias=True):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, D), nn.ReLU(), nn.Linear(D, C, bias=bias)).double()


def _epoch(valuer, model, order, crash_at=None, lr=0.0):
    """One ride-along epoch over the rows in ``order`` (batches of B), an SGD step per batch; raises at batch
    ``crash_at`` (after the earlier batches were added)."""
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with chg.LastLayerTap(model) as tap:
        for b, start in enumerate(range(0, len(order), B)):
            if b == crash_at:
                raise RuntimeError("CUDA out of memory (simulated)")
            rows = order[start:start + B]
            logits, feat = tap.read(model(x[rows]))
            valuer.add_logits(rows, logits, y[rows], feat, tap.bias)
            opt.zero_grad()
            nn.functional.cross_entropy(logits, y[rows]).backward()
            opt.step()


# ---- 1. an epoch cut short by an error ------------------------------------------------------------------------------

def test_discard_epoch_drops_a_cut_short_epoch_and_the_rerun_equals_an_uninterrupted_run():
    """The loop of the docs: an ``except`` around the epoch calls discard_epoch; the epoch run again (other batches:
    its last rows are dropped, as drop_last would) gives the values of a valuer that saw only the rerun, bit for bit,
    and no warning. The ended epochs are kept."""
    first, rerun = torch.randperm(N, generator=torch.Generator().manual_seed(1)), torch.arange(N - 4)
    valuer = chg.EpochValuer(N, partial_epochs=True)
    _epoch(valuer, _model(), torch.arange(N))
    valuer.end_epoch()
    model = _model(seed=3)  # other parameters in the epoch cut short: stale factors would differ
    try:
        _epoch(valuer, model, first, crash_at=4, lr=0.5)
    except RuntimeError:
        assert valuer.discard_epoch() == 4 * B  # the rows added before the error
    assert valuer.store.size == 0 and valuer.epochs == 1
    _epoch(valuer, _model(seed=1), rerun)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RepeatedRowsWarning)
        with pytest.warns(UserWarning, match="4 of the 40 rows were not added"):
            got = valuer.end_epoch()
    want = chg.EpochValuer(N, partial_epochs=True)
    _epoch(want, _model(seed=1), rerun)
    with pytest.warns(UserWarning, match="4 of the 40 rows were not added"):
        torch.testing.assert_close(got, want.end_epoch(), rtol=0, atol=0, equal_nan=True)  # bit for bit
    assert int(torch.isnan(got).sum()) == 4  # the rows the rerun did not reach: not valued with stale factors
    assert valuer.discard_epoch() == 0 and valuer.epochs == 2


def test_rows_added_twice_in_an_epoch_are_warned_of_naming_how_many_and_the_causes():
    """Without discard_epoch the cut-short epoch's rows stay: end_epoch warns, naming how many rows came more than
    once, that each counts once with its last factors, and the likely causes."""
    valuer = chg.EpochValuer(N, partial_epochs=True)
    with pytest.raises(RuntimeError):
        _epoch(valuer, _model(seed=3), torch.arange(N), crash_at=2)
    _epoch(valuer, _model(), torch.arange(N))
    with pytest.warns(RepeatedRowsWarning) as record:
        valuer.end_epoch()
    (msg,) = [str(w.message) for w in record if w.category is RepeatedRowsWarning]
    assert "16 row(s) were added more than once this epoch" in msg
    assert "each counts once, with the factors of its last addition" in msg
    assert "discard_epoch()" in msg and "a sampler or data set that repeats rows" in msg


def test_distributed_sampler_never_repeats_a_row_within_a_rank():
    """The padding of DistributedSampler repeats rows across ranks, never within one: a rank's shard never triggers
    the warning (every n up to 13, 1 to 6 ranks, shuffled or not)."""
    for n in range(1, 14):
        for world in range(1, 7):
            for shuffle in (False, True):
                for rank in range(world):
                    rows = list(DistributedSampler(range(n), world, rank, shuffle=shuffle, seed=2))
                    assert len(rows) == len(set(rows)), (n, world, rank)


def test_the_callbacks_end_epoch_silences_the_warning_only_for_expected_repeats():
    """accelerate's even_batches (the HuggingFace Trainer under torchrun) pads a process's last batches with rows
    from the epoch's start, which may be its own: the callbacks' end_epoch is told so (repeats=True)."""
    from chg.integrations.rows import end_epoch
    x, y = _data()
    for repeats in (False, True):
        valuer = chg.EpochValuer(N)
        _epoch(valuer, _model(), torch.cat([torch.arange(N), torch.arange(3)]))
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            end_epoch(valuer, "causes", repeats=repeats)
        assert any(w.category is RepeatedRowsWarning for w in record) is not repeats


def test_a_separate_pass_cut_short_drops_its_rows():
    """value_epoch whose loader fails mid-pass leaves no row behind: run again it gives a fresh valuer's values,
    without a warning."""
    x, y = _data()
    batches = [(x[r], y[r], r) for r in torch.arange(N).split(B)]

    def failing():
        yield from batches[:3]
        raise OSError("the data set's file went away")

    valuer, model = chg.EpochValuer(N), _model()
    with pytest.raises(OSError):
        valuer.value_epoch(model, failing())
    assert valuer.store.size == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RepeatedRowsWarning)
        got = valuer.value_epoch(model, batches)
    assert torch.equal(got, chg.EpochValuer(N).value_epoch(model, batches))


def test_the_huggingface_callback_drops_the_epoch_under_way_when_closed():
    """HuggingFace's Trainer has no exception event: close() (called after an error, and at the end of training)
    drops the epoch under way; the ended epochs stay."""
    pytest.importorskip("transformers")
    from chg.integrations.huggingface import CHGCallback
    cb = CHGCallback()
    cb.valuer = chg.EpochValuer(N)
    _epoch(cb.valuer, _model(), torch.arange(N))
    cb.valuer.end_epoch()
    with pytest.raises(RuntimeError):
        _epoch(cb.valuer, _model(), torch.arange(N), crash_at=2)
    cb.close()
    assert cb.valuer.store.size == 0 and cb.valuer.epochs == 1


# ---- 2. a head changed between epochs -------------------------------------------------------------------------------

def test_a_head_changed_between_ride_along_epochs_is_refused():
    """A new output layer (another C) after epoch 0, with a new tap: refused at the new epoch's first batch."""
    model = _model()
    valuer = chg.EpochValuer(N)
    _epoch(valuer, model, torch.arange(N))
    valuer.end_epoch()
    model[2] = nn.Linear(5, 4).double()
    with pytest.raises(ValueError, match=r"add_logits: values of different heads are not averaged: the epochs so far "
                                         r"were valued with an output layer of 3 output\(s\) on 5 features, with a "
                                         r"bias, this one has 4 output\(s\) on 5 features, with a bias .* build a new "
                                         r"EpochValuer"):
        _epoch(valuer, model, torch.arange(N))
    assert valuer.epochs == 1


@pytest.mark.parametrize("other", [dict(D=4), dict(bias=False), dict(C=4)])
def test_the_head_is_in_the_checkpoint_and_a_resumed_valuer_refuses_another(other):
    """state_dict records (C, D, bias); a valuer resumed from it refuses another head (separate pass and ride-along)
    and takes the same one; a checkpoint without the record (0.3.0) still loads and accepts the first head."""
    x, y = _data()
    loader = DataLoader(chg.IndexedDataset(TensorDataset(x, y)), batch_size=B)
    valuer = chg.EpochValuer(N)
    valuer.value_epoch(_model(), loader)
    state = valuer.state_dict()
    assert state["head"] == (3, 5, True)
    resumed = chg.EpochValuer(N)
    resumed.load_state_dict(state)
    with pytest.raises(ValueError, match="values of different heads are not averaged"):
        resumed.value_epoch(_model(**other), loader)
    with pytest.raises(ValueError, match="values of different heads are not averaged"):
        _epoch(resumed, _model(**other), torch.arange(N))
    resumed.value_epoch(_model(seed=2), loader)  # the same head, another θ
    assert resumed.epochs == 2
    old = {k: v for k, v in state.items() if k != "head"}
    older = chg.EpochValuer(N)
    older.load_state_dict(old)
    older.value_epoch(_model(**other), loader)
    assert older.state_dict()["head"] != (3, 5, True)


# ---- 3. a damaged checkpoint ----------------------------------------------------------------------------------------

def test_a_checkpoint_with_epoch_values_of_another_length_is_refused():
    valuer = chg.EpochValuer(N)
    for _ in range(2):
        _epoch(valuer, _model(), torch.arange(N))
        valuer.end_epoch()
    state = valuer.state_dict()
    state["epoch_values"] = [v[:-1] for v in state["epoch_values"]]
    with pytest.raises(ValueError, match=r"load_state_dict: epoch 0 of the checkpoint holds 39 values, but this "
                                         r"valuer has 40 rows \(one value each\)"):
        chg.EpochValuer(N).load_state_dict(state)


# ---- 6. torchrun: a rank with an empty shard, an error on one rank ------------------------------------------------

DDP_SCRIPT = textwrap.dedent('''
    import json, sys, warnings
    import torch, torch.distributed as dist
    import chg
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    g = torch.Generator().manual_seed(0)
    n = 10
    logits = torch.randn(n, 3, generator=g, dtype=torch.float64)
    feat = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 3
    out = {}

    def case(name, rows, partial=False, bad_index=False):
        """rows: this rank's rows (None: no add_logits at all)."""
        v = chg.EpochValuer(n, partial_epochs=partial)
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                if rows is not None:
                    idx = rows + n if bad_index else rows
                    v.add_logits(idx, logits[rows], y[rows], feat[rows], True)
                vals = v.end_epoch()
            out[name] = {"values": [None if x != x else x for x in vals.tolist()],
                         "warnings": [str(x.message) for x in w]}
        except ValueError as e:
            out[name] = {"error": str(e)}

    mine = lambda r0, r1: r0 if rank == 0 else r1
    case("empty_partial", mine(torch.arange(0, 6), torch.arange(0)), partial=True)
    case("skipadd_partial", mine(torch.arange(0, 6), None), partial=True)
    case("empty_all_rows_on_rank0", mine(torch.arange(n), torch.arange(0)))
    case("empty_rows_missing", mine(torch.arange(0, 6), torch.arange(0)))
    case("bad_index_on_rank1", mine(torch.arange(0, 5), torch.arange(5, 10)), bad_index=rank == 1)
    case("after_the_errors", mine(torch.arange(0, 5), torch.arange(5, 10)))
    json.dump(out, open(sys.argv[1] + f"/rank{rank}.json", "w"))
    dist.destroy_process_group()
''')


def test_torchrun_a_rank_with_no_rows_takes_part_and_one_ranks_error_stops_every_rank(tmp_path):
    """Two processes (gloo): rank 1 with an empty shard takes part in the epoch's end (partial_epochs=True: the rows
    of rank 0 valued as one process values them, on both ranks; False: fine when rank 0 added every row, else the same
    error on both ranks); an index out of range on rank 1 is its own error there and one naming rank 1 on rank 0;
    the next epoch works (no rank left in a collective)."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-4000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 3, generator=g, dtype=torch.float64)
    feat = torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.arange(10) % 3

    def single(rows, partial=False):
        v = chg.EpochValuer(10, partial_epochs=partial)
        v.add_logits(rows, logits[rows], y[rows], feat[rows], True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return v.end_epoch()

    for name, want in (("empty_partial", single(torch.arange(6), True)),
                       ("skipadd_partial", single(torch.arange(6), True)),
                       ("empty_all_rows_on_rank0", single(torch.arange(10))),
                       ("after_the_errors", single(torch.arange(10)))):
        for r in (r0, r1):
            assert "values" in r[name], (name, r[name])
            got = torch.tensor([float("nan") if x is None else x for x in r[name]["values"]], dtype=torch.float64)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14, equal_nan=True)
    assert any("4 of the 10 rows were not added this epoch" in w and "rank(s) [1] of 2 added none" in w
               for w in r0["empty_partial"]["warnings"])
    assert r0["empty_rows_missing"] == r1["empty_rows_missing"]
    assert "4 of the 10 rows were not added this epoch" in r0["empty_rows_missing"]["error"]
    assert "indices must lie in [0, 10)" in r1["bad_index_on_rank1"]["error"]
    assert "the rows of rank(s) [1] of 2 failed the epoch's checks" in r0["bad_index_on_rank1"]["error"]
