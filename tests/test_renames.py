"""Version 0.2.0's names of the field: every renamed public keyword gives the same numbers under its new name (checked
against the dense closed form, which the proofs check against enumeration), and the old keyword is a TypeError that
names the new one (chg.renames.renamed, the one helper)."""
from fractions import Fraction

import pytest
import torch
from torch import nn

import chg
from chg.games import additive_game, exact_shapley
from chg.lastlayer import Factors, compute_factors
from chg.renames import renamed
from chg.selection import SelectionInput, algorithm2, select_chg, select_gradient, select_hardness
from chg.loop import value_data
from chg.valuation import EpochValuer

RTOL = 1e-12
UTILITIES = ("chg", "gradient", "hardness")


def _factors(n=14, C=3, D=4, seed=0) -> Factors:
    g = torch.Generator().manual_seed(seed)
    err = torch.softmax(torch.randn(n, C, generator=g, dtype=torch.float64), 1)
    y = torch.arange(n) % C
    err[torch.arange(n), y] -= 1
    return Factors(torch.rand(n, generator=g, dtype=torch.float64) * 2, err,
                   torch.randn(n, D, generator=g, dtype=torch.float64))


def _oracle(f: Factors, utility: str) -> torch.Tensor:
    """Dense players x_i = l_i e_i ⊗ [h_i; 1] (CHG) or e_i ⊗ [h_i; 1] (Gradient) in chg_shapley, or Hardness
    Shapley of the losses."""
    if utility == "hardness":
        return chg.hardness_shapley(f.loss)
    h = torch.cat([f.feat, torch.ones(f.feat.shape[0], 1, dtype=f.feat.dtype)], 1)
    x = (f.err[:, :, None] * h[:, None, :]).reshape(f.err.shape[0], -1)  # (n, C(D+1))
    return chg.chg_shapley(x * f.loss[:, None] if utility == "chg" else x)


