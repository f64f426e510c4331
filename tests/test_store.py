"""The row store of ride-along (chg.store via EpochValuer): half-precision storage against float32 storage with a
stated bound, the host and disk homes bit for bit as in memory, buffers reused from epoch to epoch without leaking
one epoch's rows into the next, and what it keeps per row."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import chg

N, C, D, B = 3000, 50, 64, 128


def _rows(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(N, C, generator=g), torch.relu(torch.randn(N, D, generator=g)),
            torch.randint(0, C, (N,), generator=g), torch.randperm(N, generator=g))


def _epoch(valuer, logits, feat, y, order):
    for a in range(0, N, B):
        idx = order[a:a + B]
        valuer.add_logits(idx, logits[idx], y[idx], feat[idx], True)
    return valuer.end_epoch()


@pytest.mark.parametrize("dtype, bound", [(torch.bfloat16, 0.1), (torch.float16, 0.02)])
def test_half_precision_storage_stays_within_its_stated_bound_of_float32(dtype, bound):
    """The stated bounds (max |Δφ| / std φ ≤ 0.1 in bfloat16, ≤ 0.02 in float16, Spearman ≥ 0.999) hold here and at
    ImageNet shape (benchmarks/results/memory.md measured 6.8e-2 and 1.05e-2 at C = 1000, D = 2048); eq. (3) runs in
    float32/float64 whatever the storage."""
    logits, feat, y, order = _rows()
    full = _epoch(chg.EpochValuer(N), logits, feat, y, order)
    half = _epoch(chg.EpochValuer(N, storage_dtype=dtype), logits, feat, y, order)
    err = ((half - full).abs().max() / full.std()).item()
    assert err <= bound, err
    assert spearmanr(half.numpy(), full.numpy()).statistic >= 0.999
    assert err > 0  # the storage really was half precision (the test could not pass by storing float32)


@pytest.mark.parametrize("offload", ["host", "disk"])
def test_host_and_disk_homes_give_the_in_memory_values_bit_for_bit(offload, tmp_path):
    logits, feat, y, order = _rows(1)
    want = _epoch(chg.EpochValuer(N), logits, feat, y, order)
    got = _epoch(chg.EpochValuer(N, offload=offload, directory=tmp_path if offload == "disk" else None),
                 logits, feat, y, order)
    assert torch.equal(got, want)


def test_buffers_are_reused_across_epochs_and_each_epoch_is_its_own_game():
    """One valuer over two epochs equals a fresh valuer per epoch, bit for bit; the store keeps 4·(C + D) + 20 bytes
    per row in float32. Another head width is refused by the valuer (values of different heads are not averaged);
    started over (a fresh state loaded) the same valuer takes it, in new buffers, again bit for bit."""
    v = chg.EpochValuer(N)
    for seed in (2, 3):
        logits, feat, y, order = _rows(seed)
        got = _epoch(v, logits, feat, y, order)
        assert torch.equal(got, _epoch(chg.EpochValuer(N), logits, feat, y, order))
    assert v.store.nbytes() == N * (4 * (C + D) + 8 + 8 + 4)
    g = torch.Generator().manual_seed(4)
    logits, feat, y = torch.randn(N, 7, generator=g), torch.randn(N, 5, generator=g), torch.randint(0, 7, (N,))
    order = torch.randperm(N, generator=g)
    with pytest.raises(ValueError, match="values of different heads are not averaged"):
        _epoch(v, logits, feat, y, order)
    v.load_state_dict(chg.EpochValuer(N).state_dict())  # start over: no epoch, no head recorded
    got = _epoch(v, logits, feat, y, order)
    assert torch.equal(got, _epoch(chg.EpochValuer(N), logits, feat, y, order))
    assert v.store.nbytes() == N * (4 * (7 + 5) + 8 + 8 + 4)
    assert np.isfinite(v.values().history).all() and v.epochs == 1


@pytest.mark.parametrize("offload", ["host", "disk"])
def test_a_store_that_grows_keeps_its_rows_in_every_home(offload, tmp_path):
    """Rows added more than n times in one epoch make the store grow (a row added twice); the grown buffers hold
    every earlier row in every home — the disk store makes new files and copies, it never reopens a file it is
    reading — and give the in-memory values bit for bit; the disk store leaves one file per buffer."""
    logits, feat, y, order = _rows(5)
    extra = order[:7]  # seven rows added again at the end: the last record of each is kept

    def epoch(valuer):
        for b in range(0, N, 16):
            r = order[b:b + 16]
            valuer.add_logits(r, logits[r], y[r], feat[r])
        valuer.add_logits(extra, logits[extra], y[extra], feat[extra])
        with pytest.warns(chg.valuation.RepeatedRowsWarning, match=r"7 row\(s\) were added more than once"):
            return valuer.end_epoch()

    want = epoch(chg.EpochValuer(N))
    v = chg.EpochValuer(N, offload=offload, directory=tmp_path if offload == "disk" else None)
    assert torch.equal(epoch(v), want)
    if offload == "disk":
        assert len(list(tmp_path.iterdir())) == 5  # idx, target, z, feat, loss: the grown ones only
        v.store.close()
        assert list(tmp_path.iterdir()) == []


def test_a_nan_feature_with_finite_factors_names_its_batch_and_row():
    """Factors added with finite loss and error but a NaN feature (no logits to catch it): end_epoch's error names
    the batch, the position in it and the data row."""
    from chg.lastlayer import Factors
    v, g = chg.EpochValuer(40), torch.Generator().manual_seed(0)
    for b in range(0, 40, 8):
        err = torch.softmax(torch.randn(8, 3, generator=g), 1)
        err[:, 0] -= 1
        feat = torch.randn(8, 4, generator=g)
        if b == 16:
            feat[5, 2] = float("nan")
        v.add(torch.arange(b, b + 8).flip(0), Factors(torch.rand(8, generator=g), err, feat))
    with pytest.raises(ValueError, match=r"feat .* non-finite .*first in batch 2 of this epoch, at its position 5, "
                                         r"row 18 of the data"):
        v.end_epoch()


# ---- a loop that reuses its buffers: each batch is copied when it comes --------------------------------------------
@pytest.mark.parametrize("what", ["indices", "features", "targets"])
@pytest.mark.parametrize("home", ["numpy", "torch"])
def test_a_loop_that_refills_one_buffer_gets_the_values_of_the_batches_it_handed_over(what, home):
    """A training step's logits (with their graph) and a batch in one preallocated buffer — a NumPy array (indices
    given as an int64 array, ``torch.from_numpy`` features) or a torch tensor refilled in place — that the loop
    overwrites for the next batch: the values are those of the batches as they were handed over (a store that held
    references instead was measured no faster and got these wrong; docs/results.md)."""
    import numpy as np
    logits, feat, y, _ = _rows(9)
    lin = torch.nn.Linear(C, C)
    shape = {"indices": (B,), "features": (B, D), "targets": (B,)}[what]
    buf = np.empty(shape, np.float32 if what == "features" else np.int64)
    tbuf = torch.empty(shape, dtype=torch.float32 if what == "features" else torch.int64)
    got, want = chg.EpochValuer(N, partial_epochs=True), chg.EpochValuer(N, partial_epochs=True)
    for a in range(0, N - N % B, B):
        batch = {"indices": torch.arange(a, a + B), "features": feat[a:a + B], "targets": y[a:a + B]}
        z = lin(logits[a:a + B])
        want.add_logits(batch["indices"], z.detach(), batch["targets"], batch["features"], True)
        if home == "numpy":
            buf[...] = batch[what].numpy()
            batch[what] = buf if what == "indices" else torch.from_numpy(buf)
        else:
            batch[what] = tbuf.copy_(batch[what])
        got.add_logits(batch["indices"], z, batch["targets"], batch["features"], True)
    with pytest.warns(UserWarning, match="not valued this epoch"):
        a, b = got.end_epoch(), want.end_epoch()
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# ---- what a reviewer found (2026-12-07): half-precision logits far from 0, NaN factors, files of a user directory --
@pytest.mark.parametrize("dtype, bound", [(torch.bfloat16, 0.1), (torch.float16, 0.02)])
def test_half_precision_logits_are_stored_less_their_row_maximum_so_a_common_offset_costs_nothing(dtype, bound):
    """Softmax does not see a shift shared by a row's logits; rounding to half precision does (logits near 1,000
    keep ~3 significant bits in bfloat16). The store keeps each row less its largest logit, so logits + 1,000 value
    as the logits do in half precision, within the stated bound of float32 (without the shift: 4.7 / 0.58 of std φ)."""
    logits, feat, y, order = _rows(6)
    full = _epoch(chg.EpochValuer(N), logits, feat, y, order)
    shifted = _epoch(chg.EpochValuer(N, storage_dtype=dtype), logits + 1000.0, feat, y, order)
    err = ((shifted - full).abs().max() / full.std()).item()
    assert err <= bound, err
    assert spearmanr(shifted.numpy(), full.numpy()).statistic >= 0.999


@pytest.mark.parametrize("what, name", [("loss", "loss"), ("err", "softmax error")])
def test_a_nan_loss_or_error_given_to_add_names_its_batch_and_row(what, name):
    """NaN in the loss or the error handed to ``add`` (no logits for end_epoch to catch it): the error names the
    batch, the position in it and the data row, as it does for a NaN feature."""
    from chg.lastlayer import Factors
    v, g = chg.EpochValuer(40), torch.Generator().manual_seed(0)
    for b in range(0, 40, 8):
        err = torch.softmax(torch.randn(8, 3, generator=g), 1)
        err[:, 0] -= 1
        loss = torch.rand(8, generator=g)
        if b == 24:
            (loss if what == "loss" else err)[3, ...] = float("nan")
        v.add(torch.arange(b, b + 8), Factors(loss, err, torch.randn(8, 4, generator=g)))
    with pytest.raises(ValueError, match=rf"a NaN/Inf {name} first in batch 3 of this epoch, at its position 3, "
                                         r"row 27 of the data"):
        v.end_epoch()


def test_a_finite_feature_beyond_float16_names_the_storage_dtype():
    """A feature of 1e5 is finite but Inf in a float16 store: the message says so, and what to store instead."""
    v = chg.EpochValuer(8, storage_dtype=torch.float16)
    feat = torch.ones(8, 3)
    feat[2, 1] = 1e5
    v.add_logits(torch.arange(8), torch.zeros(8, 2), torch.zeros(8, dtype=torch.int64), feat, True)
    with pytest.raises(ValueError, match=r"position 2.*float16, whose largest finite value is 65504.*float32 or "
                                         r"bfloat16"):
        v.end_epoch()


def test_the_files_in_a_users_directory_go_with_the_valuer_and_a_missing_directory_is_made(tmp_path):
    """offload='disk' with a directory that does not exist yet: it is made at construction; the store's files are
    removed when the valuer is dropped without close() (the directory itself is the user's, and stays)."""
    import gc
    where = tmp_path / "new" / "store"
    v = chg.EpochValuer(N, offload="disk", directory=where)
    logits, feat, y, order = _rows(7)
    _epoch(v, logits, feat, y, order)
    assert len(list(where.iterdir())) == 5
    del v
    gc.collect()
    assert where.is_dir() and list(where.iterdir()) == []
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="cannot use .*a-file.* as the directory"):
        chg.EpochValuer(N, offload="disk", directory=tmp_path / "a-file")


