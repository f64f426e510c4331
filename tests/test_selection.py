"""Algorithm 2 (chg.selection): budgets, ties, tiny classes, min-max weights, and the values against oracles —
dense Theorem 1 on per-sample autograd gradients, and exhaustive enumeration."""
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

import chg
from chg.selection import (SELECTORS, Selection, SelectionInput, check_selection, class_budgets, get_selector,
                           minmax_weights, select_chg, select_chg_unweighted, select_full, select_gradient,
                           select_hardness, top_k_per_class)

RTOL, ATOL = 1e-10, 1e-12


# ---- budgets, ties, weights -------------------------------------------------------------------------------------

def test_class_budgets_by_hand():
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 1 + [4] * 5)  # n = 16, class 3 absent
    # a = 0.3: k = round(4.8) = 5 >= 4 classes present. Quotas 5·N_c/16 = 2.19, 0.94, 0.31, -, 1.56: classes 1 and 2
    # (quota < 1) get one each; the other 3 points go to classes 0 and 4 on quotas 3·7/12 = 1.75, 3·5/12 = 1.25:
    # floors 1, 1, the last point to the larger remainder (class 0)
    assert class_budgets(labels, 5, 0.3).tolist() == [2, 1, 1, 0, 1]
    # a = 0.5: k = 8, quotas 3.5, 1.5, 0.5, -, 2.5: class 2 gets one; 7 points on 7·7/15 = 3.27, 7·3/15 = 1.4,
    # 7·5/15 = 2.33: floors 3, 1, 2, the last point to class 1 (remainder .4 > .33 > .27)
    assert class_budgets(labels, 5, 0.5).tolist() == [3, 2, 1, 0, 2]
    assert class_budgets(labels, 5, 1.0).tolist() == [7, 3, 1, 0, 5]
    # a = 0.01: k = 1 < 4 classes: no minimum, the one point goes to the largest quota (class 0)
    assert class_budgets(labels, 5, 0.01).tolist() == [1, 0, 0, 0, 0]
    # k = round(0.2·16) = 3 < 4 classes: largest remainders of 3·N_c/16 = 1.31, 0.56, 0.19, -, 0.94 → [1, 1, 0, 0, 1]
    assert class_budgets(labels, 5, 0.2).tolist() == [1, 1, 0, 0, 1]
    # equal remainders go to the lower class index: 3 classes of 3 at k = round(0.5·9) = 5 → 1.67 each
    assert class_budgets(torch.arange(9) % 3, 3, 0.5).tolist() == [2, 2, 1]


@pytest.mark.parametrize("counts, fraction, total", [
    ([450] * 100, 0.05, 2_250),   # the CIFAR-100 / Tiny ImageNet setting (rounded per class: 2,300)
    ([3] * 100, 0.1, 30),         # rounded per class with at least one each: 100
    ([1000, 50, 7, 3, 1, 1], 0.1, 106),   # imbalanced: every class present keeps one
    ([5] * 10, 0.02, 1),          # the budget allows one point in all: one class keeps it
])
def test_class_budgets_add_up_to_the_shared_budget(counts, fraction, total):
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    k = class_budgets(labels, len(counts), fraction)
    assert int(k.sum()) == total == round(fraction * sum(counts) + 1e-9)
    assert bool((k <= torch.tensor(counts)).all())
    if total >= len(counts):
        assert bool((k >= 1).all())


def _budgets_oracle(counts, k):
    """Largest remainder by brute force in exact rationals: the minimum of one per present class (when k allows it)
    by repeatedly fixing the classes whose quota is below 1, then floors plus the largest remainders."""
    present = [c for c, m in enumerate(counts) if m]
    out = {c: 0 for c in range(len(counts))}
    fixed = set()
    if k >= len(present):
        while True:
            rest = [c for c in present if c not in fixed]
            kk, nn_ = k - len(fixed), sum(counts[c] for c in rest)
            low = {c for c in rest if Fraction(kk * counts[c], nn_) < 1}
            if not low:
                break
            fixed |= low
    for c in fixed:
        out[c] = 1
    rest = [c for c in present if c not in fixed]
    kk, nn_ = k - len(fixed), sum(counts[c] for c in rest)
    quota = {c: Fraction(kk * counts[c], nn_) for c in rest}
    for c in rest:
        out[c] = int(quota[c])  # floor
    left = kk - sum(out[c] for c in rest)
    for c in sorted(rest, key=lambda c: (-(quota[c] - int(quota[c])), c))[:left]:
        out[c] += 1
    return [out[c] for c in range(len(counts))]


