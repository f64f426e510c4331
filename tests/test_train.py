"""chg.experiments.train: determinism, kill-and-resume bit-identical, the weighted loss, the ResNet-18 path on CPU
(the Table 2/3
grid built on it is tested in tests/test_reproduce.py)."""
import dataclasses
from pathlib import Path

import pytest
import torch

import chg.selection as selection
from chg.experiments.data import DataBundle, Split, load_dataset
from chg.experiments.models import ResNet18, build_model
from chg.experiments.train import TrainConfig, _autocast, _prep, train


class Killed(RuntimeError):
    pass


def _digits_cfg(**kw):
    base = dict(dataset="digits", model="smallcnn", width=8, method="chg", fraction=0.2, epochs=6, select_every=2,
                batch_size=64, augment_pad=1, augment_flip=False, checkpoint_every=2, device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits", seed=3, noise_rate=0.3)
    keep = slice(0, 500)  # a smaller pool keeps the tests fast
    return dataclasses.replace(d, train=Split(d.train.x[keep], d.train.y[keep]), clean_train_y=d.clean_train_y[keep],
                               noisy=d.noisy[keep])


def test_same_seed_same_result(digits):
    a = train(_digits_cfg(epochs=3), digits).metrics
    b = train(_digits_cfg(epochs=3), digits).metrics
    assert a["test_acc"] == b["test_acc"] and a["final_indices"] == b["final_indices"]
    assert a["final_weights"] == b["final_weights"] and a["model_sha256"] == b["model_sha256"]
    c = train(_digits_cfg(epochs=3, seed=4), digits).metrics
    assert c["final_indices"] != a["final_indices"] or c["test_acc"] != a["test_acc"]


@pytest.mark.parametrize("method,kill_at", [("chg", 4), ("adaptive_random", 2), ("random", 3)])
def test_killed_run_resumes_bit_identical(tmp_path, digits, method, kill_at):
    cfg = _digits_cfg(method=method)
    ref = train(cfg, digits).metrics
    ckpt = tmp_path / "run.pt"

    def hook(epoch):
        if epoch == kill_at:  # after epoch kill_at: the last checkpoint is older for odd kill_at
            raise Killed

    with pytest.raises(Killed):
        train(cfg, digits, checkpoint=ckpt, hook=hook)
    assert ckpt.is_file()
    resumed = train(cfg, digits, checkpoint=ckpt).metrics
    for key in ("model_sha256", "test_acc", "val_acc", "final_indices", "final_weights", "selections",
                "selection_epochs", "subset_noisy_share"):
        assert resumed[key] == ref[key], key
    with pytest.raises(ValueError, match="different configuration"):
        train(dataclasses.replace(cfg, lr=0.01), digits, checkpoint=ckpt)


def test_state_digest_sees_one_bit():
    from chg.experiments.results import state_digest
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    a = state_digest(model.state_dict())
    assert a == state_digest({k: v.clone() for k, v in model.state_dict().items()})
    w = model[0].weight.data
    w.view(torch.int32)[0, 0] ^= 1  # flip the lowest bit of one float
    assert state_digest(model.state_dict()) != a
    w.view(torch.int32)[0, 0] ^= 1
    model[1].num_batches_tracked += 1  # a buffer counts too
    assert state_digest(model.state_dict()) != a


def test_weighted_loss_is_sum_wl_over_sum_w(monkeypatch, digits):
    """Scaling every weight by 7 changes nothing (Σ w l / Σ w), so a constant-weight method = unweighted training."""
    def const(c):
        def fn(inp):
            n = inp.labels.shape[0]
            return selection.Selection(torch.arange(0, n, 3), torch.full(((n + 2) // 3,), c))
        return selection.Selector(fn, needs_factors=False, adaptive=False)

    monkeypatch.setitem(selection.SELECTORS, "const1", const(1.0))
    monkeypatch.setitem(selection.SELECTORS, "const7", const(7.0))
    a = train(_digits_cfg(method="const1", epochs=2), digits).metrics
    b = train(_digits_cfg(method="const7", epochs=2), digits).metrics
    assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-9)

    def uneven(inp):  # the same subset, weights 1, 0.1, 1, 0.1, ...: must train differently if weights are used
        n = inp.labels.shape[0]
        k = (n + 2) // 3
        return selection.Selection(torch.arange(0, n, 3), torch.where(torch.arange(k) % 2 == 0, 1.0, 0.1))

    monkeypatch.setitem(selection.SELECTORS, "uneven", selection.Selector(uneven, needs_factors=False, adaptive=False))
    c = train(_digits_cfg(method="uneven", epochs=2), digits).metrics
    assert (c["test_acc"], c["val_acc"]) != (a["test_acc"], a["val_acc"])  # deterministic: ignored weights → equal


def test_noisy_share_is_reported(digits):
    m = train(_digits_cfg(method="full", epochs=1), digits).metrics
    assert m["pool_noisy_share"] == pytest.approx(float(digits.noisy.float().mean()))
    assert m["subset_noisy_share"] == pytest.approx(m["pool_noisy_share"]) and m["subset_size"] == m["pool_size"]


@pytest.mark.parametrize("method, epochs, R, expected", [("adaptive_random", 7, 3, [0, 3, 6]),
                                                        ("chg", 5, 2, [0, 2, 4]), ("random", 5, 2, [0]),
                                                        ("chg", 3, 1, [0, 1, 2])])
def test_selection_runs_at_epochs_0_R_2R(digits, method, epochs, R, expected):
    """Algorithm 2 line 3: an adaptive method runs at epochs 0, R, 2R, ...; a non-adaptive one once, at epoch 0."""
    m = train(_digits_cfg(method=method, epochs=epochs, select_every=R, checkpoint_every=epochs), digits).metrics
    assert m["selection_epochs"] == expected and m["selections"] == len(expected)


def _record_batch_sizes(monkeypatch):
    import chg.experiments.train as train_module
    sizes, real = [], train_module.augment_batch

    def recording(x, *args, **kwargs):
        sizes.append(int(x.shape[0]))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(train_module, "augment_batch", recording)
    return sizes


@pytest.mark.parametrize("k, expected", [(129, [64, 65]), (130, [64, 64, 2]), (1, [1])])
def test_a_one_point_last_batch_joins_the_one_before(monkeypatch, digits, k, expected):
    """An epoch over k points in batches of 64: a last batch of one point is merged into the one before it (an SGD step
    and BatchNorm statistics from one image hurt); a last batch of two is kept; a single-point subset is one batch."""
    def first_k(inp):
        return selection.Selection(torch.arange(k), torch.ones(k))

    monkeypatch.setitem(selection.SELECTORS, "first_k", selection.Selector(first_k, needs_factors=False,
                                                                           adaptive=False))
    sizes = _record_batch_sizes(monkeypatch)
    train(_digits_cfg(method="first_k", epochs=2, batch_size=64), digits)
    assert sizes == expected * 2


def test_subset_noisy_share_on_a_real_subset(digits):
    m = train(_digits_cfg(method="random", fraction=0.3, epochs=1), digits).metrics
    idx = m["final_indices"]
    noisy = digits.noisy.tolist()
    assert len(idx) == m["subset_size"] == 150 and 0 < sum(noisy[i] for i in idx) < len(idx)
    assert m["subset_noisy_share"] == pytest.approx(sum(noisy[i] for i in idx) / len(idx), abs=1e-6)  # float32
    assert m["pool_noisy_share"] == pytest.approx(sum(noisy) / len(noisy), abs=1e-6)


def test_the_selection_factor_pass_runs_in_eval_mode(monkeypatch, digits):
    """Single process, a model with BatchNorm and dropout: every factor pass of the selection sees the model in eval
    mode and leaves BatchNorm's running statistics as they were; training itself runs in train mode."""
    import chg.experiments.train as train_module

    def bn_dropout_model(name, num_classes, input_shape, width=None):
        return torch.nn.Sequential(torch.nn.Conv2d(input_shape[0], 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                   torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten(), torch.nn.Linear(4, num_classes))

    passes, real = [], train_module.compute_factors

    def recording(model, *args, **kwargs):  # whatever the factor path's signature: (model, x, y) or (model, batches)
        bn, modes = model[1], (model.training, model[3].training)
        before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
        out = real(model, *args, **kwargs)
        after = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
        passes.append(modes + (all(torch.equal(a, b) if torch.is_tensor(a) else a == b
                                   for a, b in zip(before, after)),))
        return out

    monkeypatch.setattr(train_module, "build_model", bn_dropout_model)
    monkeypatch.setattr(train_module, "compute_factors", recording)
    result = train(_digits_cfg(method="chg", epochs=3, select_every=1), digits)
    assert len(passes) >= 3 and all(p == (False, False, True) for p in passes)
    assert result.model.training and int(result.model[1].num_batches_tracked) > 0  # trained in train mode


def test_labels_outside_the_classes_are_refused_before_training(digits):
    bad_y = digits.train.y.clone()
    bad_y[7] = digits.num_classes
    bad = dataclasses.replace(digits, train=Split(digits.train.x, bad_y))
    with pytest.raises(ValueError, match=r"train labels must lie in \[0, 10\).*got range \[0, 10\]"):
        train(_digits_cfg(method="random"), bad)
    neg = dataclasses.replace(digits, test=Split(digits.test.x, digits.test.y - 1))
    with pytest.raises(ValueError, match=r"test labels must lie in \[0, 10\)"):
        train(_digits_cfg(method="random"), neg)
    floats = dataclasses.replace(digits, val=Split(digits.val.x, digits.val.y.float()))
    with pytest.raises(ValueError, match="validation labels must be integer"):
        train(_digits_cfg(method="random"), floats)


def test_resnet18_shapes_and_cpu_train_step():
    for size in (32, 64):
        model = ResNet18(num_classes=7, width=4, image_size=size)
        assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
    with pytest.raises(ValueError):
        ResNet18(image_size=48)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, 32, 32, generator=g), torch.randint(0, 10, (40,), generator=g)
    bundle = DataBundle("synthetic", Split(x[:24], y[:24]), Split(x[24:32], y[24:32]), Split(x[32:], y[32:]), 10,
                        "image", y[:24].clone(), torch.zeros(24, dtype=torch.bool))
    cfg = TrainConfig(dataset="cifar10", model="resnet18", width=4, method="chg", fraction=0.5, epochs=2,
                      select_every=1, batch_size=8, device="cpu")
    m = train(cfg, bundle).metrics
    assert m["subset_size"] == 12  # round(0.5 · 24), shared over the classes
    assert m["selections"] == 2 and 0.0 <= m["test_acc"] <= 100.0


def test_cuda_only_features_are_off_on_cpu():
    cfg = TrainConfig()
    assert cfg.amp and cfg.channels_last
    cpu = torch.device("cpu")
    assert _autocast(cpu, cfg)._enabled is False
    x = torch.randn(2, 3, 4, 4)
    assert _prep(x, cpu, cfg) is x
    assert build_model("mlp", 2, (5,)).linear.out_features == 2
    with pytest.raises(ValueError):
        build_model("mlp", 2, (1, 8, 8))


def test_bad_config():
    with pytest.raises(ValueError, match=">= 1"):
        train(_digits_cfg(epochs=0))
    with pytest.raises(ValueError, match="unknown selection method"):
        train(_digits_cfg(method="nope"))


def _ddp_worker(rank, world, init_file, cfg, ckpt_dir):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        data = load_dataset(cfg.dataset, cfg.seed)
        train(cfg, data, checkpoint=Path(ckpt_dir) / "ddp.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_match_one_process(tmp_path):
    """gloo on CPU, 2 ranks, an MLP (no BatchNorm): the same subset and, up to summation order, the same model."""
    import torch.multiprocessing as mp
    cfg = TrainConfig(dataset="breast_cancer", model="mlp", width=16, method="chg", fraction=0.3, epochs=3,
                      select_every=2, batch_size=32, augment_pad=0, augment_flip=False, checkpoint_every=3,
                      device="cpu", seed=0)
    single = tmp_path / "single.pt"
    ref = train(cfg, load_dataset(cfg.dataset, cfg.seed), checkpoint=single).metrics
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), cfg, str(tmp_path)), nprocs=2,
                       start_method="spawn")
    a = torch.load(single, weights_only=False)
    b = torch.load(tmp_path / "ddp.pt", weights_only=False)
    assert a["selection"]["indices"].tolist() == b["selection"]["indices"].tolist() == ref["final_indices"]
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5)


