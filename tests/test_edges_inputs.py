"""Issue 13, kind 6: inputs a user would pass — NumPy arrays, pandas objects, any integer label dtype, NumPy integers,
lists of groups — are accepted or refused with an error saying what to pass, never silently reinterpreted. And the
behaviours no test pinned in the core: chg_shapley refuses NaN with an explicit alpha; hardness values per group are
the per-group game's (enumeration); value_data never changes the caller's config."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from test_edges_oracle import close, dense_values, enumerate_mean_game

import chg
from chg.loop import value_data
from chg.valuation import EpochValuer

LR0 = dict(epochs=2, lr=0.0, optimizer="sgd", momentum=0.0, batch_size=4)


def _model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


def _xy(n=11, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), np.arange(n) % 3


def _oracle(model, X, y):
    x, t = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y).long()
    return dense_values(model, model[-1], [(x[i:i + 1], t[i:i + 1]) for i in range(len(t))])


def test_issue_instance_numpy_x_y_is_refused_with_what_to_pass():
    X, y = _xy()
    with pytest.raises(ValueError, match=r"not a data set of \(x, y\) items: pass features and labels together as "
                                         r"a pair, value_data\(model, \(X, y\)\)"):
        value_data(_model(), X, y)
    with pytest.raises(ValueError, match=r"value_data\(model, \(X, y\)\)"):
        value_data(_model(), torch.as_tensor(X))


def test_numpy_pairs_int32_labels_and_a_float32_model():
    X, y = _xy()
    model = _model()
    close(value_data(model, (X, y.astype(np.int32)), **LR0), _oracle(model, X, y))
    close(value_data(model, (X, y.astype(np.uint8)), **LR0), _oracle(model, X, y))
    close(value_data(model, TensorDataset(torch.as_tensor(X), torch.as_tensor(y, dtype=torch.int32)), **LR0),
          _oracle(model, X, y))
    m32 = _model(dtype=torch.float32)  # float64 NumPy features go to the model's dtype
    got = value_data(m32, (X, y), **LR0)
    close(got, _oracle(_model().double(), X, y), rtol=2e-4)
    with pytest.raises(ValueError, match="pass integer class labels"):
        value_data(_model(), (X, y.astype(np.float64)))
    with pytest.raises(ValueError, match="one label per row"):
        value_data(_model(), (X, y[:5]))


def test_python_lists_as_x_y_are_a_clear_error_and_float64_datasets_go_to_the_models_dtype():
    """(X_list, y_list) was taken for a data set of two items: torch's collate raised "object of type 'int' has no
    len()"; a list X beside a NumPy y said "item 1 is a ndarray". Both now say to pass arrays. A TensorDataset (or
    any Dataset) of float64 features for a float32 model was torch's "mat1 and mat2 must have the same dtype": the
    features now go to the model's dtype, as a pair's do, and the values equal the pair's."""
    X, y = _xy()
    for pair in ((X.tolist(), y.tolist()), (X.tolist(), y), (X[:2].tolist(), y[:2].tolist())):
        with pytest.raises(ValueError, match=r"pair of a list and (list|ndarray) \(\d+ rows each\): pass X and y as "
                                             r"arrays or tensors"):
            value_data(_model(), pair, **LR0)
    items = [(torch.as_tensor(X[i]), int(y[i])) for i in range(2)]  # a data set of two (x, y) items: not a pair
    assert len(value_data(_model(), items, **LR0).to_tensor()) == 2
    m32 = _model(dtype=torch.float32)
    want = value_data(m32, (X, y), **LR0)
    got = value_data(_model(dtype=torch.float32), TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), **LR0)
    torch.testing.assert_close(got.to_tensor(), want.to_tensor(), rtol=0, atol=0)

    class Rows(torch.utils.data.Dataset):  # a Dataset of its own, float64 items
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return torch.as_tensor(X[i]), int(y[i])
    got = value_data(_model(dtype=torch.float32), Rows(), **LR0)
    torch.testing.assert_close(got.to_tensor(), want.to_tensor(), rtol=0, atol=0)


