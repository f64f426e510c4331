"""Table 1's data: opendataval's data sets registered here, the medium scale's Fashion-MNIST embeddings, the paper
scale's data check, and the fetcher of one run (its split and its noise, drawn from the seed).

Download permission is an argument (``download``, the scripts' ``--download``), never a module setting.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

import chg.experiments.results as results

from .odv_presets import EMBED_DATASET, NOISES, OdvPreset

__all__ = ["register_datasets", "N_FASHION_TRAIN", "EMBEDDER", "embedding_path", "make_embeddings", "load_embeddings",
           "embedding_facts", "opendataval_cache", "check_paper_data", "make_fetcher"]


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
    from chg.experiments.train import TrainConfig, evaluate
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
    acc = evaluate(model, x_te, y_te, TrainConfig(factor_batch_size=4096), torch.device("cpu")) / 100  # a fraction
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
    """Where opendataval keeps its downloaded data sets (under chg.experiments.results.DATA_DIR, git-ignored)."""
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




def make_fetcher(cfg: OdvPreset, dataset: str, noise: str, seed: int, *, download: bool = False):
    """opendataval's ``DataFetcher`` of one run: the data set split train/valid/test by the preset's counts and
    the noise kind applied to ``cfg.noise_rate`` of the training points (``mix_labels`` also flips the same share of
    the validation labels), both drawn from ``seed``; ``download`` lets opendataval fetch a missing data set (paper
    scale's ``--download``)."""
    from opendataval.dataloader import DataFetcher, add_gauss_noise, mix_labels
    register_datasets()
    if noise == "label":
        add_noise, kw = mix_labels, {"noise_rate": cfg.noise_rate}
    elif noise == "feature":
        add_noise, kw = add_gauss_noise, {"noise_rate": cfg.noise_rate, "sigma": cfg.feature_noise_sigma}
    else:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    return DataFetcher.setup(dataset, cache_dir=str(opendataval_cache()), force_download=download,
                             random_state=np.random.RandomState(seed),
                             train_count=cfg.train_count, valid_count=cfg.valid_count, test_count=cfg.test_count,
                             add_noise=add_noise, noise_kwargs=kw)


def embedding_facts() -> dict:
    """What a record on :data:`EMBED_DATASET` states about its embeddings (from the cache, made if missing)."""
    e = load_embeddings()
    return {"embedder_test_accuracy": e["test_accuracy"], "dims": int(e["x"].shape[1]), "points": int(len(e["y"])),
            "embedder_train_points": int(len(e["embedder_rows"])), "file": embedding_path().name}

