"""Table 1 and Figures 1–2: OpenDataVal runs of CHG Shapley and the paper's baselines, and their presets.

One run = (data set, noise kind, method, seed): opendataval builds the split and the noise from the seed, the
evaluator is trained through ``ExperimentMediator.compute_data_values`` (as the benchmark does), and the run's record
(``reproduce/results/<scale>/table1/<run_id>.json``) holds the data values, the noisy indices, the detection metrics,
the point-removal curves (label-noise runs only), the wall time and the number of model fits. Table 1 and Figures 1–2
are rendered from these records only; the grid (:func:`runs`) goes through :func:`kit.grid.run_grid` (resume,
``--shard``, the already-done rule), whichever of the three scripts runs it.

Presets (:data:`PRESETS`): ``smoke`` (breast cancer, 40 training points, one seed, the cheapest sampler settings —
seconds per run), ``quick`` (scikit-learn's digits and breast_cancer, standardized; cheap sampler settings for the
costly evaluators; minutes on 2 CPU cores), ``medium`` (the authors' official notebook's protocol on Fashion-MNIST
embeddings, see below) and ``paper`` (opendataval's ``cifar10-embeddings``: ResNet-50 embeddings
of CIFAR-10, logistic regression; the opendataval defaults for every evaluator; needs the embeddings on disk or
network + GPU to make them). The paper does not state its split or training settings; the paper preset's
(train/valid/test 1000/100/1000, 5 epochs) are our choice.

``medium``: the protocol of the authors' official notebook (1,000 train / 100 valid / 300 test, 10% label noise,
logistic regression, 10 epochs; batch 128 and lr 0.01 are our choice), five seeds, label noise only (the notebook's
task), on :data:`EMBED_DATASET`: the penultimate features of a small network (chg.experiments.models.ImageMLP) trained
on
Fashion-MNIST's 60,000 training images, computed for its 10,000 test images, from which every split is drawn — the
paper's "pretrained embeddings + logistic regression" setting on data that is offline (:func:`make_embeddings`; made
once under ``data/embeddings/``, about 20 s). Cost of one run (seed 0, CPU seconds of one thread on a loaded 2-core
machine, point-removal curves included): Random 3, KNN Shapley 4, CHG 5 (ride-along 4.5), LAVA 6, DVRL (50 RL
epochs) 7, Influence Function 14, Data Banzhaf (100 models) 21, AME (50 models, 200 fits) 38, Data-OOB (100 models)
42 — about 143 CPU s per seed, 716 CPU s for the five seeds, i.e. ≈ 6 minutes on 2 idle cores as two shards
(an estimate from the CPU seconds; on the loaded machine where the committed records were made it took far longer). LOO
(1,001 fits, ≈ 395 CPU s per run), Data Shapley, Beta Shapley and Data-OOB at 1,000 models are left out
(:data:`OMITTED` gives each reason, printed in the caption).
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tqdm

# opendataval's evaluators print a progress bar per loop; silence them (tqdm also reads TQDM_DISABLE itself).
tqdm.tqdm.__init__ = functools.partialmethod(tqdm.tqdm.__init__, disable=True)

import chg.experiments.results as results  # noqa: E402

from . import cli, config, grid, tables  # noqa: E402

EXPERIMENT = "table1"
PAPER_NUMBERS = tables.PAPER_NUMBERS
EMBED_DATASET = "fashion_mnist_embeddings"  # the medium scale's data set (see make_embeddings)
NOISES = ("label", "feature")
# Row order of Table 1 (the paper's), with CHG's ride-along variant as an extra row.
METHODS = ("loo", "datashapley", "knnshapley", "betashapley", "databanzhaf", "ame", "influence", "lava", "dvrl",
           "dataoob", "dataoob_default", "random", "chg", "chg_ride")
LABELS = {"loo": "LOO", "datashapley": "Data Shapley (TMC)", "knnshapley": "KNN Shapley",
          "betashapley": "Beta Shapley", "databanzhaf": "Data Banzhaf", "ame": "AME",
          "influence": "Influence Function", "lava": "LAVA", "dvrl": "DVRL", "dataoob": "Data-OOB",
          "dataoob_default": "Data-OOB (default models)", "random": "Random", "chg": "CHG Shapley (Alg. 1)",
          "chg_ride": "CHG Shapley (ride-along)"}
# Methods run on some noise kinds only (Data-OOB at its default model count: the noisy-label comparison).
METHOD_NOISES = {"dataoob_default": ("label",)}
# The paper's Table 1 symbols: noisy label, noisy feature, point removal, point addition.
PAPER_SYMBOLS = {"loo": "- - + +", "datashapley": "+ + ++ ++", "knnshapley": "+ + ++ ++",
                 "betashapley": "+ + ++ ++", "databanzhaf": "- - + +", "ame": "- - ++ +", "influence": "- - + +",
                 "lava": "- ++ + +", "dvrl": "+ - + ++", "dataoob": "++ + - ++", "dataoob_default": "++ + - ++",
                 "random": "(baseline)", "chg": "++ + ++ NA", "chg_ride": "(not in paper)"}


@dataclass(frozen=True)
class OdvPreset:
    """Every setting of the Table 1 / Figure 1–2 runs (None for a sampler setting = opendataval's default); one
    instance per scale in :data:`PRESETS` (the module docstring says what each scale is and costs)."""
    datasets: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    noises: tuple[str, ...] = NOISES
    train_count: int = 150
    valid_count: int = 100
    test_count: int = 300
    noise_rate: float = 0.2           # fraction of training points corrupted (opendataval's default)
    feature_noise_sigma: float = 1.0  # add_gauss_noise: N(0, sigma²) added to the features of noisy points
    model: str = "LogisticRegression"  # opendataval's torch logistic regression (sigmoid in forward)
    epochs: int = 5                   # the model's training (Adam)
    batch_size: int = 64
    lr: float = 0.01
    removal_percentile: float = 0.10  # remove_high_low step
    removal_max_fraction: float = 0.5  # point removal/addition scores average the curve over [0, this]
    tmc_mc_epochs: int | None = 3     # Data Shapley / Beta Shapley: TMCSampler permutations (None: GrTMC)
    banzhaf_models: int | None = 100
    ame_models: int | None = 50
    oob_models: int | None = 100
    oob_default_models: int = 1000    # the 'dataoob_default' row: opendataval's default number of bagged models
    dvrl_rl_epochs: int | None = 50
    knn_k: int = 10


# The medium preset's methods: those of the quick preset whose five seeds fit the medium budget (see OMITTED).
MEDIUM_METHODS = tuple(m for m in METHODS if m not in ("loo", "datashapley", "betashapley", "dataoob_default"))
# Why a method of the quick preset is left out of a smaller-than-paper preset (printed in the Table 1 caption).
# Costs measured for one medium run (seed 0, label noise, 1,000 training points) in CPU seconds of one thread, on a
# loaded 2-core machine: a full fit of the logistic regression (10 epochs, batch 128) ≈ 0.39 s.
OMITTED = {
    "loo": "1,001 fits per run ≈ 395 CPU s, 33 min of one core for five seeds, 2.8× the rest of the table together "
           "(≈ 716 CPU s), which would put the table at the edge of its 25-minute budget; add it with --set "
           "methods=loo,knnshapley,... (its records are separate runs)",
    "datashapley": "TMC needs many permutations of the 1,000 points: one permutation took 463 fits (47 CPU s per "
                   "run) and gave a noisy-label AUC of 0.49 (chance); opendataval's default (GrTMC, permutations "
                   "until Gelman-Rubin convergence) is far beyond the 25-minute budget",
    "betashapley": "the same TMC sampler as Data Shapley (one permutation: 463 fits, 47 CPU s, values at chance)",
    "dataoob_default": "1,000 bagged models ≈ 390 CPU s per run, 33 min for five seeds alone; Data-OOB with 100 "
                       "models is run (its AUC/F1 moved by < 0.01 between 100 and 1,000 models at quick scale)",
}

# How the committed records of a scale were timed, where that differs from an idle machine (printed in captions).
TIMING_NOTES = {
    "medium": "the committed medium records were made on a 2-core machine shared with other grids (load average "
              "≈ 11, these runs at nice 10 with a few per cent of a core): their wall times are inflated several-fold "
              "and unevenly, so time ratios between methods are rough; the per-run CPU seconds in kit/odv.py's "
              "docstring were measured one after another in one process",
}

PRESETS = {
    "smoke": OdvPreset(datasets=("breast_cancer_standardized",), seeds=(0,), train_count=40, valid_count=30,
                       test_count=60, tmc_mc_epochs=1, banzhaf_models=8, ame_models=8, oob_models=8,
                       oob_default_models=16, dvrl_rl_epochs=3, removal_percentile=0.25),
    "quick": OdvPreset(datasets=("digits_standardized", "breast_cancer_standardized")),
    "medium": OdvPreset(datasets=(EMBED_DATASET,), seeds=(0, 1, 2, 3, 4), methods=MEDIUM_METHODS, noises=("label",),
                        train_count=1000, valid_count=100, test_count=300, noise_rate=0.1, epochs=10,
                        batch_size=128),
    "paper": OdvPreset(datasets=("cifar10-embeddings",), train_count=1000, valid_count=100, test_count=1000,
                       batch_size=128, tmc_mc_epochs=None, banzhaf_models=None, ame_models=None, oob_models=None,
                       dvrl_rl_epochs=None),
}
GRID_AXES = ("datasets", "seeds", "methods", "noises")  # choose which runs exist, not what a run computes


# ---- data ------------------------------------------------------------------------------------------------------
def register_datasets() -> None:
    """Standardized copies of scikit-learn's digits and breast_cancer (raw digits make opendataval's LR unstable),
    and :data:`EMBED_DATASET` (the medium scale's Fashion-MNIST embeddings, :func:`load_embeddings`).

    The sklearn sets' standardization is fit on the whole data set before opendataval splits it (train/valid/test
    alike); the embeddings' on the embedder's training images, none of which is in the registered set.
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
    if EMBED_DATASET not in Register.Datasets:  # loaded (made on first use) only when a fetcher asks for it
        Register(EMBED_DATASET, one_hot=True)(lambda: (lambda e: (e["x"], e["y"]))(load_embeddings()))


