"""chg.experiments.data: the validation hold-out, label noise (Table 3), augmentation, and clear errors for
missing data."""
import math

import pytest
import torch

from chg.experiments.data import add_label_noise, augment_batch, load_dataset, stratified_split


@pytest.mark.parametrize("n,C", [(1000, 10), (57, 3), (10, 2)])
def test_label_noise_flips_exactly_round_rate_n_each_to_another_class(n, C):
    y = torch.arange(n) % C
    noisy, mask = add_label_noise(y, C, 0.3, torch.Generator().manual_seed(0))
    m = math.floor(0.3 * n + 0.5)
    assert int(mask.sum()) == m
    assert torch.equal(noisy != y, mask)  # every chosen label changed, nothing else touched
    assert int(noisy.min()) >= 0 and int(noisy.max()) < C


def test_label_noise_new_class_is_uniform_over_the_others():
    C, n = 5, 20000
    y = torch.zeros(n, dtype=torch.long)  # all class 0: the new labels must spread evenly over 1..4
    noisy, mask = add_label_noise(y, C, 0.5, torch.Generator().manual_seed(1))
    counts = torch.bincount(noisy[mask], minlength=C).double()
    assert counts[0] == 0
    expected = mask.sum() / (C - 1)  # 2500 each; binomial sd ≈ 43, so ±5 sd = ±220
    assert float((counts[1:] - expected).abs().max()) < 220


def test_label_noise_is_deterministic_and_validates():
    y = torch.arange(100) % 7
    a = add_label_noise(y, 7, 0.3, torch.Generator().manual_seed(5))[0]
    b = add_label_noise(y, 7, 0.3, torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="noise rate"):
        add_label_noise(y, 7, 1.5, torch.Generator())


def test_stratified_split_sizes_and_disjointness():
    y = torch.tensor([0] * 30 + [1] * 11 + [2] * 5)
    keep, held = stratified_split(y, 0.1, torch.Generator().manual_seed(0))
    assert torch.bincount(y[held], minlength=3).tolist() == [3, 1, 1]  # round half up: 3, 1.1→1, 0.5→1
    assert sorted(keep.tolist() + held.tolist()) == list(range(46))
    assert torch.equal(keep, torch.sort(keep).values)


def test_digits_noise_only_in_the_pool():
    clean = load_dataset("digits", seed=0)
    noisy = load_dataset("digits", seed=0, noise_rate=0.3)
    from sklearn.datasets import load_digits
    per_class = torch.bincount(torch.tensor(load_digits().target)).tolist()
    assert len(clean.train) == len(noisy.train)
    assert len(clean.test) == sum(math.floor(0.2 * k + 0.5) for k in per_class) == 359  # fixed stratified 20%
    assert torch.equal(clean.train.x, noisy.train.x)
    assert torch.equal(clean.val.y, noisy.val.y) and torch.equal(clean.test.y, noisy.test.y)  # clean
    changed = noisy.train.y != clean.train.y
    assert torch.equal(changed, noisy.noisy) and int(changed.sum()) == math.floor(0.3 * len(noisy.train) + 0.5)
    assert torch.equal(noisy.clean_train_y, clean.train.y)
    assert len(clean.val) == sum(math.floor(0.1 * k + 0.5) for k in torch.bincount(
        torch.cat([clean.train.y, clean.val.y])).tolist())


def test_breast_cancer_is_standardised_with_pool_statistics():
    d = load_dataset("breast_cancer", seed=1)
    assert d.kind == "tabular" and d.num_classes == 2 and d.train.x.shape[1] == 30
    torch.testing.assert_close(d.train.x.mean(0), torch.zeros(30), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.train.x.std(0), torch.ones(30), atol=1e-5, rtol=0)