def _failing_selection_worker(rank, world, init_file, cfg, out_dir, where):
    """Rank 0 fails in the selection — in the method (``where="method"``, after the sharded factor passes) or in its
    own share of the factor pass (``where="factors"``). Every rank must stop with an error, and rank 0 with its own.
    Each rank records its error, the seconds from rank 0's raise to its own catch, and how many DistributedDataParallel
    wrappers are still alive once the process group is destroyed (the group must go with it, not at a later garbage
    collection or at interpreter exit)."""
    import datetime
    import gc
    import json
    import time

    import torch.distributed as dist

    import chg.experiments.train as train_module
    torch.set_num_threads(1)
    raised = []

    def boom(inp):
        raised.append(time.monotonic())
        raise ArithmeticError("selector broke")

    selection.SELECTORS["boom"] = selection.Selector(boom, needs_factors=True, adaptive=True)
    if where == "factors" and rank == 0:
        def no_memory(*args, **kwargs):
            raised.append(time.monotonic())
            raise MemoryError("factor pass out of memory")
        train_module.pool_factors = no_memory
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        train(cfg, load_dataset(cfg.dataset, cfg.seed))
        message = "no error"
    except Exception as exc:  # noqa: BLE001 - recorded for the test to read
        message = f"{type(exc).__name__}: {exc}"
    caught = time.monotonic()
    dist.destroy_process_group()
    alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
    record = {"message": message, "seconds": caught - raised[0] if raised else None, "ddp_alive": alive}
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(record))