# ---- Fashion-MNIST embeddings (medium scale) ------------------------------------------------------------------
N_FASHION_TRAIN = 60_000  # Fashion-MNIST's training images; its test images follow them in the global row index
# The embedder: chg.experiments.models.ImageMLP (784 → 128 → 128 ReLU, then the class layer), trained with Adam on
# cross-entropy
# on all 60,000 Fashion-MNIST *training* images (clean labels); its penultimate features (128 ReLU units) of the
# 10,000 *test* images, standardized with the mean/std of the training images' features (units dead on the training
# images dropped), are the registered data
# set. Table 1's 1,000/100/300 points are drawn from those 10,000, so the embedder never saw any of them.
EMBEDDER = {"model": "image_mlp", "hidden": 128, "epochs": 5, "batch_size": 128, "lr": 1e-3, "seed": 0}


def embedding_path(spec: dict | None = None) -> Path:
    """The cache file of the embeddings made with ``spec`` (default :data:`EMBEDDER`; its hash in the name: a new
    spec makes a new file), under ``chg.experiments.results.DATA_DIR``/embeddings (git-ignored)."""
    spec = spec or EMBEDDER
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    return results.DATA_DIR / "embeddings" / f"{EMBED_DATASET}_{digest}.npz"


def make_embeddings(spec: dict | None = None, path: Path | None = None) -> dict:
    """Train the embedder of ``spec`` on Fashion-MNIST's 60,000 training images and embed its 10,000 test images.

    Deterministic for a given ``spec`` and torch thread count (seeded with ``spec["seed"]``). Reads the images with
    :func:`chg.experiments.data.load_dataset` (``val_fraction=0``: the whole training file, labels clean). Written
    atomically to
    ``path`` (default :func:`embedding_path`) as ``.npz``; about 20 s for 5 epochs on one CPU thread.

    Returns:
        dict with ``x`` (10000, d) float32 standardized features of the test images (the d ≤ hidden units not
        dead on the training images, listed in ``units``), ``y`` (10000,) int64 their
        labels, ``rows`` (10000,) int64 their global row (60,000 + test index), ``embedder_rows`` (60000,) int64 the
        global rows the embedder was trained on (0..59,999), ``state`` the embedder's weights (name → array),
        ``mu`` / ``sd`` (d,) the standardization, ``test_accuracy`` the embedder's accuracy on the 10,000 test
        images, ``seconds`` the time it took.

    Raises:
        FileNotFoundError: Fashion-MNIST is not on this machine (the message says how to get it).
    """
    from chg.experiments.data import load_dataset
    from chg.experiments.models import ImageMLP
    spec = spec or EMBEDDER
    t0 = time.perf_counter()
    data = load_dataset("fashion_mnist", seed=0, val_fraction=0.0)
    x_tr, y_tr, x_te, y_te = data.train.x, data.train.y, data.test.x, data.test.y
    if len(y_tr) != N_FASHION_TRAIN:
        raise ValueError(f"expected {N_FASHION_TRAIN} Fashion-MNIST training images, got {len(y_tr)}")
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    model = ImageMLP(tuple(x_tr.shape[1:]), 10, spec["hidden"])
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    for _ in range(spec["epochs"]):
        for idx in torch.randperm(len(y_tr), generator=gen).split(spec["batch_size"]):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        f_tr = torch.cat([model.features(x.flatten(1)) for x in x_tr.split(4096)])
        f_te = model.features(x_te.flatten(1))
        acc = float((model.linear(f_te).argmax(1) == y_te).float().mean())
    mu, sd = f_tr.mean(0), f_tr.std(0)
    units = (sd > 1e-3 * sd.median()).nonzero().squeeze(1)  # drop ReLU units (nearly) dead on the training images
    mu, sd = mu[units], sd[units]
    out = {"x": ((f_te[:, units] - mu) / sd).numpy().astype(np.float32), "y": y_te.numpy().astype(np.int64),
           "units": units.numpy().astype(np.int64),
           "rows": N_FASHION_TRAIN + np.arange(len(y_te), dtype=np.int64),
           "embedder_rows": np.arange(N_FASHION_TRAIN, dtype=np.int64),
           "state": {k: v.numpy() for k, v in model.state_dict().items()}, "mu": mu.numpy(), "sd": sd.numpy(),
           "test_accuracy": acc, "seconds": time.perf_counter() - t0}
    flat = {k: v for k, v in out.items() if k != "state"}
    flat.update({f"state.{k}": v for k, v in out["state"].items()})
    def save(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **flat)
    results.atomic_write(Path(path or embedding_path(spec)), save)
    return out