def test_class_budgets_equal_a_brute_force_apportionment_on_random_pools():
    g = np.random.default_rng(0)
    for _ in range(300):
        C = int(g.integers(1, 12))
        counts = [int(v) if g.random() > 0.2 else 0 for v in g.integers(1, 40, C)]
        if not sum(counts):
            continue
        fraction = float(g.choice([g.uniform(0.001, 1.0), 0.5, 0.1, 1.0]))
        labels = torch.repeat_interleave(torch.arange(C), torch.tensor(counts))[torch.randperm(sum(counts))]
        n, kk = sum(counts), max(1, min(sum(counts), int(np.floor(fraction * sum(counts) + 0.5))))
        got = class_budgets(labels, C, fraction).tolist()
        assert got == _budgets_oracle(counts, kk), (counts, fraction)
        assert sum(got) == kk and all(0 <= a <= m for a, m in zip(got, counts))
        assert n >= kk


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_bad_fraction_is_a_value_error(bad):
    with pytest.raises(ValueError, match="fraction"):
        class_budgets(torch.tensor([0, 1]), 2, bad)


def test_labels_out_of_range_is_a_value_error():
    with pytest.raises(ValueError, match="labels"):
        class_budgets(torch.tensor([0, 3]), 3, 0.5)


def test_ties_go_to_the_lower_index():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0])
    values = torch.tensor([1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 5.0])
    # class 0: indices 0,2,4,6 values 1,1,1,5; k = round(0.5·4) = 2 → 6 (best) then 0 (lowest index of the tie)
    # class 1: indices 1,3,5 all 2.0; k = round(1.5) = 2 → 1, 3
    assert top_k_per_class(values, labels, 2, 0.5).tolist() == [0, 1, 3, 6]


def test_top_k_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        top_k_per_class(torch.tensor([0.0, float("nan")]), torch.tensor([0, 0]), 1, 0.5)


def test_minmax_weights():
    w = minmax_weights(torch.tensor([3.0, -1.0, 1.0], dtype=torch.float64))
    assert w.dtype == torch.float32
    assert w.tolist() == [1.0, 0.0, 0.5]
    assert minmax_weights(torch.tensor([2.5, 2.5, 2.5])).tolist() == [1.0, 1.0, 1.0]  # all equal: all ones
    assert minmax_weights(torch.tensor([-7.0])).tolist() == [1.0]  # one point
    with pytest.raises(ValueError):
        minmax_weights(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError):
        minmax_weights(torch.tensor([]))


# ---- the values against per-sample autograd + dense Theorem 1 -------------------------------------------------

def _tiny_problem(seed=0, n=23, C=4, D=5):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, D), nn.Tanh(), nn.Linear(D, C)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    # classes of very different sizes: 0 has 1 point, 3 has 2, class 1 and 2 the rest
    y = torch.tensor([0] + [3, 3] + [1] * 9 + [2] * (n - 12))
    y = y[torch.randperm(n, generator=g)]
    return model, x, y, C


def _autograd_player_vectors(model, x, y, weighting):
    """Slow obvious path: per-sample autograd of the last layer's weight and bias, x_i = l_i g_i (or g_i)."""
    last = model[-1]
    rows, losses = [], []
    for i in range(x.shape[0]):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        loss.backward()
        g = torch.cat([last.weight.grad, last.bias.grad[:, None]], dim=1).reshape(-1)  # (C·(D+1),) bias last
        rows.append(g.clone())
        losses.append(loss.detach())
    G, L = torch.stack(rows), torch.stack(losses)
    return (L[:, None] * G if weighting == "chg" else G), L


def _oracle_algorithm2(model, x, y, C, fraction, weighting):
    X, L = _autograd_player_vectors(model, x, y, weighting)
    values = torch.empty(x.shape[0], dtype=torch.float64)
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().squeeze(1)
        values[idx] = (chg.hardness_shapley(L[idx]) if weighting == "hardness" else chg.chg_shapley(X[idx]))
    kept = []
    counts = torch.bincount(y, minlength=C).tolist()
    budgets = _budgets_oracle(counts, max(1, min(len(y), int(np.floor(fraction * len(y) + 0.5)))))
    for c in range(C):
        idx = (y == c).nonzero().squeeze(1).numpy()
        if idx.size == 0:
            continue
        k = budgets[c]
        v = values[idx].numpy()
        v = np.round(v / (1e-9 * np.abs(v).max())) if np.abs(v).max() > 0 else v  # equal up to rounding = a tie
        order = np.lexsort((idx, -v))  # by value descending, then index ascending
        kept += idx[order[:k]].tolist()
    kept = sorted(kept)
    S = torch.tensor(kept)
    vS = chg.hardness_shapley(L[S]) if weighting == "hardness" else chg.chg_shapley(X[S])
    w = (vS - vS.min()) / (vS.max() - vS.min()) if len(kept) > 1 else torch.ones(1, dtype=torch.float64)
    return kept, w, values


