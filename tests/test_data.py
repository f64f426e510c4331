"""chg.data: the validation hold-out, label noise (Table 3), augmentation, and clear errors for missing data."""
import math

import pytest
import torch

from chg.data import add_label_noise, augment_batch, load_dataset, stratified_split


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


@pytest.mark.parametrize("name,needle", [("cifar10", "CIFAR10"), ("cifar100", "CIFAR100"),
                                         ("tinyimagenet", "tiny-imagenet-200")])
def test_missing_paper_data_gives_a_clear_error(tmp_path, name, needle):
    with pytest.raises(FileNotFoundError, match=needle):
        load_dataset(name, seed=0, data_dir=tmp_path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("mnist", seed=0)