def load_embeddings(spec: dict | None = None, path: Path | None = None) -> dict:
    """The embeddings of :func:`make_embeddings`, from the cache (made on first use); same keys."""
    spec = spec or EMBEDDER
    path = Path(path or embedding_path(spec))
    if not path.is_file():
        print(f"making the Fashion-MNIST embeddings ({spec}) → {path} (once; about 20 s on one CPU thread)")
        return make_embeddings(spec, path)
    with np.load(path) as z:
        out = {k: z[k] for k in z.files if not k.startswith("state.")}
        out["state"] = {k[len("state."):]: z[k] for k in z.files if k.startswith("state.")}
    out["test_accuracy"], out["seconds"] = float(out["test_accuracy"]), float(out["seconds"])
    return out


def opendataval_cache() -> Path:
    return results.DATA_DIR / "opendataval"


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


def make_fetcher(cfg: OdvPreset, dataset: str, noise: str, seed: int):
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


def make_model(cfg: OdvPreset, fetcher, device):
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
def make_evaluator(method: str, cfg: OdvPreset, seed: int, device):
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
def train_kwargs(cfg: OdvPreset) -> dict:
    """The model's training arguments (opendataval's ``train_kwargs``)."""
    return {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr}


def run_one(cfg: OdvPreset, dataset: str, noise: str, method: str, seed: int, device="cpu") -> dict:
    from opendataval.experiment import ExperimentMediator
    from opendataval.experiment.exper_methods import remove_high_low
    from opendataval.metrics import Metrics
    torch.manual_seed(seed)
    device = torch.device(device)
    fetcher = make_fetcher(cfg, dataset, noise, seed)
    model = make_model(cfg, fetcher, device)
    evaluator = make_evaluator(method, cfg, seed, device)
    mediator = ExperimentMediator(fetcher, model, train_kwargs(cfg), metric_name="accuracy", raises_error=True)
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




