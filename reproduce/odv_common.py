"""Shared by table1.py, figure1.py, figure2.py: OpenDataVal runs of CHG Shapley and the paper's baselines.

One run = (data set, noise kind, method, seed): opendataval builds the split and the noise from the seed, the
evaluator is trained through ``ExperimentMediator.compute_data_values`` (as the benchmark does), and the run's JSON
(``reproduce/results/table1/<run_id>.json``) holds the data values, the noisy indices, the detection metrics, the
point-removal curves (label-noise runs only), the wall time and the number of model fits. Table 1 and Figures 1–2
are rendered from these files only; a run already on disk is skipped (resume).

Presets (all settings in one place): ``QUICK`` (scikit-learn's digits and breast_cancer, standardized; cheap
sampler settings for the costly evaluators; minutes on 2 CPU cores) and ``PAPER`` (opendataval's
``cifar10-embeddings``: ResNet-50 embeddings of CIFAR-10, logistic regression; the opendataval defaults for every
evaluator; needs the embeddings on disk or network + GPU to make them). The paper does not state its split or
training settings; the PAPER preset's (train/valid/test 1000/100/1000, 5 epochs) are our choice.
"""
from __future__ import annotations


import argparse
import json
import functools
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import tqdm

# opendataval's evaluators print a progress bar per loop; silence them (tqdm also reads TQDM_DISABLE itself).
tqdm.tqdm.__init__ = functools.partialmethod(tqdm.tqdm.__init__, disable=True)

from chg.results import DATA_DIR, default_scale, load_runs, run_path, save_run

EXPERIMENT = "table1"
NOISES = ("label", "feature")
# Row order of Table 1 (the paper's), with CHG's ride-along variant as an extra row.
METHODS = ("loo", "datashapley", "knnshapley", "betashapley", "databanzhaf", "ame", "influence", "lava", "dvrl",
           "dataoob", "dataoob_default", "random", "chg", "chg_ride")
LABELS = {"loo": "LOO", "datashapley": "Data Shapley (TMC)", "knnshapley": "KNN Shapley",
          "betashapley": "Beta Shapley", "databanzhaf": "Data Banzhaf", "ame": "AME",
          "influence": "Influence Function", "lava": "LAVA", "dvrl": "DVRL", "dataoob": "Data-OOB",
          "dataoob_default": "Data-OOB (1000 models)", "random": "Random", "chg": "CHG Shapley (Alg. 1)",
          "chg_ride": "CHG Shapley (ride-along)"}
# Methods run on some noise kinds only (Data-OOB at its 1000-model default: the noisy-label comparison).
METHOD_NOISES = {"dataoob_default": ("label",)}
# The paper's Table 1 symbols: noisy label, noisy feature, point removal, point addition.
PAPER_SYMBOLS = {"loo": "- - + +", "datashapley": "+ + ++ ++", "knnshapley": "+ + ++ ++",
                 "betashapley": "+ + ++ ++", "databanzhaf": "- - + +", "ame": "- - ++ +", "influence": "- - + +",
                 "lava": "- ++ + +", "dvrl": "+ - + ++", "dataoob": "++ + - ++", "dataoob_default": "++ + - ++",
                 "random": "(baseline)", "chg": "++ + ++ NA", "chg_ride": "(not in paper)"}


@dataclass
class Config:
    """Every setting of the Table 1 / Figure 1–2 runs."""
    scale: str
    datasets: tuple
    seeds: tuple = (0, 1, 2)
    train_count: int = 150
    valid_count: int = 100
    test_count: int = 300
    noise_rate: float = 0.2          # fraction of training points corrupted (opendataval's default)
    feature_noise_sigma: float = 1.0  # add_gauss_noise: N(0, sigma²) added to the features of noisy points
    model: str = "LogisticRegression"  # opendataval's torch logistic regression (sigmoid in forward)
    train_kwargs: dict = field(default_factory=lambda: {"epochs": 5, "batch_size": 64, "lr": 0.01})
    removal_percentile: float = 0.10  # remove_high_low step
    removal_max_fraction: float = 0.5  # point removal/addition scores average the curve over [0, this]
    # costly evaluators (None = opendataval's default)
    tmc_mc_epochs: int | None = 3     # Data Shapley / Beta Shapley: TMCSampler permutations
    banzhaf_models: int | None = 100
    ame_models: int | None = 50 
    oob_models: int | None = 100
    dvrl_rl_epochs: int | None = 50
    knn_k: int = 10
    methods: tuple = METHODS
    noises: tuple = NOISES