@pytest.mark.parametrize("where", ["method", "factors"])
def test_a_failure_in_rank_0s_selection_stops_every_rank(tmp_path, where):
    """The method raises on rank 0: every rank raises a clear error naming it (not wait at the next collective until a
    timeout, as NCCL would, nor die of a closed connection, as gloo does once rank 0 is gone). Rank 0 fails in its
    factor pass: it raises its own error at once (not a collective's timeout), and the other rank stops too.

    On every rank, destroying the process group frees it: no DistributedDataParallel wrapper (which holds the group)
    is kept alive by the error. On rank 0 it was, through a reference cycle of the re-raised exception, so the gloo
    group outlived destroy_process_group() and was torn down at whatever later point the garbage collector ran."""
    import json
    import time
    import torch.multiprocessing as mp
    cfg = TrainConfig(dataset="breast_cancer", model="mlp", width=8, method="boom", fraction=0.3, epochs=2,
                      select_every=1, batch_size=32, augment_pad=0, augment_flip=False, device="cpu", seed=0)
    t0 = time.monotonic()
    ctx = mp.start_processes(_failing_selection_worker, args=(2, str(tmp_path / "init"), cfg, str(tmp_path), where),
                             nprocs=2, start_method="spawn", join=False)
    while not ctx.join(timeout=5):
        if time.monotonic() - t0 > 600:  # a hang guard only: on a loaded 2-core machine a start takes ~100 s
            for p in ctx.processes:
                p.kill()
            pytest.fail("a rank still runs 600 s after the start")
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    if where == "method":
        assert rank0["message"] == "ArithmeticError: selector broke"
        assert rank1["message"] == ("RuntimeError: rank 0's 'boom' selection failed at epoch 0: ArithmeticError: "
                                    "selector broke")
    else:
        assert rank0["message"] == "MemoryError: factor pass out of memory"
        assert rank1["message"] != "no error"
    # rank 0's raise to its catch: at once, not after the collective's 60 s timeout (timed inside the worker, so a
    # slow start of the processes on a loaded machine does not count)
    assert rank0["seconds"] < 30, "rank 0's error came only after a collective's timeout"
    assert (rank0["ddp_alive"], rank1["ddp_alive"]) == (0, 0), "a DDP wrapper (and its process group) outlived the run"