# ---- the grid ----------------------------------------------------------------------------------------------------
def settings(cfg: OdvPreset) -> dict:
    """The preset's settings that change a run's result (not which runs exist), JSON-ready."""
    return config.settings(cfg, GRID_AXES)


def runs(cfg: OdvPreset) -> list:
    """Every (data set, noise, method, seed) run of the preset, in a fixed order. A run on :data:`EMBED_DATASET`
    also has the embedder's settings (:data:`EMBEDDER`) in its config, so that new embeddings mean new runs."""
    def extra(d):
        return {"embedder": dict(EMBEDDER)} if d == EMBED_DATASET else {}  # read at call time (tests patch it)
    return [grid.Run(f"{d}__{z}__{m}__s{s}", s, {**settings(cfg), "dataset": d, "noise": z, "method": m, **extra(d)},
                     (d, z, m))
            for d in cfg.datasets for z in cfg.noises for s in cfg.seeds for m in cfg.methods
            if z in METHOD_NOISES.get(m, NOISES)]


def embedding_facts() -> dict:
    """What a record on :data:`EMBED_DATASET` states about its embeddings (from the cache, made if missing)."""
    e = load_embeddings()
    return {"embedder_test_accuracy": e["test_accuracy"], "dims": int(e["x"].shape[1]), "points": int(len(e["y"])),
            "embedder_train_points": int(len(e["embedder_rows"])), "file": embedding_path().name}