def test_augment_identity_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 5, 5)
    assert torch.equal(augment_batch(x, 0, False, g), x)
    out = augment_batch(x, 1, False, g)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for b in range(6):  # each output is one of the 9 crops of its own padded image
        crops = [padded[b, :, dy:dy + 5, dx:dx + 5] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[b], c) for c in crops)
    flipped = augment_batch(x, 0, True, torch.Generator().manual_seed(0))
    for b in range(6):
        assert torch.equal(flipped[b], x[b]) or torch.equal(flipped[b], x[b].flip(-1))
    many = augment_batch(torch.arange(25.0).reshape(1, 1, 5, 5).repeat(200, 1, 1, 1), 0, True, g)
    n_flipped = sum(not torch.equal(m, many[0:1].squeeze(0) * 0 + torch.arange(25.0).reshape(1, 5, 5)) for m in many)
    assert 60 < n_flipped < 140  # about half
    tab = torch.randn(4, 3)
    assert torch.equal(augment_batch(tab, 4, True, g), tab)  # tabular: untouched


def _augment_reference(x, pad, flip, generator):
    """Oracle: the same draws (dy, dx, then the flips, from ``generator``), applied image by image with slicing."""
    B, C, H, W = x.shape
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator) if pad > 0 else torch.zeros(B, dtype=torch.int64)
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator) if pad > 0 else torch.zeros(B, dtype=torch.int64)
    mask = torch.rand(B, generator=generator) < 0.5 if flip else torch.zeros(B, dtype=torch.bool)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    out = []
    for b in range(B):
        crop = padded[b, :, int(dy[b]):int(dy[b]) + H, int(dx[b]):int(dx[b]) + W]
        out.append(crop.flip(-1) if bool(mask[b]) else crop)
    return torch.stack(out)


@pytest.mark.parametrize("pad,flip", [(0, True), (1, False), (2, True), (4, True), (4, False)])
@pytest.mark.parametrize("shape,dtype", [((37, 1, 28, 28), torch.float32), ((9, 3, 7, 5), torch.float64),
                                         ((5, 2, 4, 4), torch.float16)])
def test_augment_equals_image_by_image_crops_and_flips(pad, flip, shape, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    g, g_ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    out, ref = augment_batch(x, pad, flip, g), _augment_reference(x, pad, flip, g_ref)
    assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous()
    assert torch.equal(out, ref)  # pixels moved, never computed: exact
    assert torch.equal(g.get_state(), g_ref.get_state())  # the same draws, so later batches match too
    x_cl = x.contiguous(memory_format=torch.channels_last)  # another memory layout, the same result
    assert torch.equal(augment_batch(x_cl, pad, flip, torch.Generator().manual_seed(7)), ref)


@pytest.mark.parametrize("name,needle", [("cifar10", "CIFAR10"), ("cifar100", "CIFAR100"),
                                         ("tinyimagenet", "tiny-imagenet-200")])
def test_missing_paper_data_gives_a_clear_error(tmp_path, name, needle):
    with pytest.raises(FileNotFoundError, match=needle):
        load_dataset(name, seed=0, data_dir=tmp_path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("mnist", seed=0)


# ---- Fashion-MNIST -----------------------------------------------------------------------------------------------
import gzip  # noqa: E402
import struct  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from chg.experiments.data import FASHION_MNIST_FILES, SYSTEM_FASHION_MNIST, read_idx  # noqa: E402


def _write_idx(path: Path, arr: np.ndarray) -> None:
    """The IDX format written independently of chg.experiments.data.read_idx: 0, 0, type 0x08 (uint8), ndim,
    dims big-endian."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.tobytes())


def _fake_fashion(folder: Path, n_train: int = 300, n_test: int = 50, seed: int = 0) -> tuple:
    """Four small IDX .gz files in Fashion-MNIST's names; returns (train images, train labels) as written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    x_tr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    x_tr[:, 0, 0], x_tr[:, 0, 1] = np.arange(n_train) % 256, np.arange(n_train) // 256  # the row number, traceable
    y_tr = np.arange(n_train, dtype=np.uint8) % 10  # 30 per class
    x_te = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    y_te = np.arange(n_test, dtype=np.uint8) % 10
    for name, arr in zip(FASHION_MNIST_FILES, (x_tr, y_tr, x_te, y_te)):
        _write_idx(folder / name, arr)
    return x_tr, y_tr


@pytest.fixture
def no_other_fashion_source(monkeypatch):
    """Only the data_dir given: no system folder (CHG_SYSTEM_DATASETS empty), no download (CHG_DOWNLOAD=0)."""
    monkeypatch.setenv("CHG_SYSTEM_DATASETS", "")
    monkeypatch.setenv("CHG_DOWNLOAD", "0")


def test_read_idx_roundtrip_and_corrupt_file(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    out = read_idx(tmp_path / "a.gz")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4) and np.array_equal(out, arr)
    with gzip.open(tmp_path / "short.gz", "wb") as fh:  # header says 2×3×4 but 5 bytes follow
        fh.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 3, 4) + bytes(5))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "junk")