def test_integer_features_need_a_model_that_embeds_them():
    """Raw uint8 pixels (or int64 features) to a model without nn.Embedding: a ValueError saying to pass floating
    features, before training — not torch's "mat1 and mat2 must have the same dtype" from inside the model. A model
    with an nn.Embedding takes integer ids as they are."""
    X, y = _xy()
    for ints in (np.clip(X * 40 + 128, 0, 255).astype(np.uint8), X.astype(np.int64), torch.as_tensor(X).long()):
        with pytest.raises(ValueError, match=r"X has dtype torch.(uint8|int64), but the model has no nn.Embedding.*"
                                             r"pass floating features"):
            value_data(_model(), (ints, y), **LR0)
    torch.manual_seed(0)
    embed = nn.Sequential(nn.Embedding(7, 4), nn.Flatten(), nn.Linear(8, 3)).double()
    ids = np.random.default_rng(0).integers(0, 7, size=(11, 2))
    got = value_data(embed, (ids, y), **LR0)
    x = torch.as_tensor(ids)
    close(got, dense_values(embed, embed[-1], [(x[i:i + 1], torch.as_tensor(y[i:i + 1])) for i in range(11)]))


def test_pandas_dataframe_and_series():
    pd = pytest.importorskip("pandas")
    X, y = _xy(seed=1)
    frame = pd.DataFrame(X, columns=list("abcd"), index=np.arange(100, 111))  # an index that is not 0..n-1
    labels = pd.Series(y, index=frame.index)
    model = _model()
    close(value_data(model, (frame, labels), **LR0), _oracle(model, X, y))
    with pytest.raises(ValueError, match=r"value_data\(model, \(X, y\)\)"):
        value_data(model, frame, labels)
    with pytest.raises(ValueError, match="encode categories or strings as integers"):
        value_data(model, (frame, labels.map({0: "cat", 1: "dog", 2: "eel"}).astype(object)))


def test_a_pandas_index_names_the_rows_of_the_values_and_x_y_of_different_indexes_are_refused():
    """A shuffled DataFrame (as after train_test_split) kept no index: values.index and suspects() were positions
    0..n-1, so X.loc[v.suspects()] picked other rows than the valued ones. Now the values carry X's index (y's when
    only y is pandas); X and y whose indexes differ are an error (paired by position, a row took another's label); an
    index repeating labels falls back to positions with a warning; the default 0..n-1 stays."""
    pd = pytest.importorskip("pandas")
    X, y = _xy(seed=1)
    order = np.array([7, 3, 10, 0, 5, 1, 9, 2, 8, 6, 4])
    frame = pd.DataFrame(X, columns=list("abcd")).iloc[order]  # index: the rows' labels, shuffled
    labels = pd.Series(y).iloc[order]
    model = _model()
    got = value_data(model, (frame, labels), **LR0)
    assert got.index.tolist() == order.tolist()
    want = _oracle(model, X[order], y[order])  # value i: the row at position i, named order[i]
    close(got, want)
    low = got.suspects(k=3, threshold=None)
    assert set(low.tolist()) <= set(order.tolist())
    np.testing.assert_allclose(got.to_pandas().set_index("row").loc[low, "value"].to_numpy(),
                               np.sort(want.numpy())[:3], rtol=1e-10)
    series_only = value_data(_model(), (X[order], labels), **LR0)
    assert series_only.index.tolist() == order.tolist()
    with pytest.raises(ValueError, match=r"different indexes \(at position 0: X's row 7, y's 0\).*y.loc\[X.index\]"):
        value_data(_model(), (frame, pd.Series(y[order])), **LR0)
    with pytest.warns(UserWarning, match="repeats some labels"):
        twice = value_data(_model(), (frame.set_axis([0] * 11), labels.set_axis([0] * 11)), **LR0)
    assert twice.index.tolist() == list(range(11))
    assert value_data(_model(), (pd.DataFrame(X), pd.Series(y)), **LR0).index.tolist() == list(range(11))


