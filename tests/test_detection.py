"""chg.detection: the metrics against hand-computed values and brute-force oracles; every detector finds known flips
on small synthetic data clearly better than chance; the K-fold probabilities are out of sample."""
import math

import numpy as np
import pytest
import torch

from chg.experiments.data import DataBundle, Split, add_label_noise
from chg.detection import (confident_learning, detection_metrics, discovery_curve, el2n, f1_two_means,
                           f1_two_means_opendataval, knn_shapley, mean_loss, noisy_mask, out_of_sample_probs,
                           precision_at_k, suspicion_from_values)
from chg.experiments.detection import DetectionConfig, run_detection
from chg.experiments.models import ImageMLP, build_model

# ---- metrics --------------------------------------------------------------------------------------------------


def test_metrics_hand_computed():
    scores = [0.9, 0.8, 0.3, 0.7, 0.1]
    noisy = [True, False, True, False, False]
    m = detection_metrics(scores, noisy)
    # AUC: of the 2·3 (flipped, clean) pairs the flipped one scores higher in 0.9>{0.8,0.7,0.1} and 0.3>0.1: 4/6
    assert m["roc_auc"] == pytest.approx(4 / 6, abs=1e-12)
    # AP = Σ (R_n − R_{n−1}) P_n over the ranking 0.9(F) 0.8 0.7 0.3(F) 0.1: 0.5·1 + 0.5·(2/4)
    assert m["average_precision"] == pytest.approx(0.75, abs=1e-12)
    assert m["k"] == 2 and m["precision_at_k"] == pytest.approx(0.5, abs=1e-12)  # top 2: 0.9 (F), 0.8
    # 2-means: {0.9, 0.8, 0.7} (SSE 0.02) vs {0.3, 0.1} (SSE 0.02) is optimal; flagged {0, 1, 3}: P 1/3, R 1/2
    assert m["f1_2means"] == pytest.approx(0.4, abs=1e-12)


def test_auc_and_precision_against_brute_force():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 6, 200).astype(float)  # many ties
    t = rng.random(200) < 0.3
    pos, neg = s[t], s[~t]
    brute = (np.sum(pos[:, None] > neg[None, :]) + 0.5 * np.sum(pos[:, None] == neg[None, :])) / (len(pos) * len(neg))
    assert detection_metrics(s, t)["roc_auc"] == pytest.approx(brute, abs=1e-12)
    order = sorted(range(200), key=lambda i: (-s[i], i))  # the documented tie rule: lower index first
    for k in (1, 7, 50, 200):
        assert precision_at_k(s, t, k) == pytest.approx(t[order[:k]].mean(), abs=1e-12)


