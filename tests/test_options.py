"""One options type (chg.Options), validated once: every entry point takes its fields as keywords (0.3.0: one way to
pass settings; ``options=`` is a TypeError that says what to pass) and refuses a bad one with Options' own message
(a wrong type: TypeError; a wrong value: ValueError). Hardness Shapley through the same group statistics (n and Σ l
are sums) as CHG and Gradient Shapley."""
import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import chg
from chg import Options
from chg.factored import utility_stats, utility_values
from chg.lastlayer import Factors, compute_factors
from chg.loop import value_data
from chg.valuation import EpochValuer

BAD = [(dict(utility="shap"), ValueError, "utility must be one of"),
       (dict(gradient="weights"), ValueError, "gradient must be one of"),
       (dict(alpha="test"), ValueError, "alpha must be one of"),
       (dict(per_class="yes"), TypeError, "per_class must be True or False"),
       (dict(utility=None), TypeError, "utility must be a string, one of"),
       (dict(utility="hardness", alpha="valid"), ValueError, "has no target")]


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _data(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.arange(n) % 3


def test_defaults_are_the_paper_and_frozen():
    o = Options()
    assert (o.utility, o.gradient, o.alpha, o.per_class) == ("chg", "full", "train", False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.utility = "gradient"
    assert Options(per_class=np.bool_(True)).per_class is True  # a NumPy bool is a bool, stored as one


@pytest.mark.parametrize("fields,error,message", BAD)
def test_every_entry_point_refuses_a_bad_option_with_the_same_message(fields, error, message):
    """One validator: Options, EpochValuer, value_data, shapley_from_factors and the OpenDataVal plugin say the same."""
    x, y = _data()
    with pytest.raises(error, match=message) as direct:
        Options(**fields)
    entry_points = [lambda: EpochValuer(3, **fields), lambda: value_data(_model(), (x, y), (x, y), **fields)]
    if "per_class" not in fields and "alpha" not in fields:
        entry_points.append(lambda: chg.shapley_from_factors(compute_factors(_model(), x, y), **fields))
    try:
        from chg.opendataval import CHGShapley
        entry_points.append(lambda: CHGShapley(**fields))
    except ImportError:  # opendataval not installed
        pass
    for call in entry_points:
        with pytest.raises(error) as info:
            call()
        assert str(info.value) == str(direct.value)


def _plugin():
    try:
        from chg.opendataval import CHGShapley
    except ImportError:  # opendataval not installed
        return []
    return [CHGShapley]


@pytest.mark.parametrize("call", [lambda o: EpochValuer(3, options=o),
                                  lambda o: value_data(_model(), _data(), options=o),
                                  lambda o: chg.shapley_from_factors(compute_factors(_model(), *_data()), options=o)]
                         + [lambda o, c=c: c(options=o) for c in _plugin()])
def test_options_object_is_refused_with_what_to_pass_instead(call):
    """0.3.0: settings are keywords only; an Options object is a TypeError naming the keywords."""
    with pytest.raises(TypeError, match=r"got the keyword 'options', removed in 0.3.0: pass its fields as keywords "
                                        r"\(utility=, gradient=, alpha=, per_class=\)"):
        call(Options(per_class=True))


def test_value_data_config_is_refused_with_what_to_pass_instead():
    from chg.loop import ValueDataConfig
    with pytest.raises(TypeError, match=r"got the keyword 'config', removed in 0.3.0: pass the training settings as "
                                        r"keywords \(epochs=, lr=, ...\)"):
        value_data(_model(), _data(), config=ValueDataConfig(epochs=1))


@pytest.mark.parametrize("options", [Options(), Options(utility="gradient", gradient="bias", per_class=True),
                                     Options(utility="hardness", per_class=True), Options(alpha="valid")])
def test_an_options_record_passed_as_keywords_equals_its_fields(options):
    """``**dataclasses.asdict(options)`` — what the TypeError tells a 0.2 user to write — gives the values of the
    four keywords written out, bit for bit, in EpochValuer and value_data."""
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    fields = dataclasses.asdict(options)
    written = dict(utility=options.utility, gradient=options.gradient, alpha=options.alpha,
                   per_class=options.per_class)
    by_record = EpochValuer(24, **fields).value_epoch(_model(), loader, loader)
    by_fields = EpochValuer(24, **written).value_epoch(_model(), loader, loader)
    torch.testing.assert_close(by_record, by_fields, rtol=0, atol=0)
    kw = dict(epochs=1, batch_size=6, seed=0)
    np.testing.assert_array_equal(value_data(_model(), (x, y), (x, y), **fields, **kw).numpy(),
                                  value_data(_model(), (x, y), (x, y), **written, **kw).numpy())


def test_hardness_statistics_are_sums_over_batches():
    """n and Σ l of parts add up to the whole; values of each part from the summed statistics = Hardness Shapley."""
    g = torch.Generator().manual_seed(4)
    loss = torch.rand(30, generator=g, dtype=torch.float64) * 2
    f = Factors(loss, torch.zeros(30, 3, dtype=torch.float64), torch.zeros(30, 4, dtype=torch.float64))
    o = Options(utility="hardness")
    parts = [f[:11], f[11:12], f[12:]]
    stats = utility_stats(parts[0], o) + utility_stats(parts[1], o) + utility_stats(parts[2], o)
    assert stats.n == 30
    torch.testing.assert_close(stats.sum, loss.sum().reshape(1), rtol=1e-15, atol=0)
    got = torch.cat([utility_values(p, stats, o) for p in parts])
    torch.testing.assert_close(got, chg.hardness_shapley(loss), rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="no target"):
        utility_values(parts[0], stats, o, alpha=torch.zeros(1))


def test_hardness_per_class_valuer_equals_the_closed_form_per_class():
    x, y = _data(n=25)
    model = _model()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    got = EpochValuer(25, utility="hardness", per_class=True).value_epoch(model, loader)
    loss = compute_factors(model, x, y).loss
    for c in range(3):
        idx = (y == c).nonzero().squeeze(1)
        torch.testing.assert_close(got[idx], chg.hardness_shapley(loss[idx]), rtol=1e-13, atol=1e-15)


def test_one_validator_and_no_hardness_branch_in_end_epoch():
    """The options' messages are written once in chg/ (Options), and end_epoch treats every utility alike."""
    root = Path(chg.__file__).parent
    text = "".join(p.read_text() for p in sorted(root.rglob("*.py")))
    for name in ("utility", "gradient", "alpha"):  # Options builds these messages from the name, in one loop
        assert f"{name} must be one of" not in text
    assert "hardness" not in inspect.getsource(EpochValuer.end_epoch)


@pytest.mark.parametrize("bad", ["False", "no", 0, None])
def test_partial_epochs_is_a_bool_not_anything_truthy(bad):
    """partial_epochs was read with bool(): "False" turned partial epochs on (reviewer R7's r3_partial_epochs_str.py).
    Like per_class it takes True or False (a NumPy bool too)."""
    from chg.streaming import StreamingValuer
    for make in (EpochValuer, StreamingValuer):
        with pytest.raises(TypeError, match=f"partial_epochs must be True or False, got {bad!r}"):
            make(3, partial_epochs=bad)
        assert make(3, partial_epochs=np.bool_(True)).partial_epochs is True
    for name in ("partial_epochs", "per_class"):  # a sequence valuer (EpochValuer(unit=...)) says the same
        with pytest.raises(TypeError, match=f"{name} must be True or False, got {bad!r}"):
            EpochValuer(3, unit="sequence", **{name: bad})
        assert EpochValuer(3, unit="sequence", **{name: np.False_}).n == 3  # the default, as a NumPy bool
