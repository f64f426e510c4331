"""chg.train: determinism, kill-and-resume bit-identical, the weighted loss, the ResNet-18 path on CPU (the Table 2/3
grid built on it is tested in tests/test_reproduce.py)."""
import dataclasses
from pathlib import Path

import pytest
import torch

import chg.selection as selection
from chg.data import DataBundle, Split, load_dataset
from chg.models import ResNet18, build_model
from chg.train import TrainConfig, _autocast, _prep, train


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
                "subset_noisy_share"):
        assert resumed[key] == ref[key], key
    with pytest.raises(ValueError, match="different configuration"):
        train(dataclasses.replace(cfg, lr=0.01), digits, checkpoint=ckpt)


def test_state_digest_sees_one_bit():
    from chg.results import state_digest
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
    assert m["subset_size"] == sum(max(1, int(0.5 * k + 0.5)) for k in torch.bincount(y[:24]).tolist() if k)
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
    own share of the factor pass (``where="factors"``). Every rank must stop with an error, and rank 0 with its own."""
    import datetime

    import torch.distributed as dist

    import chg.train as train_module
    torch.set_num_threads(1)

    def boom(inp):
        raise ArithmeticError("selector broke")

    selection.SELECTORS["boom"] = selection.Selector(boom, needs_factors=True, adaptive=True)
    if where == "factors" and rank == 0:
        def no_memory(*args, **kwargs):
            raise MemoryError("factor pass out of memory")
        train_module.pool_factors = no_memory
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        train(cfg, load_dataset(cfg.dataset, cfg.seed))
        message = "no error"
    except Exception as exc:  # noqa: BLE001 - recorded for the test to read
        message = f"{type(exc).__name__}: {exc}"
    finally:
        dist.destroy_process_group()
    (Path(out_dir) / f"rank{rank}.txt").write_text(message)


@pytest.mark.parametrize("where", ["method", "factors"])
def test_a_failure_in_rank_0s_selection_stops_every_rank(tmp_path, where):
    """The method raises on rank 0: every rank raises a clear error naming it (not wait at the next collective until a
    timeout, as NCCL would, nor die of a closed connection, as gloo does once rank 0 is gone). Rank 0 fails in its
    factor pass: it raises its own error at once (not a collective's timeout), and the other rank stops too."""
    import time
    import torch.multiprocessing as mp
    cfg = TrainConfig(dataset="breast_cancer", model="mlp", width=8, method="boom", fraction=0.3, epochs=2,
                      select_every=1, batch_size=32, augment_pad=0, augment_flip=False, device="cpu", seed=0)
    t0 = time.monotonic()
    ctx = mp.start_processes(_failing_selection_worker, args=(2, str(tmp_path / "init"), cfg, str(tmp_path), where),
                             nprocs=2, start_method="spawn", join=False)
    while not ctx.join(timeout=5):
        if time.monotonic() - t0 > 150:
            for p in ctx.processes:
                p.kill()
            pytest.fail("a rank still runs 150 s after rank 0's selection failed")
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text() for r in (0, 1))
    if where == "method":
        assert rank0 == "ArithmeticError: selector broke"
        assert rank1 == "RuntimeError: rank 0's 'boom' selection failed at epoch 0: ArithmeticError: selector broke"
    else:
        assert rank0 == "MemoryError: factor pass out of memory"
        assert rank1 != "no error"
        assert time.monotonic() - t0 < 55, "rank 0's error came only after the collective's 60 s timeout"


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
    from chg.train import _factors_of
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
    from chg.train import pool_factors
    mp.start_processes(_sharded_factors_worker, args=(3, str(tmp_path / "init"), str(tmp_path)), nprocs=3,
                       start_method="spawn")
    model, x, y = _bn_model_and_data()
    ref = pool_factors(model, x, y, TrainConfig(factor_batch_size=4), torch.device("cpu"))
    got = torch.load(tmp_path / "rank0.pt")
    for k in ("loss", "err", "feat"):
        torch.testing.assert_close(got[k], getattr(ref, k), rtol=1e-6, atol=1e-7)
    assert torch.load(tmp_path / "rank1.pt") is None and torch.load(tmp_path / "rank2.pt") is None