QUICK = Config(scale="quick", datasets=("digits_standardized", "breast_cancer_standardized"))
PAPER = Config(scale="paper", datasets=("cifar10-embeddings",), train_count=1000, valid_count=100, test_count=1000,
               train_kwargs={"epochs": 5, "batch_size": 128, "lr": 0.01}, tmc_mc_epochs=None, banzhaf_models=None,
               ame_models=None, oob_models=None, dvrl_rl_epochs=None)
PRESETS = {"quick": QUICK, "paper": PAPER}


# ---- data ------------------------------------------------------------------------------------------------------
def register_datasets() -> None:
    """Standardized copies of scikit-learn's digits and breast_cancer (raw digits make opendataval's LR unstable).

    The standardization is fit on the whole data set before opendataval splits it (train/valid/test alike).
    """
    from opendataval.dataloader import Register
    from sklearn import datasets as skd
    from sklearn.preprocessing import StandardScaler

    def standardize(x):
        return StandardScaler().fit_transform(x)

    for name, loader in (("digits_standardized", skd.load_digits),
                         ("breast_cancer_standardized", skd.load_breast_cancer)):
        if name not in Register.Datasets:
            Register(name, one_hot=True).add_covar_transform(standardize)(lambda f=loader: f(return_X_y=True))


def opendataval_cache() -> Path:
    return DATA_DIR / "opendataval"


def check_paper_data(download: bool) -> None:
    """Paper scale needs opendataval's CIFAR-10 ResNet-50 embeddings; never fall back silently."""
    embed = opendataval_cache() / "CIFAR10_embed"
    if embed.exists() or download:
        return
    raise SystemExit(
        f"Paper scale needs opendataval's 'cifar10-embeddings' data set, not found under {embed}.\n"
        f"It is made once by downloading CIFAR-10 (~170 MB) and ResNet-50 weights (torchvision) and embedding the\n"
        f"60k images (GPU recommended). On a machine with network access run:\n"
        f"    python reproduce/table1.py --scale paper --download\n"
        f"(or copy an existing {embed.name}/ and cifar-10-batches-py/ into {embed.parent}). Use --scale quick "
        f"for the offline data sets.")


_DOWNLOAD = {"allowed": False}  # set by --download (paper scale): let opendataval fetch missing data


def make_fetcher(cfg: Config, dataset: str, noise: str, seed: int):
    from opendataval.dataloader import DataFetcher, add_gauss_noise, mix_labels
    register_datasets()
    if noise == "label":
        add_noise, kw = mix_labels, {"noise_rate": cfg.noise_rate}
    elif noise == "feature":
        add_noise, kw = add_gauss_noise, {"noise_rate": cfg.noise_rate, "sigma": cfg.feature_noise_sigma}
    else:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    return DataFetcher.setup(dataset, cache_dir=str(opendataval_cache()), force_download=_DOWNLOAD["allowed"],
                             random_state=np.random.RandomState(seed),
                             train_count=cfg.train_count, valid_count=cfg.valid_count, test_count=cfg.test_count,
                             add_noise=add_noise, noise_kwargs=kw)


# ---- model that counts its fits ------------------------------------------------------------------------------
_FITS = {"n": 0}


