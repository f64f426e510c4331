"""One Table 1 run: opendataval's model (its fits counted), the evaluator of a method, the run and its record's metrics.

Nothing here changes a module, a class or tqdm for the whole process: the fits are counted by a :class:`FitCounter`
the run passes to its model (shared with the model's clones), opendataval's progress bars are off only around its
calls (:func:`chg.progress.silenced_bars`), and the download permission is an argument.
"""
from __future__ import annotations

import time
import types
import warnings

import numpy as np
import torch

from chg.detection import detection_metrics, noisy_mask
from chg.progress import silenced_bars

from .odv_data import make_fetcher
from .odv_presets import METHODS, OdvPreset

__all__ = ["FitCounter", "make_model", "make_evaluator", "train_kwargs", "run_one"]


class FitCounter:
    """The number of ``fit`` calls of one model and of every clone of it (``n``).

    opendataval's evaluators train clones (``Model.clone`` is ``copy.deepcopy``); a deep copy of the model copies
    the counter by reference (:meth:`__deepcopy__` returns the counter itself), so every clone adds to the one count.
    """

    def __init__(self):
        self.n = 0

    def __deepcopy__(self, memo):
        return self


def make_model(cfg: OdvPreset, fetcher, device, counter: FitCounter):
    """opendataval's model ``cfg.model`` for ``fetcher``'s data, whose ``fit`` (and each clone's) adds one to
    ``counter``. Only this instance's ``fit`` is wrapped (an attribute of the instance, bound again to each deep
    copy); the model class is left as it is."""
    from opendataval.model import ModelFactory
    model = ModelFactory(cfg.model, fetcher, device)
    fit = type(model).fit

    def counted_fit(self, *args, **kwargs):
        self.fit_counter.n += 1
        return fit(self, *args, **kwargs)
    model.fit_counter = counter
    model.fit = types.MethodType(counted_fit, model)
    return model


def make_evaluator(method: str, cfg: OdvPreset, seed: int, device):
    """The evaluator of ``method`` (a key of kit.odv_presets.LABELS) with the preset's sampler settings (None = the
    opendataval default), seeded with ``seed``; raises ValueError for an unknown method."""
    from opendataval import dataval as dv

    import chg.opendataval as chg_odv
    rs = np.random.RandomState(seed)

    def opt(value, **kw):  # None = opendataval's default
        return {k: v for k, v in kw.items() if v is not None} if value is None else kw

    if method == "loo":
        return dv.LeaveOneOut(random_state=rs)
    if method in ("datashapley", "betashapley"):
        sampler = (dv.TMCSampler(mc_epochs=cfg.tmc_mc_epochs, cache_name=f"{method}-{seed}-{time.time_ns()}",
                                 random_state=rs) if cfg.tmc_mc_epochs is not None else
                   dv.GrTMCSampler(cache_name=f"{method}-{seed}-{time.time_ns()}", random_state=rs))
        return (dv.DataShapley if method == "datashapley" else dv.BetaShapley)(sampler=sampler)
    if method == "knnshapley":
        return dv.KNNShapley(k_neighbors=cfg.knn_k, random_state=rs)
    if method == "databanzhaf":
        return dv.DataBanzhaf(**opt(cfg.banzhaf_models, num_models=cfg.banzhaf_models), random_state=rs)
    if method == "ame":
        return dv.AME(**opt(cfg.ame_models, num_models=cfg.ame_models), random_state=rs)
    if method == "influence":
        return dv.InfluenceFunction()
    if method == "lava":
        return dv.LavaEvaluator(device=device, random_state=rs)
    if method == "dvrl":
        return dv.DVRL(**opt(cfg.dvrl_rl_epochs, rl_epochs=cfg.dvrl_rl_epochs), device=device, random_state=rs)
    if method == "dataoob":
        return dv.DataOob(**opt(cfg.oob_models, num_models=cfg.oob_models), random_state=rs)
    if method == "dataoob_default":
        return dv.DataOob(num_models=cfg.oob_default_models, random_state=rs)
    if method == "random":
        return dv.RandomEvaluator(random_state=rs)
    if method == "chg":
        return chg_odv.CHGShapley(mode="pass", random_state=rs)
    if method == "chg_ride":
        return chg_odv.CHGShapley(mode="ride", random_state=rs)
    raise ValueError(f"unknown method {method!r}; methods are {METHODS}")


def train_kwargs(cfg: OdvPreset) -> dict:
    """The model's training arguments (opendataval's ``train_kwargs``)."""
    return {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr}


def run_one(cfg: OdvPreset, dataset: str, noise: str, method: str, seed: int, device="cpu", *,
            download: bool = False) -> dict:
    """One run: the data values of ``method`` on ``dataset`` with ``noise`` and ``seed`` (trained through
    ``ExperimentMediator.compute_data_values``, as opendataval's benchmark does), their detection metrics
    (:func:`chg.detection.detection_metrics`, values: higher = more valuable) and, for label noise, the point-removal
    curves. ``download``: let opendataval fetch a missing data set.

    Returns ``{"metrics", "values", "noisy_indices", "n_train", "wall"}``; ``metrics`` holds the wall seconds of the
    valuation, the model fits it made (the counted ``fit`` calls plus an evaluator's own ``model_fits``), every
    detection metric and ``removal``. Raises ValueError on non-finite data values."""
    from opendataval.experiment import ExperimentMediator
    from opendataval.experiment.exper_methods import remove_high_low
    from opendataval.metrics import Metrics
    torch.manual_seed(seed)
    device = torch.device(device)
    fetcher = make_fetcher(cfg, dataset, noise, seed, download=download)
    fits = FitCounter()
    model = make_model(cfg, fetcher, device, fits)
    evaluator = make_evaluator(method, cfg, seed, device)
    mediator = ExperimentMediator(fetcher, model, train_kwargs(cfg), metric_name="accuracy", raises_error=True)
    fits0 = fits.n
    with warnings.catch_warnings(), silenced_bars():
        warnings.simplefilter("ignore")
        mediator.compute_data_values([evaluator])
    wall = mediator.timings[evaluator].total_seconds()
    model_fits = fits.n - fits0 + getattr(evaluator, "model_fits", 0)
    values = np.asarray(evaluator.data_values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{method} on {dataset}/{noise}/seed {seed} produced non-finite data values")
    noisy = np.asarray(fetcher.noisy_train_indices, dtype=np.int64)
    metrics = {"wall_time_s": wall, "model_fits": int(model_fits),
               **detection_metrics(values, noisy_mask(noisy, len(values)), higher_is="valuable", opendataval=True)}
    if noise == "label":
        torch.manual_seed(seed)
        with warnings.catch_warnings(), silenced_bars():
            warnings.simplefilter("ignore")
            curves = remove_high_low(evaluator, fetcher, model=model, percentile=cfg.removal_percentile,
                                     metric=Metrics.ACCURACY, train_kwargs=train_kwargs(cfg))

        def curve(prefix):  # opendataval names the key after get_name(metric), which varies by version
            (key,) = [k for k in curves if k.startswith(prefix)]
            return [float(a) for a in curves[key]]
        high, low = curve("remove_most_influential_first"), curve("remove_least_influential_first")
        period = max(round(len(values) * cfg.removal_percentile), 5)  # remove_high_low's step, in points
        metrics["removal"] = {"fraction_removed": [i * period / len(values) for i in range(len(high))],
                              "high_first": high, "low_first": low}
    return {"metrics": metrics, "values": values.tolist(), "noisy_indices": noisy.tolist(),
            "n_train": int(len(values)), "wall": wall}