def test_an_index_values_save_cannot_store_falls_back_to_positions_and_a_valid_pair_is_checked_too(tmp_path):
    """(a reviewer of the day's fixes) A MultiIndex (or Period, tz-aware dates) reached Values.index, and
    Values.save then failed; such an index now falls back to positions with a warning. valid_dataset=(X, y) with
    different indexes was paired silently; it is refused as train_dataset's is. Dict items of float64 features go to
    the model's dtype too."""
    pd = pytest.importorskip("pandas")
    X, y = _xy(seed=1)
    multi = pd.MultiIndex.from_arrays([["a", "b"] * 5 + ["a"], range(11)])
    with pytest.warns(UserWarning, match="which Values.save cannot store"):
        got = value_data(_model(), (pd.DataFrame(X, index=multi), pd.Series(y, index=multi)), **LR0)
    assert got.index.tolist() == list(range(11))
    got.save(tmp_path / "v.npz")
    order = np.arange(11)[::-1]
    with pytest.raises(ValueError, match="different indexes"):
        value_data(_model(), (X, y), valid_dataset=(pd.DataFrame(X).iloc[order], pd.Series(y)), alpha="valid",
                   **LR0)

    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return {"x": torch.as_tensor(X[i]), "labels": int(y[i])}

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _model(dtype=torch.float32)

        def forward(self, x, labels=None):
            return self.net(x)
    want = value_data(_model(dtype=torch.float32), (X, y), **LR0)
    close(value_data(M(), Dicts(), **LR0), want.to_tensor(), rtol=1e-6)


def test_pandas_nullable_columns_are_numbers_and_a_missing_value_is_named_by_its_row():
    """Reviewer: X.convert_dtypes() (Float64 columns, all numbers) was refused as "X has dtype object: pass numbers".
    pandas' nullable dtypes (Float64, Int64, boolean) are numbers: the values equal those of the same NumPy data. A
    missing value (pd.NA) is no silent 0: in X it is NaN, stopped by the NaN message naming the row; in y, a
    message naming the row. A column of text keeps its message."""
    pd = pytest.importorskip("pandas")
    X, y = _xy(seed=1)
    X[:, 2], X[:, 3] = np.arange(11) % 4, np.arange(11) % 2  # an integer and a 0/1 column
    frame = pd.DataFrame(X, columns=list("abcd")).astype({"a": "Float64", "b": "Float64", "c": "Int64",
                                                          "d": "boolean"})
    labels = pd.Series(y).astype("Int64")
    model = _model()
    want = _oracle(model, X, y)
    close(value_data(model, (frame, labels), **LR0), want)
    close(value_data(model, (pd.DataFrame(X).convert_dtypes(), labels), **LR0), want)
    gap = frame.copy()
    gap.iloc[5, 1] = pd.NA
    with pytest.raises(ValueError, match=r"logits contain NaN or Inf.*row 5 of the data; a NaN/Inf feature"):
        value_data(model, (gap, labels), **LR0)
    with pytest.raises(ValueError, match=r"y has no label in row\(s\) \[3, 7\].*drop those rows"):
        value_data(model, (frame, labels.mask(labels.index.isin([3, 7]))), **LR0)
    with pytest.raises(ValueError, match="X has dtype object: pass numbers.*encode categories or strings"):
        value_data(model, (frame.assign(e=["t"] * 11), labels), **LR0)


def test_numpy_integers_and_indices():
    valuer = EpochValuer(np.int64(11))
    assert valuer.n == 11 and isinstance(valuer.n, int)
    for bad, error in ((True, TypeError), (11.0, TypeError), ("11", TypeError), (0, ValueError),
                       (np.int32(-1), ValueError)):
        with pytest.raises(error, match=r"n must be an integer >= 1 \(the number of training points\)"):
            EpochValuer(bad)
    X, y = _xy()
    model = _model()
    f = chg.compute_factors(model, torch.as_tensor(X), torch.as_tensor(y))
    valuer.add(np.arange(11, dtype=np.int32), f, y.astype(np.int16))  # NumPy indices and labels
    close(valuer.end_epoch(), _oracle(model, X, y))
    with pytest.raises(ValueError, match="indices must be integers"):
        EpochValuer(11).add(np.arange(11, dtype=np.float64), f)