def make_model(cfg: Config, fetcher, device):
    """opendataval's model, with ``fit`` counting calls (clones share the counter)."""
    from opendataval.model import ModelFactory
    base = ModelFactory(cfg.model, fetcher, device)
    cls = type(base)
    if not getattr(cls, "_chg_counting", False):
        original = cls.fit

        def fit(self, *args, **kwargs):
            _FITS["n"] += 1
            return original(self, *args, **kwargs)
        cls.fit, cls._chg_counting = fit, True
    return base


# ---- evaluators ----------------------------------------------------------------------------------------------
def make_evaluator(method: str, cfg: Config, seed: int, device):
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
    if method == "dataoob_default":  # opendataval's default number of bagged models, whatever the preset
        return dv.DataOob(num_models=1000, random_state=rs)
    if method == "random":
        return dv.RandomEvaluator(random_state=rs)
    if method == "chg":
        return chg_odv.CHGShapley(mode="pass", random_state=rs)
    if method == "chg_ride":
        return chg_odv.CHGShapley(mode="ride", random_state=rs)
    raise ValueError(f"unknown method {method!r}; methods are {METHODS}")


# ---- metrics -------------------------------------------------------------------------------------------------
def detection_metrics(values: np.ndarray, noisy: np.ndarray) -> dict:
    """AUC of 'low value = corrupted' and opendataval's 2-means F1 (noisy_detection)."""
    from opendataval.experiment.util import f1_score, oned_twonn_clustering
    from sklearn.metrics import roc_auc_score
    is_noisy = np.zeros(len(values), dtype=bool)
    is_noisy[noisy] = True
    unvaluable, _ = oned_twonn_clustering(values.flatten())
    return {"auc": float(roc_auc_score(is_noisy, -values)),
            "f1_kmeans": float(f1_score(unvaluable, noisy, len(values)))}