def executor(cfg: OdvPreset, device):
    def execute(run: grid.Run) -> grid.Outcome:
        d, z, m = run.task
        out = run_one(cfg, d, z, m, run.seed, device)
        facts = {"embedding": embedding_facts()} if d == EMBED_DATASET else {}
        return grid.Outcome(out["metrics"], out["wall"], device,
                            extra={"values": out["values"], "noisy_indices": out["noisy_indices"],
                                   "n_train": out["n_train"], **facts})
    return execute


def records(cfg: OdvPreset, scale: str) -> list:
    """The records of this scale for the preset's runs, made with its current settings (rendering input)."""
    want = {r.run_id: grid.normalise(r.config) for r in runs(cfg)}
    return [r for r in results.load_runs(EXPERIMENT, scale) if want.get(r["run_id"]) == r["config"]]


# ---- command line shared by table1.py, figure1.py, figure2.py ----------------------------------------------------
def parse_args(description: str, argv=None):
    """kit.cli's options plus --download (paper scale) and --device; returns ``(args, preset)``."""
    p = cli.parser(description, PRESETS)
    p.add_argument("--download", action="store_true", help="paper scale: allow opendataval to download CIFAR-10")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return cli.parse(p, PRESETS, argv)


def ensure_runs(args, cfg: OdvPreset) -> None:
    """The compute step (unless --render-only): every run of this shard not yet on disk."""
    if args.render_only:
        return
    if args.scale == "paper":
        check_paper_data(args.download)
        _DOWNLOAD["allowed"] = bool(args.download)
    try:
        counts = grid.run_grid(EXPERIMENT, args.scale, cfg, runs(cfg), executor(cfg, args.device), shard=args.shard,
                               replace=args.replace)
    except grid.ConfigMismatch as exc:
        raise SystemExit(f"table1: {exc}") from None
    print(f"table1 runs: ran {counts['ran']}, skipped {counts['skipped']} (already done) of {counts['total']}")