@pytest.mark.parametrize("kind", ["list", "numpy", "tensor"])
def test_hardness_groups_accept_lists_and_arrays_and_equal_the_per_group_game(kind):
    """The per-group values of U(S) = mean loss over S against enumeration of each group's own game (not the whole
    pool's), for groups given as a list, an array or a tensor — as utility='chg' accepts them."""
    gen = torch.Generator().manual_seed(7)
    loss = torch.rand(9, generator=gen, dtype=torch.float64) * 3
    f = chg.Factors(loss, torch.randn(9, 3, generator=gen, dtype=torch.float64),
                    torch.randn(9, 2, generator=gen, dtype=torch.float64))
    labels = [0, 1, 2, 0, 1, 1, 2, 2, 2]
    groups = {"list": labels, "numpy": np.array(labels, dtype=np.int32), "tensor": torch.tensor(labels)}[kind]
    got = chg.shapley_from_factors(f, utility="hardness", groups=groups)
    want = torch.empty(9, dtype=torch.float64)
    for g in range(3):
        rows = [i for i, v in enumerate(labels) if v == g]
        want[rows] = enumerate_mean_game(loss[rows].tolist())
    close(got, want, rtol=1e-12)
    close(chg.shapley_from_factors(f, utility="chg", groups=groups),
          chg.shapley_from_factors(f, utility="chg", groups=torch.tensor(labels)), rtol=0)
    with pytest.raises(ValueError, match="groups must be integer labels"):
        chg.shapley_from_factors(f, utility="hardness", groups=np.array(labels, dtype=float))


def test_chg_shapley_refuses_nan_with_an_explicit_alpha():
    x = torch.randn(5, 3, dtype=torch.float64)
    x[2, 1] = float("nan")
    alpha = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="x contains 1 non-finite"):
        chg.chg_shapley(x, alpha)
    with pytest.raises(ValueError, match="x contains 1 non-finite"):
        chg.chg_shapley(x.numpy(), alpha.numpy())
    with pytest.raises(ValueError, match="alpha contains 1 non-finite"):
        chg.chg_shapley(torch.ones(4, 3, dtype=torch.float64), torch.tensor([0.0, float("inf"), 0.0]))


def test_value_data_settings_are_keywords_checked_by_type_and_value():
    X, y = _xy()
    for bad, error, message in ((dict(epochs=1.5), TypeError, "epochs must be an integer >= 1"),
                                (dict(epochs=0), ValueError, "epochs must be an integer >= 1"),
                                (dict(mode="fast"), ValueError, "mode must be one of"),
                                (dict(mode=1), TypeError, "mode and optimizer must be strings"),
                                (dict(lr="0.1"), TypeError, "lr must be a number")):
        with pytest.raises(error, match=message):
            value_data(_model(), (X, y), **bad)
    with pytest.raises(TypeError, match="positional"):
        value_data(_model(), (X, y), None, 2)  # epochs is keyword-only: no silent meaning for a 4th positional


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compute_factors_moves_batches_to_the_models_device():
    X, y = _xy()
    model = _model().cuda()
    x, t = torch.as_tensor(X), torch.as_tensor(y)
    f = chg.compute_factors(model, x, t)  # CPU batch, CUDA model
    assert f.err.device.type == "cuda"
    close(chg.shapley_from_factors(f).cpu(), _oracle(model.cpu(), X, y))
    model.cuda()
    got = EpochValuer(11).value_epoch(model, DataLoader(TensorDataset(x, t), batch_size=4))
    close(got, _oracle(model.cpu(), X, y))


def test_dict_items_without_labels_are_named_before_training():
    """HF-style items with no 'labels' (e.g. a language model's documents given as input_ids only) fail at once with
    what to add, not with a collate error from inside the loader."""
    items = [{"input_ids": torch.arange(i % 3 + 2)} for i in range(6)]  # ragged: torch.stack would fail first
    with pytest.raises(ValueError, match=r"items are dicts without 'labels' \(keys \['input_ids'\]\).*labels = "
                                         r"input_ids"):
        value_data(_model(), items, epochs=1)