def discovery_curve(values: np.ndarray, noisy: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Fraction of corrupted points found among the lowest-valued fraction ``grid`` of the data (ties: stable)."""
    order = np.argsort(values, kind="stable")
    is_noisy = np.zeros(len(values), dtype=bool)
    is_noisy[noisy] = True
    found = np.concatenate([[0], np.cumsum(is_noisy[order])]) / is_noisy.sum()
    return found[np.round(grid * len(values)).astype(int)]


# ---- one run -------------------------------------------------------------------------------------------------
def run_id(dataset: str, noise: str, method: str, seed: int) -> str:
    return f"{dataset}__{noise}__{method}__s{seed}"


def run_one(cfg: Config, dataset: str, noise: str, method: str, seed: int, device="cpu") -> dict:
    from opendataval.experiment import ExperimentMediator
    from opendataval.experiment.exper_methods import remove_high_low
    from opendataval.metrics import Metrics
    torch.manual_seed(seed)
    device = torch.device(device)
    fetcher = make_fetcher(cfg, dataset, noise, seed)
    model = make_model(cfg, fetcher, device)
    evaluator = make_evaluator(method, cfg, seed, device)
    mediator = ExperimentMediator(fetcher, model, dict(cfg.train_kwargs), metric_name="accuracy", raises_error=True)
    fits0 = _FITS["n"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mediator.compute_data_values([evaluator])
    wall = mediator.timings[evaluator].total_seconds()
    fits = _FITS["n"] - fits0 + getattr(evaluator, "model_fits", 0)
    values = np.asarray(evaluator.data_values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{method} on {dataset}/{noise}/seed {seed} produced non-finite data values")
    noisy = np.asarray(fetcher.noisy_train_indices, dtype=np.int64)
    metrics = {"wall_time_s": wall, "model_fits": int(fits), **detection_metrics(values, noisy)}
    if noise == "label":
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            curves = remove_high_low(evaluator, fetcher, model=model, percentile=cfg.removal_percentile,
                                     metric=Metrics.ACCURACY, train_kwargs=dict(cfg.train_kwargs))
        def curve(prefix):  # opendataval names the key after get_name(metric), which varies by version
            (key,) = [k for k in curves if k.startswith(prefix)]
            return [float(a) for a in curves[key]]
        high, low = curve("remove_most_influential_first"), curve("remove_least_influential_first")
        period = max(round(len(values) * cfg.removal_percentile), 5)  # remove_high_low's step, in points
        metrics["removal"] = {"fraction_removed": [i * period / len(values) for i in range(len(high))],
                              "high_first": high, "low_first": low}
    return {"metrics": metrics, "values": values.tolist(), "noisy_indices": noisy.tolist(),
            "n_train": int(len(values)), "wall": wall}


def compute(cfg: Config, device="cpu", log=print) -> None:
    """Every (data set, noise, method, seed) run not yet on disk, one JSON each."""
    todo = [(d, z, m, s) for d in cfg.datasets for z in cfg.noises for s in cfg.seeds for m in cfg.methods
            if z in METHOD_NOISES.get(m, NOISES)]
    for i, (d, z, m, s) in enumerate(todo):
        rid = run_id(d, z, m, s)
        config = {**settings(cfg), "dataset": d, "noise": z, "method": m}
        if _done(rid, config):
            continue
        t0 = time.perf_counter()
        out = run_one(cfg, d, z, m, s, device)
        save_run(EXPERIMENT, rid, config=config, seed=s,
                 scale=cfg.scale, metrics=out["metrics"], wall_time_s=out["wall"], device=device,
                 extra={"values": out["values"], "noisy_indices": out["noisy_indices"], "n_train": out["n_train"]})
        log(f"[{i + 1}/{len(todo)}] {rid}: auc={out['metrics']['auc']:.3f} f1={out['metrics']['f1_kmeans']:.3f} "
            f"time={out['wall']:.2f}s fits={out['metrics']['model_fits']} (run {time.perf_counter() - t0:.1f}s)")


def settings(cfg: Config) -> dict:
    """The preset's settings that change a run's result (not which runs are selected), JSON-normalised."""
    keep = {k: v for k, v in asdict(cfg).items() if k not in ("seeds", "datasets", "methods", "noises")}
    return json.loads(json.dumps(keep, default=str))


def _done(rid: str, config: dict) -> bool:
    """A run is done if its JSON exists with the same settings (a changed preset reruns it)."""
    path = run_path(EXPERIMENT, rid)
    if not path.exists():
        return False
    stored = json.loads(path.read_text())["config"]
    return stored == json.loads(json.dumps(config, default=str))


def runs_for(cfg: Config) -> list:
    """The JSON records of this preset's scale, data sets, seeds and methods, made with its current settings."""
    keep, want = [], settings(cfg)
    for r in load_runs(EXPERIMENT):
        c = r["config"]
        same = all(c.get(k) == v for k, v in want.items())
        if (same and r["scale"] == cfg.scale and c["dataset"] in cfg.datasets and r["seed"] in cfg.seeds
                and c["method"] in cfg.methods and c["noise"] in cfg.noises):
            keep.append(r)
    return keep


# ---- command line shared by the three scripts ----------------------------------------------------------------
def parse_args(description: str, argv=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--scale", choices=sorted(PRESETS), default=default_scale())
    p.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    p.add_argument("--datasets", nargs="+", help="override the preset's data sets")
    p.add_argument("--methods", nargs="+", choices=METHODS, help="override the preset's methods")
    p.add_argument("--render-only", action="store_true", help="only render from the JSONs on disk")
    p.add_argument("--download", action="store_true", help="paper scale: allow opendataval to download CIFAR-10")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    cfg = PRESETS[args.scale]
    over = {k: tuple(v) for k, v in (("seeds", args.seeds), ("datasets", args.datasets),
                                      ("methods", args.methods)) if v}
    cfg = replace(cfg, **over)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, cfg


def ensure_runs(args, cfg: Config) -> None:
    if args.render_only:
        return
    if cfg.scale == "paper":
        check_paper_data(args.download)
        _DOWNLOAD["allowed"] = bool(args.download)
    compute(cfg, device=args.device)
