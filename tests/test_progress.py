"""chg.progress: bars on when asked or on a terminal, off otherwise; logging through the "chg" logger."""
import io
import logging

import pytest

from chg import progress as P


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _no_process_default():
    previous = P.set_progress(None)
    yield
    P.set_progress(previous)


def _drawn(**kw) -> tuple:
    stream = kw.pop("file")
    items = list(P.progress(range(3), desc="valuing", unit="epoch", file=stream, mininterval=0, **kw))
    return items, stream.getvalue()


def test_enabled_draws_a_bar_and_passes_items_through():
    items, text = _drawn(file=io.StringIO(), enabled=True)
    assert items == [0, 1, 2]
    assert "valuing" in text and "3/3" in text and "epoch" in text


def test_disabled_draws_nothing_even_on_a_terminal():
    items, text = _drawn(file=_Tty(), enabled=False)
    assert items == [0, 1, 2] and text == ""


def test_default_follows_the_terminal():
    assert _drawn(file=io.StringIO())[1] == ""  # a log file, a pipe, CI: no bar
    assert "3/3" in _drawn(file=_Tty())[1]


def test_process_default_applies_only_when_enabled_is_none():
    assert P.set_progress(False) is None
    assert _drawn(file=_Tty())[1] == ""                  # --no-progress silences library bars
    assert "3/3" in _drawn(file=io.StringIO(), enabled=True)[1]  # an explicit argument still wins
    assert P.set_progress(True) is False
    assert "3/3" in _drawn(file=io.StringIO())[1]


@pytest.mark.parametrize("bad", [1, "yes", 0.0])
def test_bad_setting_is_rejected(bad):
    with pytest.raises(ValueError, match="True, False or None"):
        P.progress(range(2), enabled=bad)
    with pytest.raises(ValueError, match="True, False or None"):
        P.set_progress(bad)


def test_manual_bar_with_total():
    stream = io.StringIO()
    with P.progress(total=10, desc="rows", enabled=True, file=stream, mininterval=0) as bar:
        bar.update(4)
        bar.update(6)
    assert "10/10" in stream.getvalue()


def test_silenced_bars_only_inside_the_block_and_tqdm_restored_after():
    import tqdm
    original = vars(tqdm.tqdm)["__init__"]
    inside, explicit, after = _Tty(), _Tty(), _Tty()
    with P.silenced_bars():
        list(tqdm.tqdm(range(3), file=inside, mininterval=0))  # how a third-party loop draws its bar
        list(tqdm.trange(3, file=inside, mininterval=0))
        with P.silenced_bars():  # nested: still off, and the outer block's state is put back
            list(tqdm.tqdm(range(3), file=inside, mininterval=0))
        list(tqdm.tqdm(range(3), file=inside, mininterval=0))
        list(tqdm.tqdm(range(3), file=explicit, mininterval=0, disable=False))  # an explicit disable= decides
    assert inside.getvalue() == "" and "3/3" in explicit.getvalue()
    assert vars(tqdm.tqdm)["__init__"] is original
    with pytest.raises(RuntimeError, match="failing"):
        with P.silenced_bars():
            raise RuntimeError("a failing evaluator")
    assert vars(tqdm.tqdm)["__init__"] is original
    list(tqdm.tqdm(range(3), file=after, mininterval=0))
    assert "3/3" in after.getvalue()


def test_logger_is_silent_until_the_application_shows_it():
    log = P.get_logger("valuation")
    assert log.name == "chg.valuation" and P.get_logger().name == "chg"
    assert not logging.getLogger("chg").handlers  # the library adds no handler
    stream = io.StringIO()
    with P.log_to_stderr(0, stream=stream):
        log.info("valued 3 rows")
        log.debug("hidden at verbosity 0")
    log.warning("after the block: not shown on the stream")
    assert stream.getvalue() == "valued 3 rows\n"
    assert not logging.getLogger("chg").handlers and logging.getLogger("chg").level == logging.NOTSET


def test_train_draws_an_epoch_bar_only_when_asked(capsys):
    from chg.experiments.train import TrainConfig, train
    cfg = TrainConfig(dataset="breast_cancer", model="mlp", width=8, method="random", fraction=0.5, epochs=2,
                      select_every=1, batch_size=64, augment_pad=0, augment_flip=False, device="cpu")
    train(cfg, progress=True)
    err = capsys.readouterr().err
    assert "train random a=0.5" in err and "epoch" in err  # the bar (tqdm redraws at most every 0.1 s)
    train(cfg, progress=False)
    assert capsys.readouterr().err == ""


def test_value_data_draws_an_epoch_bar_only_when_asked(capsys):
    import torch

    import chg
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, 3, generator=g), torch.arange(40) % 2
    chg.value_data(torch.nn.Linear(3, 2), (X, y), epochs=2, progress=True)
    assert "value_data (pass)" in capsys.readouterr().err
    chg.value_data(torch.nn.Linear(3, 2), (X, y), epochs=2, progress=False)
    assert capsys.readouterr().err == ""


def test_value_epoch_draws_a_batch_bar_only_when_asked_and_values_do_not_change(capsys):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import chg
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, 3, generator=g), torch.arange(40) % 2
    model, loader = torch.nn.Linear(3, 2), DataLoader(TensorDataset(X, y), batch_size=8)
    with_bar = chg.EpochValuer(40).value_epoch(model, loader, progress=True)
    err = capsys.readouterr().err
    assert "separate_pass" in err and "/5 " in err  # a bar over the 5 batches
    without = chg.EpochValuer(40).value_epoch(model, loader, progress=False)
    assert capsys.readouterr().err == "" and torch.equal(with_bar, without)