def test_fashion_from_small_idx_files(tmp_path, no_other_fashion_source):
    x_tr, y_tr = _fake_fashion(tmp_path / "fashion-mnist")
    d = load_dataset("fashion_mnist", seed=3, data_dir=tmp_path)
    assert (d.name, d.kind, d.num_classes) == ("fashion_mnist", "image", 10)
    assert (len(d.train), len(d.val), len(d.test)) == (270, 30, 50)
    assert d.train.x.dtype == torch.float32 and d.train.x.shape[1:] == (1, 28, 28) and d.train.y.dtype == torch.int64
    assert torch.bincount(d.val.y, minlength=10).tolist() == [3] * 10  # stratified: 10% of each class's 30
    # each image keeps its label and its pixels (normalised with the fixed constants); the fake images carry their
    # row number in pixels (0, 0) and (0, 1), so every pool/validation row can be traced back to the file
    want = (torch.from_numpy(x_tr).float() / 255 - 0.2860) / 0.3530
    for part in (d.train, d.val):
        raw = torch.round(part.x[:, 0, 0, :2] * 0.3530 * 255 + 0.2860 * 255).long()
        rows = raw[:, 0] + 256 * raw[:, 1]
        torch.testing.assert_close(part.x[:, 0], want[rows], rtol=0, atol=1e-6)
        assert torch.equal(part.y, torch.from_numpy(y_tr.astype(np.int64))[rows])
    assert sorted(torch.cat([torch.round(p.x[:, 0, 0, 0] * 0.3530 * 255 + 0.2860 * 255).long() +
                             256 * torch.round(p.x[:, 0, 0, 1] * 0.3530 * 255 + 0.2860 * 255).long()
                             for p in (d.train, d.val)]).tolist()) == list(range(300))  # every row exactly once


def test_fashion_sources_in_order_and_torchvision_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("CHG_DOWNLOAD", "0")
    _fake_fashion(tmp_path / "system", n_train=100, seed=1)
    monkeypatch.setenv("CHG_SYSTEM_DATASETS", str(tmp_path / "system"))
    assert len(load_dataset("fashion_mnist", 0, data_dir=tmp_path / "empty").train) == 90  # the system folder
    _fake_fashion(tmp_path / "d" / "FashionMNIST" / "raw", n_train=200, seed=2)
    assert len(load_dataset("fashion_mnist", 0, data_dir=tmp_path / "d").train) == 180  # data_dir before system


def test_fashion_noise_exact_count_other_class_clean_val_test_deterministic(tmp_path, no_other_fashion_source):
    _fake_fashion(tmp_path / "fashion-mnist", n_train=1000)
    clean = load_dataset("fashion_mnist", seed=4, data_dir=tmp_path)
    noisy = load_dataset("fashion_mnist", seed=4, noise_rate=0.3, data_dir=tmp_path)
    again = load_dataset("fashion_mnist", seed=4, noise_rate=0.3, data_dir=tmp_path)
    other = load_dataset("fashion_mnist", seed=5, noise_rate=0.3, data_dir=tmp_path)
    assert int(noisy.noisy.sum()) == math.floor(0.3 * 900 + 0.5) == 270
    assert torch.equal(noisy.train.y != clean.train.y, noisy.noisy)  # every flip lands on another class
    assert torch.equal(noisy.clean_train_y, clean.train.y) and torch.equal(noisy.train.x, clean.train.x)
    assert torch.equal(noisy.val.y, clean.val.y) and torch.equal(noisy.test.y, clean.test.y)
    assert torch.equal(noisy.train.y, again.train.y) and torch.equal(noisy.val.x, again.val.x)
    assert not torch.equal(noisy.noisy, other.noisy) and not torch.equal(clean.val.x, other.val.x)