def main(doc: str, render, argv=None) -> None:
    """table1.py / figure1.py / figure2.py: parse, compute what is missing (unless --render-only), render."""
    args, cfg = parse_args(doc.splitlines()[0], argv)
    ensure_runs(args, cfg)
    if not args.no_render:
        render(cfg, args.scale)


def require_records(cfg: OdvPreset, scale: str, what: str) -> list:
    recs = records(cfg, scale)
    if not recs:
        raise SystemExit(f"no table1 runs of scale {scale} on disk for {what}; run without --render-only first")
    return recs


def data_text(recs: list) -> str:
    """What the records' data sets are, for captions: the embedder's settings and facts for :data:`EMBED_DATASET`
    (from the records), '' when no record is on it."""
    emb = [r for r in recs if r["config"]["dataset"] == EMBED_DATASET]
    if not emb:
        return ""
    spec, facts = emb[0]["config"]["embedder"], emb[0]["embedding"]
    return (f"{EMBED_DATASET} = the {facts['dims']} penultimate ReLU features (standardized; units dead on the "
            f"embedder's training images dropped) of chg.experiments.models.ImageMLP "
            f"(784→{spec['hidden']}→{spec['hidden']}→10, "
            f"Adam lr {spec['lr']}, {spec['epochs']} epochs, batch {spec['batch_size']}, seed {spec['seed']}) trained "
            f"on Fashion-MNIST's {facts['embedder_train_points']:,} training images (its test accuracy: "
            f"{facts['embedder_test_accuracy']:.1%}), computed for the {facts['points']:,} test images, from which "
            f"every train/valid/test split is drawn: the embedder saw none of the points valued, validated or tested")


def notebook_f1() -> dict:
    """The authors' notebook's published noisy-label F1 per method (``[table1 notebook f1]`` of
    reproduce/paper_numbers.txt): ``{method: f1}``, method keys as in :data:`LABELS` (``influence_subsample`` =
    opendataval's InfluenceSubsample, not run here).

    Raises:
        ValueError: a line that is not ``method value``.
    """
    out = {}
    for line in tables.paper_section("table1 notebook f1"):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{PAPER_NUMBERS}: [table1 notebook f1] lines are 'method value', got {line!r}")
        out[parts[0]] = float(parts[1])
    return out


def settings_line(recs: list, scale: str, corrupted: str) -> str:
    """A figure's provenance footer, every fact from the records."""
    def c(key):
        return grid.config_value(recs, key)
    datasets = sorted({r["config"]["dataset"] for r in recs})
    seeds = sorted({r["seed"] for r in recs})
    return (f"{scale} scale; data {', '.join(datasets)}; train/valid/test {c('train_count')}/{c('valid_count')}/"
            f"{c('test_count')}; {float(c('noise_rate')):.0%} {corrupted}; opendataval {c('model')} (Adam, "
            f"{c('epochs')} epochs, batch {c('batch_size')}, lr {c('lr')}); mean over seeds {seeds} ({len(recs)} "
            f"runs); sampler settings as in table1.md" + (
                f"; {EMBED_DATASET}: features of an ImageMLP trained on Fashion-MNIST's 60,000 training images, "
                f"computed for the 10,000 test images the splits are drawn from (details in table1.md)"
                if EMBED_DATASET in datasets else ""))