@pytest.mark.parametrize("weighting,fn", [("chg", select_chg), ("gradient", select_gradient),
                                          ("hardness", select_hardness)])
@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 1.0])
def test_algorithm2_matches_dense_oracle(weighting, fn, fraction):
    model, x, y, C = _tiny_problem()
    factors = chg.compute_factors(model, x, y)
    sel = fn(SelectionInput(factors, y, C, fraction, generator=torch.Generator()))
    kept, w, _ = _oracle_algorithm2(model, x, y, C, fraction, weighting)
    assert sel.indices.tolist() == kept
    assert sel.weights.dtype == torch.float32
    torch.testing.assert_close(sel.weights.double(), w, rtol=1e-6, atol=1e-7)  # weights are float32
    assert float(sel.weights.max()) == 1.0 and float(sel.weights.min()) == (0.0 if len(kept) > 1 else 1.0)


def test_per_class_values_equal_enumeration_on_a_small_class():
    """Exhaustive enumeration of U(S) = ‖ᾱ‖² − ‖x̄_S − α‖² in exact rationals on the players of one class."""
    model, x, y, C = _tiny_problem(seed=3)
    X, _ = _autograd_player_vectors(model, x, y, "chg")
    idx = (y == 1).nonzero().squeeze(1)[:7]
    Xq = [[Fraction(float(v)) for v in row] for row in X[idx]]
    n, d = len(Xq), len(Xq[0])
    alpha = [sum(r[j] for r in Xq) / n for j in range(d)]

    def U(S):
        if not S:
            return Fraction(0)
        mean = [sum(Xq[i][j] for i in S) / len(S) for j in range(d)]
        return sum(a * a for a in alpha) - sum((m - a) ** 2 for m, a in zip(mean, alpha))

    exact = [float(v) for v in chg.exact_shapley(U, n)]
    factors = chg.compute_factors(model, x[idx], y[idx])
    ours = chg.shapley_from_factors(factors, utility="chg")
    np.testing.assert_allclose(ours.numpy(), exact, rtol=1e-9, atol=1e-12)


def test_tiny_classes_and_single_point_subset():
    model, x, y, C = _tiny_problem()  # class sizes 1, 9, 11, 2
    factors = chg.compute_factors(model, x, y)
    sel = select_chg(SelectionInput(factors, y, C, 0.2, generator=torch.Generator()))
    assert sorted(y[sel.indices].tolist()) == [0, 1, 2, 2, 3]  # k = 5: one point per class, also the 1-point class
    sel = select_chg(SelectionInput(factors, y, C, 0.01, generator=torch.Generator()))
    assert y[sel.indices].tolist() == [2]  # k = 1 < 4 classes: the one point comes from the largest class
    one = (y == 0).nonzero().squeeze(1)
    sel1 = select_chg(SelectionInput(factors[one], y[one], C, 0.5, generator=torch.Generator()))
    assert sel1.indices.tolist() == [0] and sel1.weights.tolist() == [1.0]  # |S| = 1: weight 1


def test_unweighted_variant_keeps_the_same_subset_with_unit_weights():
    model, x, y, C = _tiny_problem(seed=1)
    factors = chg.compute_factors(model, x, y)
    inp = SelectionInput(factors, y, C, 0.3, generator=torch.Generator())
    a, b = select_chg(inp), select_chg_unweighted(inp)
    assert a.indices.tolist() == b.indices.tolist()
    assert b.weights.tolist() == [1.0] * b.indices.numel()