def test_metrics_bad_input():
    with pytest.raises(ValueError, match="both flipped and clean"):
        detection_metrics([0.1, 0.2], [False, False])
    with pytest.raises(ValueError, match="NaN"):
        detection_metrics([np.nan, 0.2], [True, False])
    with pytest.raises(ValueError, match="differ in length"):
        detection_metrics([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="k must lie"):
        precision_at_k([0.1, 0.2], [True, False], k=3)
    assert f1_two_means([5.0, 4.9, 0.1, 0.0], [True, True, False, False]) == 1.0
    with pytest.raises(ValueError, match="higher_is must be one of"):
        detection_metrics([0.1, 0.2], [True, False], higher_is="lower")
    with pytest.raises(ValueError, match=r"boolean mask.*noisy_mask\(indices, n\)"):  # indices passed as a mask
        detection_metrics([0.1, 0.2, 0.3, 0.4], [0, 3, 2, 1])
    with pytest.raises(ValueError, match="fractions must lie"):
        discovery_curve([0.1, 0.2], [True, False], [0.5, 1.5])


def test_values_are_scored_as_minus_values_bit_for_bit():
    """``higher_is="valuable"`` is exactly the suspicion -values (Table 1's data values vs the detectors' scores)."""
    rng = np.random.default_rng(1)
    v = rng.normal(size=120)
    t = rng.random(120) < 0.25
    as_values = detection_metrics(v, t, higher_is="valuable", opendataval=True)
    assert as_values == detection_metrics(-v, t, opendataval=True)
    assert as_values == detection_metrics(suspicion_from_values(v), t, higher_is="suspicious", opendataval=True)
    assert as_values["roc_auc"] == pytest.approx(1.0 - detection_metrics(v, t)["roc_auc"], abs=1e-15)  # no ties
    assert discovery_curve(v, t, [0.1, 0.5], higher_is="valuable").tolist() == \
        discovery_curve(-v, t, [0.1, 0.5]).tolist()


def test_noisy_mask_from_indices():
    assert noisy_mask([3, 0], 5).tolist() == [True, False, False, True, False]
    assert noisy_mask(np.array([], dtype=np.int64), 2).tolist() == [False, False]
    for bad, match in (([5], r"lie in \[0, 5\)"), ([1, 1], "repeat"), ([0.5], "integers")):
        with pytest.raises(ValueError, match=match):
            noisy_mask(bad, 5)


def test_discovery_curve_against_counting():
    """Share of flipped points among the round(f·n) most suspect (ties: lower index first), counted by hand."""
    rng = np.random.default_rng(2)
    s = rng.integers(0, 5, 97).astype(float)  # many ties
    t = rng.random(97) < 0.3
    grid = np.linspace(0, 1, 23)
    order = sorted(range(97), key=lambda i: (-s[i], i))
    want = [t[order[:int(np.round(f * 97))]].sum() / t.sum() for f in grid]
    np.testing.assert_allclose(discovery_curve(s, t, grid), want, rtol=0, atol=1e-15)
    k = int(np.round(0.4 * 97))
    assert discovery_curve(s, t, [0.4])[0] * t.sum() == pytest.approx(precision_at_k(s, t, k) * k, abs=1e-12)


def test_opendataval_f1_is_the_optimal_split_of_the_values():
    """OpenDataVal's 2-means F1 against brute force: every split of the sorted values into a low and a high cluster,
    the one of least total squared error flagged (the low-valued = most suspect cluster), F1 = 2tp / (2tp + fp + fn).
    """
    pytest.importorskip("opendataval")
    m = detection_metrics([0.9, 0.8, 0.3, 0.7, 0.1], [True, False, True, False, False], opendataval=True)
    assert m["flagged_2means_opendataval"] == 3 and m["f1_2means_opendataval"] == pytest.approx(0.4, abs=1e-12)
    rng = np.random.default_rng(3)
    for trial in range(20):
        n = int(rng.integers(8, 60))
        v = np.concatenate([rng.normal(0, 1, n), rng.normal(-3, 1, n // 3)])
        t = np.arange(len(v)) >= n  # the low-valued ones are the flipped ones, mostly
        t[rng.integers(0, len(v))] ^= True
        if t.all() or not t.any():
            continue
        order = np.argsort(v, kind="stable")
        sse = [np.var(v[order[:j]]) * j + np.var(v[order[j:]]) * (len(v) - j) for j in range(1, len(v))]
        best = int(np.argmin(sse)) + 1
        if sorted(sse)[1] - sse[best - 1] < 1e-9:
            continue  # a near-tie of two splits: either is optimal
        flagged = np.zeros(len(v), bool)
        flagged[order[:best]] = True
        tp, fp, fn = (flagged & t).sum(), (flagged & ~t).sum(), (~flagged & t).sum()
        got = f1_two_means_opendataval(v, t, higher_is="valuable")
        assert got == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12), trial
        assert detection_metrics(v, t, higher_is="valuable", opendataval=True)["flagged_2means_opendataval"] == best


# ---- scores ---------------------------------------------------------------------------------------------------


def test_el2n_and_mean_loss_hand_computed():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert el2n(p, [0, 0]) == pytest.approx([math.sqrt(0.09 + 0.04 + 0.01), math.sqrt(0.81 + 0.01 + 0.64)])
    two = np.stack([p, np.array([[1.0, 0, 0], [0, 1.0, 0]])])  # a second checkpoint: exact / sqrt(2) error
    assert el2n(two, [0, 0]) == pytest.approx([math.sqrt(0.14) / 2, (math.sqrt(1.46) + math.sqrt(2)) / 2])
    with pytest.raises(ValueError, match="sum to 1"):
        el2n(np.array([[2.0, -1.0, 3.0]]), [0])
    with pytest.raises(ValueError, match="labels must lie"):
        el2n(p, [0, 3])
    with pytest.raises(ValueError, match="integer class labels"):  # 0.7 is not truncated to class 0
        el2n(p, [0.7, 0.0])
    assert mean_loss([[1.0, 2.0], [3.0, 6.0]]) == pytest.approx([2.0, 4.0])
    with pytest.raises(ValueError, match="NaN"):
        mean_loss([[1.0, np.nan]])
    assert suspicion_from_values(torch.tensor([1.0, -2.0])) == pytest.approx([-1.0, 2.0])


def test_out_of_sample_probs_never_sees_its_own_rows():
    y = np.arange(60) % 3
    seen = []

    def fit_predict(train_idx, test_idx):
        assert not set(train_idx) & set(test_idx)
        seen.append(test_idx)
        out = np.zeros((len(test_idx), 3))
        out[:, 0] = test_idx  # encodes which row a prediction was made for
        return out

    p = out_of_sample_probs(fit_predict, y, k=4, seed=1)
    assert len(seen) == 4 and sorted(np.concatenate(seen).tolist()) == list(range(60))  # each row held out once
    assert np.array_equal(p[:, 0], np.arange(60))
    with pytest.raises(ValueError, match="at least k=4"):
        out_of_sample_probs(fit_predict, np.array([0, 0, 0, 1, 1, 1, 1, 1]), k=4)


def test_confident_learning_flags_confidently_wrong_labels():
    rng = np.random.default_rng(0)
    y_true = np.arange(300) % 3
    p = np.full((300, 3), 0.05)
    p[np.arange(300), y_true] = 0.9
    p += rng.random((300, 3)) * 0.02
    p /= p.sum(1, keepdims=True)
    y = y_true.copy()
    y[:15] = (y[:15] + 1) % 3  # 15 labels wrong, the model confidently disagrees
    scores, issues = confident_learning(p, y)
    assert set(np.flatnonzero(issues)) == set(range(15))
    assert scores[:15].min() > scores[15:].max()


# ---- every detector on synthetic data with known flips ---------------------------------------------------------


def _blobs(n=600, C=3, d=10, rate=0.2, seed=0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, d, generator=g) * 1.2

    def part(m):
        y = torch.arange(m) % C
        return Split(centres[y] + torch.randn(m, d, generator=g), y)

    pool, val, test = part(n), part(150), part(300)
    y_noisy, noisy = add_label_noise(pool.y, C, rate, torch.Generator().manual_seed(seed + 1))
    return DataBundle("blobs", Split(pool.x, y_noisy), val, test, C, "tabular", pool.y, noisy)


def test_run_detection_every_detector_beats_chance():
    data = _blobs(n=300)
    cfg = DetectionConfig(model="mlp", width=16, epochs=5, batch_size=32, lr=0.05, el2n_epochs=2, folds=2,
                          knn_val=150, knn_k=5)
    out = run_detection(data, cfg)
    assert set(out["metrics"]) == {"chg_algorithm1", "chg_ride_along", "chg_algorithm1_skip", "chg_ride_skip",
                                   "mean_loss", "el2n", "knn_shapley", "cleanlab"}
    for name, m in out["metrics"].items():  # chance: AUC 0.5, AP and P@k 0.2 (measured: AUC >= 0.97, P@k >= 0.9)
        assert m["roc_auc"] > 0.9, (name, m)
        assert m["average_precision"] > 0.7 and m["precision_at_k"] > 0.7, (name, m)
        assert m["k"] == 60
    assert out["test_acc"] > 80 and out["cleanlab_flagged"] > 0
    for name, s in out["scores"].items():
        assert s.shape == (300,) and np.isfinite(s).all(), name
        assert out["metrics"][name] == detection_metrics(s, data.noisy), name  # the one scorer, suspicion convention


def test_knn_shapley_matches_opendataval_with_one_hot_labels():
    """Passing class-index columns (to avoid an n·m·C tensor) gives OpenDataVal's values for one-hot labels."""
    from opendataval.dataval.knnshap.knnshap import KNNShapley
    data = _blobs(n=80, rate=0.25)
    x, y, xv, yv = data.train.x, data.train.y, data.val.x[:40], data.val.y[:40]
    ref = KNNShapley(k_neighbors=5).input_data(x, torch.nn.functional.one_hot(y, 3).float(), xv,
                                               torch.nn.functional.one_hot(yv, 3).float())
    ref = ref.train_data_values().evaluate_data_values()
    np.testing.assert_allclose(knn_shapley(x, y, xv, yv, k_neighbors=5), -ref, rtol=0, atol=1e-7)


def test_image_mlp_flattens_images():
    model = build_model("image_mlp", 10, (1, 28, 28))
    assert isinstance(model, ImageMLP) and model.linear.in_features == 128
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    assert build_model("image_mlp", 3, (2, 5, 5), width=16).features[0].in_features == 50