def test_fashion_missing_everywhere_names_debian_package_and_torchvision(tmp_path, no_other_fashion_source):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        load_dataset("fashion_mnist", seed=0, data_dir=tmp_path)
    assert "torchvision.datasets.FashionMNIST" in str(info.value) and "CHG_DOWNLOAD=0" in str(info.value)


@pytest.mark.skipif(not all((Path(SYSTEM_FASHION_MNIST) / f).is_file() for f in FASHION_MNIST_FILES),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_sizes_and_stratification(tmp_path, monkeypatch):
    monkeypatch.setenv("CHG_SYSTEM_DATASETS", SYSTEM_FASHION_MNIST)
    monkeypatch.setenv("CHG_DOWNLOAD", "0")
    d = load_dataset("fashion_mnist", seed=0, noise_rate=0.3, data_dir=tmp_path)
    assert (len(d.train), len(d.val), len(d.test)) == (54_000, 6_000, 10_000)
    assert torch.bincount(d.val.y, minlength=10).tolist() == [600] * 10
    assert torch.bincount(d.test.y, minlength=10).tolist() == [1000] * 10
    assert int(d.noisy.sum()) == 16_200 and bool((d.train.y[d.noisy] != d.clean_train_y[d.noisy]).all())
    assert abs(float(d.train.x.mean())) < 0.02 and abs(float(d.train.x.std()) - 1) < 0.02  # the constants fit


def test_setup_sh_tries_apt_once_then_says_how_to_get_fashion_mnist(tmp_path):
    """reproduce/setup.sh's fashion_mnist step with the data missing: as root with apt-get it runs `apt-get update`
    then `apt-get install dataset-fashion-mnist` (here a stand-in apt-get that fails), then a note naming both ways;
    with CHG_NO_APT=1 or in 'note' mode it only prints the note. Never fatal."""
    import os
    import subprocess
    root = Path(__file__).resolve().parents[1]
    text = (root / "reproduce" / "setup.sh").read_text()
    fn = text[text.index("fashion_mnist() {"):text.index("\n}\n", text.index("fashion_mnist() {")) + 3]
    fn = fn.replace("sys_dir=/usr/share/datasets/fashion-mnist", f"sys_dir={tmp_path / 'no-system'}")
    (tmp_path / "fn.sh").write_text(fn)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "apt-get").write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path / 'calls'}\nexit 1\n")
    (shim / "apt-get").chmod(0o755)
    (shim / "id").write_text("#!/bin/sh\necho 0\n")  # pretend to be root
    (shim / "id").chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}", CHG_DATA=str(tmp_path / "data"))
    script = f"set -euo pipefail; ROOT={tmp_path}; source {tmp_path / 'fn.sh'}; fashion_mnist try_apt; " \
             "fashion_mnist note; CHG_NO_APT=1 fashion_mnist try_apt; echo done"
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr
    assert (tmp_path / "calls").read_text().splitlines() == ["update -qq"]  # once; install is not reached
    assert proc.stderr.count("NOTE: Fashion-MNIST is not on this machine") == 3
    assert "apt-get install dataset-fashion-mnist" in proc.stderr and "FashionMNIST('data', download=True)" in \
        proc.stderr
    _fake_fashion(tmp_path / "data" / "fashion-mnist", n_train=20, n_test=10)  # present: silent, no apt
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "" and len((tmp_path / "calls").read_text().splitlines()) == 1