def test_algorithm2_input_errors():
    model, x, y, C = _tiny_problem()
    factors = chg.compute_factors(model, x, y)
    with pytest.raises(ValueError, match="factors"):
        select_chg(SelectionInput(None, y, C, 0.3, generator=torch.Generator()))
    with pytest.raises(ValueError, match="rows"):
        select_chg(SelectionInput(factors[:5], y, C, 0.3, generator=torch.Generator()))
    bad = chg.Factors(factors.loss.clone(), factors.err.clone(), factors.feat.clone())
    bad.feat[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN|finite"):
        select_chg(SelectionInput(bad, y, C, 0.3, generator=torch.Generator()))


# ---- registry and contract --------------------------------------------------------------------------------------

def test_registry_names_and_flags():
    assert set(SELECTORS) == {"full", "random", "adaptive_random", "glister", "gradmatch_pb", "chg", "chg_unweighted",
                              "chg_ride", "hardness", "gradient"}
    assert not SELECTORS["random"].adaptive and SELECTORS["adaptive_random"].adaptive
    assert not SELECTORS["full"].adaptive and not SELECTORS["full"].needs_factors
    assert SELECTORS["glister"].needs_val and SELECTORS["chg"].needs_factors
    assert SELECTORS["chg_ride"].ride_along and not SELECTORS["chg"].ride_along
    with pytest.raises(ValueError, match="unknown selection method"):
        get_selector("nope")


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_every_method_returns_a_valid_selection(name):
    model, x, y, C = _tiny_problem(n=40)
    factors = chg.compute_factors(model, x, y)
    vx, vy = x[:10] * 0.5, y[:10]
    inp = SelectionInput(factors, y, C, 0.3, generator=torch.Generator().manual_seed(0),
                         val_factors=chg.compute_factors(model, vx, vy), val_labels=vy, batch_size=8)
    sel = check_selection(get_selector(name).fn(inp), 40)
    assert sel.indices.dtype == torch.int64 and sel.weights.dtype == torch.float32
    if name == "full":
        assert sel.indices.tolist() == list(range(40))


def test_check_selection_rejects_bad_output():
    with pytest.raises(ValueError, match="unique"):
        check_selection(Selection(torch.tensor([1, 1]), torch.ones(2)), 5)
    with pytest.raises(ValueError, match="lie in"):
        check_selection(Selection(torch.tensor([5]), torch.ones(1)), 5)
    with pytest.raises(ValueError, match=">= 0"):
        check_selection(Selection(torch.tensor([0]), -torch.ones(1)), 5)
    assert select_full(SelectionInput(None, torch.tensor([0, 1, 1]), 2, 0.5, 0, torch.Generator())).indices.tolist() \
        == [0, 1, 2]


def test_two_point_class_is_an_exact_tie_kept_by_lower_index():
    """With α = the class mean, both points of a 2-point class have value ‖α‖²/2 exactly (Definition 1), so the
    rounding noise of the closed form must not decide: the lower index is kept."""
    model, x, y, C = _tiny_problem(seed=2)
    two = (y == 3).nonzero().squeeze(1)
    assert two.numel() == 2
    factors = chg.compute_factors(model, x, y)
    v = chg.shapley_from_factors(factors[two], utility="chg")
    X, _ = _autograd_player_vectors(model, x[two], y[two], "chg")
    half_alpha_sq = float((X.mean(0) ** 2).sum()) / 2
    np.testing.assert_allclose(v.numpy(), [half_alpha_sq] * 2, rtol=1e-9)
    for order in (two, two.flip(0)):  # whichever comes first in the pool is kept
        sel = select_chg(SelectionInput(factors[order], y[order], C, 0.5, generator=torch.Generator()))
        assert sel.indices.tolist() == [0]


# ---- every method trains on the same budget ---------------------------------------------------------------------

def _synthetic_pool(counts, D=6, seed=0):
    """Factors of a pool with the given class sizes: softmax outputs p, err = p − onehot(y), loss = −log p_y."""
    g = torch.Generator().manual_seed(seed)
    C, n = len(counts), sum(counts)
    y = torch.repeat_interleave(torch.arange(C), torch.tensor(counts))[torch.randperm(n, generator=g)]
    p = torch.softmax(torch.randn(n, C, generator=g, dtype=torch.float64), 1)
    err = p - nn.functional.one_hot(y, C).double()
    loss = -torch.log(p[torch.arange(n), y])
    return chg.Factors(loss, err, torch.randn(n, D, generator=g, dtype=torch.float64)), y


BUDGET_CASES = {  # (class sizes, fraction, GradMatch batch size) → round(a·n)
    "100x450_a0.05": ([450] * 100, 0.05, 128),       # the example: 2,250 (per-class rounding kept 2,300)
    "100x3_a0.1": ([3] * 100, 0.1, 8),                # the example: 30 (per-class rounding kept 100)
    "imbalanced_a0.1": ([500, 100, 20, 5, 1], 0.1, 16),   # 626 points → 63
    "short_last_batch_a0.3": ([205, 205], 0.3, 32),   # 410 = 12·32 + 26 points: k = 123
}


@pytest.mark.parametrize("case", sorted(BUDGET_CASES))
@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_every_selector_keeps_exactly_round_a_n_distinct_points(name, case):
    counts, fraction, batch_size = BUDGET_CASES[case]
    factors, y = _synthetic_pool(counts)
    C, n = len(counts), sum(counts)
    vf, vy = _synthetic_pool([10] * C, seed=1)
    inp = SelectionInput(factors, y, C, fraction, generator=torch.Generator().manual_seed(0),
                         val_factors=vf, val_labels=vy, batch_size=batch_size, lr=0.05)
    sel = check_selection(get_selector(name).fn(inp), n)  # unique indices in [0, n)
    expected = n if name == "full" else int(np.floor(fraction * n + 0.5))
    assert sel.indices.numel() == expected
    if name in ("chg", "chg_unweighted", "hardness", "gradient"):  # Algorithm 2: every class present keeps a point
        assert torch.unique(y[sel.indices]).numel() == (C if expected >= C else expected)


# ---- labels as a user would pass them ---------------------------------------------------------------------------

@pytest.mark.parametrize("convert", [
    lambda y: y.numpy(), lambda y: y.numpy().astype(np.int32), lambda y: y.numpy().astype(np.uint8),
    lambda y: y.to(torch.int16), lambda y: y.to(torch.int32), lambda y: y.to(torch.uint8), lambda y: y.tolist()],
    ids=["numpy_int64", "numpy_int32", "numpy_uint8", "torch_int16", "torch_int32", "torch_uint8", "list"])
@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_selectors_accept_numpy_and_any_integer_labels(name, convert):
    """The same selection as with int64 tensors, for NumPy / narrower integer labels (pool and validation set)."""
    factors, y = _synthetic_pool([30, 20, 10])
    vf, vy = _synthetic_pool([5, 5, 5], seed=1)

    def run(labels, val_labels):
        inp = SelectionInput(factors, labels, 3, 0.3, generator=torch.Generator().manual_seed(0),
                             val_factors=vf, val_labels=val_labels, batch_size=8)
        return get_selector(name).fn(inp)

    ref, got = run(y, vy), run(convert(y), convert(vy))
    assert torch.equal(got.indices, ref.indices) and torch.equal(got.weights, ref.weights)
    if name == "chg":
        assert torch.equal(class_budgets(convert(y), 3, 0.3), class_budgets(y, 3, 0.3))


@pytest.mark.parametrize("bad, match", [(torch.tensor([0.0, 1.0]), "integer class labels.*float32"),
                                        (np.array([0.0, 1.0]), "integer class labels.*float64"),
                                        (torch.tensor([True, False]), "integer class labels.*bool"),
                                        (np.array(["a", "b"]), "integer class labels"),
                                        (torch.zeros(2, 2, dtype=torch.long), "1-D")])
def test_labels_that_are_not_integer_classes_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        SelectionInput(None, bad, 2, 0.5, generator=torch.Generator())
    with pytest.raises(ValueError, match=match):
        class_budgets(bad, 2, 0.5)


def test_fraction_and_num_classes_accept_numpy_scalars():
    y = np.array([0, 1, 1, 2, 2, 2])
    assert class_budgets(y, np.int64(3), np.float32(0.5)).tolist() == class_budgets(torch.tensor(y), 3, 0.5).tolist()
    inp = SelectionInput(None, y, np.int64(3), np.float64(0.5), generator=torch.Generator())
    assert inp.num_classes == 3 and inp.labels.dtype == torch.int64
    for bad in (True, np.bool_(True), "0.5", 0.0):
        with pytest.raises(ValueError, match="fraction"):
            class_budgets(y, 3, bad)


def test_algorithm2_values_a_bias_free_head_without_the_bias_column():
    """Algorithm 2's values of a head without bias are those of g = e ⊗ h (no "+1"): the factors' bias flag reaches
    eq. (3) (it was dropped when the factors were cast to float64, which valued a bias column that does not exist)."""
    from chg.lastlayer import Factors
    from chg.selection.algorithm2 import _values
    g = torch.Generator().manual_seed(0)
    loss, err, feat = torch.rand(12, generator=g), torch.randn(12, 3, generator=g), torch.randn(12, 4, generator=g)
    l64, e64, h64 = loss.double(), err.double(), feat.double()
    x = (l64[:, None, None] * e64[:, :, None] * h64[:, None, :]).reshape(12, -1)  # dense l·(e ⊗ h), float64
    want = chg.chg_shapley(x)
    got = _values(Factors(loss, err, feat, bias=False), "chg", "full")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