def _bn_model_and_data():
    """A small CNN with BatchNorm whose running statistics are not the defaults, and 23 rows of data."""
    torch.manual_seed(0)
    model = build_model("smallcnn", 3, (1, 8, 8), 4)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model, torch.randn(23, 1, 8, 8), torch.randint(0, 3, (23,))  # 23 rows: shards of 8, 8 and 7


def _sharded_factors_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    from chg.experiments.train import _factors_of
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, x, y = _bn_model_and_data()
        if rank:  # the BatchNorm statistics drift apart on the ranks during a DDP epoch: rank 0's must score all rows
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.add_(rank)
        cfg = TrainConfig(factor_batch_size=4)
        f = _factors_of(model, x, y, cfg, torch.device("cpu"))
        torch.save(None if f is None else {"loss": f.loss, "err": f.err, "feat": f.feat},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sharded_factor_pass_gathers_every_row_in_order(tmp_path):
    """Under torch.distributed each rank runs the forward pass on rows rank::world; after the gather rank 0 holds the
    factors of all rows, in the pool's order, equal to one process's pass with rank 0's model (BatchNorm statistics
    included), and the other ranks hold nothing (None)."""
    import torch.multiprocessing as mp
    from chg.experiments.train import pool_factors
    mp.start_processes(_sharded_factors_worker, args=(3, str(tmp_path / "init"), str(tmp_path)), nprocs=3,
                       start_method="spawn")
    model, x, y = _bn_model_and_data()
    ref = pool_factors(model, x, y, TrainConfig(factor_batch_size=4), torch.device("cpu"))
    got = torch.load(tmp_path / "rank0.pt")
    for k in ("loss", "err", "feat"):
        torch.testing.assert_close(got[k], getattr(ref, k), rtol=1e-6, atol=1e-7)
    assert torch.load(tmp_path / "rank1.pt") is None and torch.load(tmp_path / "rank2.pt") is None


def test_selection_val_rows_is_a_stratified_seeded_subsample():
    from chg.experiments.train import selection_val_rows
    y = torch.arange(10).repeat_interleave(60)  # 600 points, 60 per class
    cfg = TrainConfig(selection_val_size=100, seed=7)
    rows = selection_val_rows(y, cfg)
    assert rows.dtype == torch.int64 and len(rows) == 100 == len(set(rows.tolist()))
    assert torch.equal(rows, rows.sort().values) and torch.equal(torch.bincount(y[rows]), torch.full((10,), 10))
    assert torch.equal(rows, selection_val_rows(y, cfg))  # the same at every selection step
    assert not torch.equal(rows, selection_val_rows(y, dataclasses.replace(cfg, seed=8)))
    for k in (None, 600, 1000):
        assert torch.equal(selection_val_rows(y, dataclasses.replace(cfg, selection_val_size=k)), torch.arange(600))
    with pytest.raises(ValueError, match="below the 10 classes"):
        selection_val_rows(y, dataclasses.replace(cfg, selection_val_size=9))
    with pytest.raises(ValueError, match="selection_val_size"):
        train(_digits_cfg(selection_val_size=0))


def test_glister_sees_only_the_validation_subsample(monkeypatch, digits):
    seen = []
    real = selection.SELECTORS["glister"]

    def recording(inp):
        seen.append((inp.val_factors.err.shape[0], inp.val_labels.shape[0]))
        return real.fn(inp)

    monkeypatch.setitem(selection.SELECTORS, "glister", dataclasses.replace(real, fn=recording))
    train(_digits_cfg(method="glister", epochs=2, select_every=1, selection_val_size=50), digits)
    assert seen == [(50, 50), (50, 50)]
    seen.clear()
    train(_digits_cfg(method="glister", epochs=1, select_every=1), digits)
    assert seen == [(len(digits.val.y), len(digits.val.y))]