def _close(got, want):
    got = got.to_tensor() if isinstance(got, chg.Values) else got
    torch.testing.assert_close(got, want, rtol=RTOL, atol=RTOL * float(want.abs().max()))


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _xy(n=18, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.arange(n) % 3


def _inp(f: Factors) -> SelectionInput:
    return SelectionInput(f, torch.arange(f.loss.shape[0]) % f.err.shape[1], f.err.shape[1], 0.5,
                          generator=torch.Generator())


OLD = [  # (call with the old keyword, the name in the message, old, new)
    (lambda: chg.Options(weighting="gradient"), "Options", "weighting", "utility"),
    (lambda: chg.shapley_from_factors(_factors(), weighting="gradient"), "shapley_from_factors", "weighting",
     "utility"),
    (lambda: EpochValuer(3, weighting="gradient"), "EpochValuer", "weighting", "utility"),
    (lambda: value_data(_model(), _xy(), weighting="gradient", epochs=1), "value_data", "weighting", "utility"),
    (lambda: algorithm2(_inp(_factors()), weighting="gradient"), "algorithm2", "weighting", "utility"),
    (lambda: chg.factored_shapley(_factors().err, _factors().feat, weight=_factors().loss), "factored_shapley",
     "weight", "loss"),
    (lambda: chg.group_stats(_factors().err, _factors().feat, weight=_factors().loss), "group_stats", "weight",
     "loss"),
    (lambda: chg.values_from_factors(_factors().err, _factors().feat, weight=_factors().loss, stats=None),
     "values_from_factors", "weight", "loss"),
    (lambda: additive_game(weights=[1, 2]), "additive_game", "weights", "values"),
]


@pytest.mark.parametrize("call, name, old, new", OLD, ids=[f"{o[1]}-{o[2]}" for o in OLD])
def test_old_keyword_is_a_type_error_naming_the_new_one(call, name, old, new):
    with pytest.raises(TypeError) as info:
        call()
    assert str(info.value) == f"{name}() got the keyword {old!r}, renamed to {new!r} in 0.2.0 (see CHANGELOG.md)"


def test_removed_keyword_selection_input_epoch():
    f = _factors()
    with pytest.raises(TypeError, match=r"^SelectionInput\(\) got the keyword 'epoch', removed in 0.2.0"):
        SelectionInput(f, torch.arange(14) % 3, 3, 0.5, epoch=0, generator=torch.Generator())
    assert not hasattr(_inp(f), "epoch")


def test_plugin_keyword():
    pytest.importorskip("opendataval.dataval")
    from chg.opendataval import CHGShapley
    with pytest.raises(TypeError, match=r"^CHGShapley\(\) got the keyword 'weighting', renamed to 'utility' in 0.2.0"):
        CHGShapley(weighting="gradient")
    ev = CHGShapley(utility="hardness")
    assert ev.options == chg.Options(utility="hardness") and ev.utility == "hardness"


@pytest.mark.parametrize("utility", UTILITIES)
def test_utility_keyword_gives_the_oracle_values(utility):
    f = _factors()
    want = _oracle(f, utility)
    assert chg.Options(utility=utility).utility == utility
    _close(chg.shapley_from_factors(f, utility=utility), want)
    valuer = EpochValuer(14, utility=utility)
    assert valuer.utility == utility and valuer.options == chg.Options(utility=utility)
    valuer.add(torch.arange(14), f)
    _close(valuer.end_epoch(), want)


@pytest.mark.parametrize("utility", UTILITIES)
def test_value_data_utility_keyword(utility):
    """lr = 0: the model never moves, so the one epoch's values are those of its factors (mode "pass")."""
    x, y = _xy()
    model = _model()
    got = value_data(model, (x, y), utility=utility, epochs=1, lr=0.0, batch_size=5)
    _close(got, _oracle(compute_factors(model, x, y), utility))


@pytest.mark.parametrize("utility, registered", [("chg", select_chg), ("gradient", select_gradient),
                                                 ("hardness", select_hardness)])
def test_algorithm2_utility_keyword(utility, registered):
    f = _factors(n=30)
    by_keyword, by_method = algorithm2(_inp(f), utility=utility), registered(_inp(f))
    assert torch.equal(by_keyword.indices, by_method.indices) and torch.equal(by_keyword.weights, by_method.weights)
    labels = _inp(f).labels  # the kept set: per class, the top half of the oracle's per-class values
    want = torch.empty(30, dtype=torch.float64)
    for c in range(3):
        idx = (labels == c).nonzero().squeeze(1)
        want[idx] = _oracle(f[idx], utility)
    top = [int(i) for c in range(3) for i in (labels == c).nonzero().squeeze(1)[want[labels == c].argsort(
        descending=True)[:5]]]
    assert by_keyword.indices.tolist() == sorted(top)


def test_loss_keyword_gives_the_oracle_values():
    f = _factors()
    want = _oracle(f, "chg")
    _close(chg.factored_shapley(f.err, f.feat, loss=f.loss), want)
    stats = chg.group_stats(f.err[:6], f.feat[:6], loss=f.loss[:6]) + chg.group_stats(f.err[6:], f.feat[6:],
                                                                                      loss=f.loss[6:])
    _close(torch.cat([chg.values_from_factors(f.err[:6], f.feat[:6], loss=f.loss[:6], stats=stats),
                      chg.values_from_factors(f.err[6:], f.feat[6:], loss=f.loss[6:], stats=stats)]), want)
    _close(chg.factored_shapley(f.err, f.feat, loss=None), _oracle(f, "gradient"))  # None: l_i = 1


def test_additive_game_values_keyword():
    v = [Fraction(3), Fraction(-1, 2), Fraction(5, 7)]
    assert exact_shapley(additive_game(values=v), 3) == v


def test_the_helper():
    @renamed("9.9", old="new", gone=None)
    def f(new=1):
        """doc"""
        return new
    assert f(new=2) == 2 and f(3) == 3 and f.__name__ == "f" and f.__doc__ == "doc"
    with pytest.raises(TypeError, match=r"^f\(\) got the keyword 'old', renamed to 'new' in 9.9"):
        f(old=2)
    with pytest.raises(TypeError, match=r"^f\(\) got the keyword 'gone', removed in 9.9"):
        f(gone=2)
    with pytest.raises(ValueError, match="renamed to itself"):
        renamed("9.9", same="same")


def test_a_misspelt_keyword_names_the_closest_one_it_takes():
    """A keyword the callable does not take is Python's TypeError, with the closest keyword (difflib); an old keyword
    still gets its rename message through stacked decorators; a callable with **kwargs passes everything on."""
    with pytest.raises(TypeError, match=r"^EpochValuer\(\) got an unexpected keyword argument 'utilty'; did you mean "
                                        r"'utility'\?$"):
        chg.EpochValuer(5, utilty="chg")
    with pytest.raises(TypeError, match=r"^value_data\(\) got an unexpected keyword argument 'epoch'; did you mean "
                                        r"'epochs'\?$"):
        chg.value_data(None, None, epoch=2)
    with pytest.raises(TypeError, match="'weighting', renamed to 'utility' in 0.2.0"):
        chg.EpochValuer(5, weighting="chg")  # the inner @renamed's message, not "unexpected"

    @renamed("9.9", old="new")
    def f(new=1, other=2):
        """doc"""
        return new
    with pytest.raises(TypeError, match=r"^f\(\) got an unexpected keyword argument 'zzz'; it takes new, other$"):
        f(zzz=1)

    @renamed("9.9", old="new")
    def g(new=1, **rest):
        """doc"""
        return rest
    assert g(anything=3) == {"anything": 3}


def test_the_trainer_callbacks_name_the_closest_of_their_own_keywords_too():
    """The callbacks take their own keywords (layer, weight, label_smoothing, check_loss) and EpochValuer's; a
    misspelling of either names the closest; n is refused (the callback counts the indexed rows)."""
    pytest.importorskip("lightning")
    from chg.integrations.lightning import CHGCallback
    for kw, want in (("check_los", "check_loss"), ("layr", "layer"), ("skip_epoch", "skip_epochs"),
                     ("storage_dtpe", "storage_dtype")):
        with pytest.raises(TypeError, match=rf"^CHGCallback\(\) got an unexpected keyword argument '{kw}'; did you "
                                            rf"mean '{want}'\?$"):
            CHGCallback(**{kw: None})
    with pytest.raises(TypeError, match="got the keyword 'n': the callback counts the rows"):
        CHGCallback(n=5)