def test_a_directory_without_the_disk_store_is_refused_and_a_home_path_is_expanded(tmp_path, monkeypatch):
    """``directory=`` is the disk store's: without ``offload='disk'`` it would be ignored silently, so it is an
    error; ``~`` is the user's home (it made a folder literally named '~' before)."""
    with pytest.raises(ValueError, match="is where offload='disk' keeps its files"):
        chg.EpochValuer(N, directory=tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    v = chg.EpochValuer(N, offload="disk", directory="~/chg-store")
    assert (tmp_path / "chg-store").is_dir() and str(v.store.directory) == str(tmp_path / "chg-store")


# ---- the first epoch's page faults: the store asks for transparent huge pages ------------------------------------
def _vm_flags(address: int) -> list:
    """The VmFlags of the mapping of this process that holds ``address`` (Linux /proc/self/smaps)."""
    lines, found = open("/proc/self/smaps").read().splitlines(), False
    for line in lines:
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):
            lo, hi = (int(a, 16) for a in head[0].split("-"))
            found = lo <= address < hi
        elif found and line.startswith("VmFlags:"):
            return head[1:]
    return []


def test_a_large_cpu_buffer_is_advised_huge_pages_and_a_small_one_is_left_alone():
    """``huge_pages`` marks the whole 2 MiB pages inside a buffer of ≥ 4 MiB (VmFlags "hg": MADV_HUGEPAGE) and
    leaves a small buffer's mapping as it was; the store's buffers go through it (values are unchanged: every other
    test here)."""
    from pathlib import Path
    from chg.store import huge_pages
    if not Path("/proc/self/smaps").exists() or not Path("/sys/kernel/mm/transparent_hugepage").exists():
        pytest.skip("Linux with transparent huge pages only")
    big = huge_pages(torch.empty(4 << 20))  # 16 MiB of float32
    mid = big.data_ptr() + big.numel() * 2  # an address well inside it
    assert "hg" in _vm_flags(mid)
    small = torch.empty(1000)
    before = _vm_flags(small.data_ptr())
    assert huge_pages(small) is small and _vm_flags(small.data_ptr()) == before
    v = chg.EpochValuer(200_000)
    v.add_logits(torch.arange(128), torch.randn(128, 10), torch.randint(0, 10, (128,)), torch.randn(128, 16), True)
    feat = v.store.feat  # 200,000 × 16 float32: 12.8 MB
    assert "hg" in _vm_flags(feat.data_ptr() + feat.numel() * 2)
