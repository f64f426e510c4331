r"""Data for the selection experiments (Tables 2–3): in-memory tensors, the validation hold-out, label noise,
augmentation.

Everything is a plain tensor held in memory (on the training device), batches are index slices — no DataLoader
workers, so a run is deterministic given its seed and the whole CIFAR-10 training set lives on the GPU (150 MB).

Data sets
- ``digits`` (quick): scikit-learn's 1797 8×8 grey images, 10 classes, shipped with the package. No official test
  split: a fixed stratified 20% (seed 0, the same for every run) is the test set.
- ``breast_cancer`` (quick): scikit-learn's 569 × 30 tabular set, 2 classes, shipped with the package — the largest
  real offline set besides digits (wine: 178 rows, iris: 150), and a different modality (tabular, MLP). Test split as
  for digits; features standardised with the training pool's mean and std.
- ``fashion_mnist`` (medium): Zalando's Fashion-MNIST, 60,000 training + 10,000 test grey 28×28 images, 10 classes,
  the standard IDX ``.gz`` files. Looked for, in this order, in ``<data_dir>/fashion-mnist/`` (``data_dir``:
  ``CHG_DATA``, default ``data/``), ``<data_dir>/FashionMNIST/raw/`` (torchvision's layout), ``<data_dir>/`` itself,
  then the system folders in ``CHG_SYSTEM_DATASETS`` (``os.pathsep``-separated; default
  ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist`` puts them; empty: none); if none holds
  them, torchvision downloads them into ``<data_dir>/FashionMNIST/raw/`` unless ``CHG_DOWNLOAD=0``; else a clear error.
  Normalised with the usual constants (mean 0.2860, std 0.3530). Official test set; 10% of the training images
  (stratified) are the validation set, so the pool is 54,000.
- ``cifar10`` / ``cifar100`` (paper): torchvision, ``download=False`` from ``DATA_DIR``; official test sets.
- ``tinyimagenet`` (paper): the standard ``tiny-imagenet-200`` folder in ``DATA_DIR``; its ``val`` folder (labelled)
  is the test set, as usual, since the official test labels are not public.

Of the training part, 10% (stratified, drawn with the run's seed) is held out for validation (CORDS' setting); the
rest is the candidate pool for selection. Label noise (Table 3) changes labels of the pool only — see
:func:`add_label_noise`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .results import DATA_DIR

__all__ = ["Split", "DataBundle", "load_dataset", "stratified_split", "add_label_noise", "augment_batch",
           "synthetic_bundle", "read_idx", "fashion_mnist_dirs", "DATASETS", "QUICK_DATASETS", "MEDIUM_DATASETS",
           "PAPER_DATASETS", "FASHION_MNIST_FILES", "SYSTEM_FASHION_MNIST"]

QUICK_DATASETS = ("digits", "breast_cancer")
MEDIUM_DATASETS = ("fashion_mnist",)
PAPER_DATASETS = ("cifar10", "cifar100", "tinyimagenet")
DATASETS = QUICK_DATASETS + MEDIUM_DATASETS + PAPER_DATASETS

_CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
_CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
_TINY_MEAN, _TINY_STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)
_FASHION_MEAN, _FASHION_STD = 0.2860, 0.3530
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                       "t10k-labels-idx1-ubyte.gz")
SYSTEM_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


@dataclass
class Split:
    """One part of a data set, in memory.

    Attributes:
        x: (n, ...) float32 inputs, already normalised ((n, C, H, W) images or (n, d) tabular rows).
        y: (n,) int64 class labels.
    """
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device) -> "Split":
        """A copy on ``device``.

        Args:
            device: a ``torch.device`` or its name.
        Returns:
            :class:`Split` with both tensors moved.
        """
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class DataBundle:
    """The three parts of a data set plus what the model and the augmentation need to know about it.

    Attributes:
        name: the data set's name (as :func:`load_dataset` takes it).
        train: the candidate pool (labels possibly noisy). val, test: clean :class:`Split` s.
        num_classes: C; every label lies in [0, C).
        kind: ``"image"`` or ``"tabular"``.
        clean_train_y: (n_pool,) int64, the pool's labels before any noise.
        noisy: (n_pool,) bool, which pool labels were changed.
    """
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    kind: str
    clean_train_y: torch.Tensor
    noisy: torch.Tensor

    def to(self, device) -> "DataBundle":
        """A copy with every tensor on ``device``.

        Args:
            device: a ``torch.device`` or its name.
        Returns:
            :class:`DataBundle`.
        """
        return DataBundle(self.name, self.train.to(device), self.val.to(device), self.test.to(device),
                          self.num_classes, self.kind, self.clean_train_y.to(device), self.noisy.to(device))


def stratified_split(y: torch.Tensor, fraction: float, generator: torch.Generator) -> tuple:
    """Indices (keep, held_out): per class, round(fraction·N_c) points drawn without replacement go to held_out.

    Args:
        y: (n,) integer labels. fraction: the held-out share of each class, in [0, 1).
        generator: a CPU ``torch.Generator``, the only source of randomness.
    Returns:
        ``(keep, held_out)``: int64 CPU index tensors, disjoint, together 0..n-1, each sorted ascending (so the
        order of the data is kept).
    Raises:
        ValueError: a fraction outside [0, 1).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must lie in [0, 1), got {fraction}")
    y = y.cpu()
    held = []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().squeeze(1)
        m = int(math.floor(fraction * idx.numel() + 0.5))
        held.append(idx[torch.randperm(idx.numel(), generator=generator)[:m]])
    held = torch.sort(torch.cat(held)).values if held else torch.empty(0, dtype=torch.long)
    mask = torch.ones(y.numel(), dtype=torch.bool)
    mask[held] = False
    return mask.nonzero().squeeze(1), held


def add_label_noise(y: torch.Tensor, num_classes: int, rate: float, generator: torch.Generator) -> tuple:
    """Exactly ``round(rate·n)`` labels, chosen uniformly without replacement, each changed to a *different* class
    drawn uniformly from the other ``num_classes − 1``.

    (The official CHG code instead draws the new label uniformly over all classes — so about rate·(C−1)/C of the
    labels really change, e.g. 27% for rate 0.3 and C = 10 — and adds the noise before the train/validation split,
    so its validation set is noisy too. Here the validation and test labels stay clean.)

    Args:
        y: (n,) integer labels in [0, num_classes). num_classes: C. rate: the share of labels changed, in [0, 1].
        generator: a CPU ``torch.Generator``.
    Returns:
        ``(noisy, mask)``: (n,) labels of ``y``'s dtype and (n,) bool (the changed points), on ``y``'s device.
    Raises:
        ValueError: a rate outside [0, 1], or noise asked of fewer than 2 classes.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must lie in [0, 1], got {rate}")
    if num_classes < 2 and rate > 0:
        raise ValueError("label noise needs at least 2 classes")
    n = y.numel()
    m = int(math.floor(rate * n + 0.5))
    flip = torch.randperm(n, generator=generator)[:m]
    shift = torch.randint(1, max(num_classes, 2), (m,), generator=generator)  # 1..C-1: never the same class
    out = y.clone().cpu()
    out[flip] = (out[flip] + shift) % num_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[flip] = True
    return out.to(y.device), mask.to(y.device)


def augment_batch(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding ``pad`` then a random crop of the original size) and random horizontal flip of a
    batch of images (B, C, H, W), vectorised (one ``gather`` does both), with randomness drawn from ``generator`` (a
    CPU generator) in a fixed order: the row offsets (B,) and column offsets (B,) when ``pad`` > 0, then the flips
    (B,). That order is kept across versions, so a recorded run reproduces bit for bit.

    Args:
        x: (B, C, H, W) floating images (any other rank: tabular, returned unchanged). pad: zero padding in pixels
            (0: no crop). flip: flip each image left-right with probability 1/2. generator: a CPU ``torch.Generator``.
    Returns:
        (B, C, H, W) augmented images, same dtype and device (``x`` itself when it is not 4-D).
    """
    if x.ndim != 4:
        return x  # tabular data: no augmentation
    pad = max(pad, 0)
    if pad == 0 and not flip:
        return x
    B, C, H, W = x.shape
    dev = x.device
    src = torch.nn.functional.pad(x, (pad, pad, pad, pad)) if pad else x
    Hp, Wp = H + 2 * pad, W + 2 * pad
    if pad:  # the draws and their order are the generator's contract: dy, dx, then the flips
        dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator).to(dev)
        dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator).to(dev)
    else:
        dy = dx = torch.zeros(B, dtype=torch.int64, device=dev)
    cols = torch.arange(W, device=dev).expand(B, W)  # (B, W): output column j reads crop column cols[b, j]
    if flip:
        mask = (torch.rand(B, generator=generator) < 0.5).to(dev)
        cols = torch.where(mask[:, None], (W - 1) - cols, cols)
    # one gather does crop and flip: output pixel (i, j) of image b is src[b, :, dy_b + i, dx_b + cols[b, j]]
    lin = (dy[:, None, None] + torch.arange(H, device=dev)[None, :, None]) * Wp + dx[:, None, None] + cols[:, None, :]
    flat = src.reshape(B, C, Hp * Wp)
    return flat.gather(2, lin.reshape(B, 1, H * W).expand(B, C, H * W)).reshape(B, C, H, W)


# ---------------------------------------------------------------------------------------------------------------
# loading

def load_dataset(name: str, seed: int, val_fraction: float = 0.1, noise_rate: float = 0.0,
                 data_dir: Path | None = None) -> DataBundle:
    """Load ``name``, hold out ``val_fraction`` of the training part for validation (stratified, seed ``seed``) and,
    if ``noise_rate`` > 0, flip that share of the pool's labels (seed ``seed``). CPU tensors; ``.to(device)`` after.

    Args:
        name: one of :data:`DATASETS` (see the module docstring for each set's source and splits).
        seed: seeds the validation draw and (seed + 1,000,003) the label noise.
        val_fraction: share of each class of the training part held out for validation, in [0, 1).
        noise_rate: share of the pool whose labels are flipped (:func:`add_label_noise`), in [0, 1].
        data_dir: where downloaded/copied data sets live (default ``CHG_DATA``, else ``data/``).

    Returns:
        a :class:`DataBundle`: images float32 (n, C, H, W) normalised, tabular float32 (n, d); labels int64 (n,);
        ``noisy`` (n_pool,) bool; validation and test labels clean. Fashion-MNIST: 54,000 / 6,000 / 10,000 at the
        default ``val_fraction`` 0.1.

    Raises:
        ValueError: unknown ``name``, a fraction or rate out of range.
        FileNotFoundError: the data set is not on this machine and cannot be downloaded; the message says how to
            get it.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")
    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    if name in QUICK_DATASETS:
        x_tr, y_tr, x_te, y_te, C, kind = _load_sklearn(name)
    elif name == "fashion_mnist":
        x_tr, y_tr, x_te, y_te, C, kind = _load_fashion(data_dir)
    elif name.startswith("cifar"):
        x_tr, y_tr, x_te, y_te, C, kind = _load_cifar(name, data_dir)
    else:
        x_tr, y_tr, x_te, y_te, C, kind = _load_tiny(data_dir)
    g = torch.Generator().manual_seed(int(seed))
    keep, held = stratified_split(y_tr, val_fraction, g)
    pool, val = Split(x_tr[keep], y_tr[keep]), Split(x_tr[held], y_tr[held])
    if name == "breast_cancer":  # standardise with the pool's statistics
        mu, sd = pool.x.mean(0), pool.x.std(0).clamp_min(1e-8)
        pool, val = Split((pool.x - mu) / sd, pool.y), Split((val.x - mu) / sd, val.y)
        x_te = (x_te - mu) / sd
    clean = pool.y.clone()
    noisy = torch.zeros(len(pool), dtype=torch.bool)
    if noise_rate > 0:
        gn = torch.Generator().manual_seed(int(seed) + 1_000_003)
        y_noisy, noisy = add_label_noise(pool.y, C, noise_rate, gn)
        pool = Split(pool.x, y_noisy)
    return DataBundle(name, pool, val, Split(x_te, y_te), C, kind, clean, noisy)


def _load_sklearn(name: str):
    from sklearn import datasets
    if name == "digits":
        d = datasets.load_digits()
        x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        x = (x - 0.3) / 0.4  # roughly zero mean, unit scale (constants, not fitted)
        kind = "image"
    else:
        d = datasets.load_breast_cancer()
        x = torch.tensor(d.data, dtype=torch.float32)
        kind = "tabular"
    y = torch.tensor(d.target, dtype=torch.long)
    C = int(y.max()) + 1
    keep, test = stratified_split(y, 0.2, torch.Generator().manual_seed(0))  # fixed test split for every run
    return x[keep], y[keep], x[test], y[test], C, kind


def _missing(what: str, how: str):
    raise FileNotFoundError(f"{what} not found. This machine cannot download it for you (download=False is used on "
                            f"purpose, so that nothing is fetched silently). {how}")


def _load_cifar(name: str, data_dir: Path):
    try:
        from torchvision import datasets
    except ImportError as exc:  # pragma: no cover
        raise ImportError("paper-scale CIFAR needs torchvision (pip install torchvision)") from exc
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    try:
        tr = cls(str(data_dir), train=True, download=False)
        te = cls(str(data_dir), train=False, download=False)
    except RuntimeError:
        _missing(f"{name} (folder {data_dir / folder})",
                 f"On a machine with network run: python -c \"import torchvision; torchvision.datasets."
                 f"{cls.__name__}('data', download=True)\" and copy data/{folder} to {data_dir}/ on this "
                 f"machine (or set CHG_DATA to the folder that holds {folder}).")
    mean, std = torch.tensor(_CIFAR_MEAN[name])[:, None, None], torch.tensor(_CIFAR_STD[name])[:, None, None]

    def to_tensor(ds):
        x = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).float() / 255.0  # (n, 3, 32, 32)
        return (x - mean) / std, torch.tensor(ds.targets, dtype=torch.long)

    x_tr, y_tr = to_tensor(tr)
    x_te, y_te = to_tensor(te)
    return x_tr, y_tr, x_te, y_te, 10 if name == "cifar10" else 100, "image"


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (LeCun's MNIST format: 2 zero bytes, a type byte, the number of dimensions, then each
    dimension as a big-endian uint32, then the data), gzip-compressed if its name ends in ``.gz``.

    Args:
        path: the file (``str`` or ``Path``).
    Returns:
        a numpy array of the stored dtype and shape, e.g. (60000, 28, 28) uint8 for Fashion-MNIST's training images.
    Raises:
        ValueError: naming the file, if the header is not IDX or the data are too short or too long.
        OSError: the file cannot be read.
    """
    import gzip
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (header {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"{path}: the header says shape {shape} of {dtype} ({int(np.prod(shape)) * dtype.itemsize} "
                         f"bytes) but the file holds {len(raw) - start} bytes of data (truncated or corrupt?)")
    return np.frombuffer(raw, dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))


def fashion_mnist_dirs(data_dir: Path) -> list:
    """The folders searched for Fashion-MNIST's four IDX files, in order (see the module docstring).

    Args:
        data_dir: the data folder of the run (``Path`` or ``str``).
    Returns:
        list of ``Path``: ``data_dir``'s candidates, then the system folders of ``$CHG_SYSTEM_DATASETS`` (default
        Debian's ``/usr/share/datasets/fashion-mnist``).
    """
    data_dir = Path(data_dir)
    system = os.environ.get("CHG_SYSTEM_DATASETS", SYSTEM_FASHION_MNIST)
    return [data_dir / "fashion-mnist", data_dir / "FashionMNIST" / "raw", data_dir] + \
        [Path(p) for p in system.split(os.pathsep) if p]


def _load_fashion(data_dir: Path):
    def find():
        for folder in fashion_mnist_dirs(data_dir):
            if all((folder / f).is_file() for f in FASHION_MNIST_FILES):
                return folder
        return None

    folder = find()
    tried = [str(d) for d in fashion_mnist_dirs(data_dir)]
    download_error = None
    if folder is None and os.environ.get("CHG_DOWNLOAD", "1") != "0":
        try:
            from torchvision import datasets
            datasets.FashionMNIST(str(data_dir), train=True, download=True)  # keeps the .gz files in FashionMNIST/raw
            datasets.FashionMNIST(str(data_dir), train=False, download=True)
        except Exception as exc:  # noqa: BLE001 - no network, no torchvision, ...: reported in the error below
            download_error = f"{type(exc).__name__}: {exc}"
        folder = find()
    if folder is None:
        how = ("the torchvision download was switched off (CHG_DOWNLOAD=0)" if download_error is None
               else f"the torchvision download failed ({download_error})")
        raise FileNotFoundError(
            f"Fashion-MNIST not found: none of {tried} holds all of {', '.join(FASHION_MNIST_FILES)}, and {how}. "
            "Get it either way: (1) Debian/Ubuntu: apt-get install dataset-fashion-mnist (installs the files in "
            f"{SYSTEM_FASHION_MNIST}/; `bash reproduce/setup.sh` does this when run as root); or (2) on a machine "
            "with network: python -c \"import torchvision; torchvision.datasets.FashionMNIST('data', download=True)\" "
            "and copy data/FashionMNIST/raw/*.gz to data/fashion-mnist/ here (or set CHG_DATA to a folder that holds "
            "fashion-mnist/).")

    def images(f):
        x = torch.from_numpy(read_idx(folder / f).copy())
        if x.ndim != 3 or tuple(x.shape[1:]) != (28, 28):
            raise ValueError(f"{folder / f}: expected (n, 28, 28) images, got shape {tuple(x.shape)}")
        return ((x.float() / 255.0 - _FASHION_MEAN) / _FASHION_STD).unsqueeze(1)  # (n, 1, 28, 28) float32

    def labels(f, n):
        y = torch.from_numpy(read_idx(folder / f).astype(np.int64))
        if y.shape != (n,) or int(y.min()) < 0 or int(y.max()) > 9:
            raise ValueError(f"{folder / f}: expected {n} labels in 0..9, got shape {tuple(y.shape)}")
        return y

    x_tr, x_te = images(FASHION_MNIST_FILES[0]), images(FASHION_MNIST_FILES[2])
    return x_tr, labels(FASHION_MNIST_FILES[1], len(x_tr)), x_te, labels(FASHION_MNIST_FILES[3], len(x_te)), 10, "image"


def _load_tiny(data_dir: Path):
    root = data_dir / "tiny-imagenet-200"
    if not (root / "wnids.txt").is_file():
        _missing(f"Tiny ImageNet (folder {root})",
                 "Download http://cs231n.stanford.edu/tiny-imagenet-200.zip on a machine with network, unzip it into "
                 f"{data_dir} (or set CHG_DATA to the folder that holds tiny-imagenet-200).")
    cache = root / "chg_cache_uint8.pt"  # decoded once, then reused
    if cache.is_file():
        blob = torch.load(cache)
    else:
        from PIL import Image
        wnids = [w.strip() for w in (root / "wnids.txt").read_text().split()]
        index = {w: i for i, w in enumerate(wnids)}

        def read(paths):
            return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]))

        tr_paths, tr_y = [], []
        for w in wnids:
            for p in sorted((root / "train" / w / "images").glob("*.JPEG")):
                tr_paths.append(p)
                tr_y.append(index[w])
        te_paths, te_y = [], []
        for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            te_paths.append(root / "val" / "images" / parts[0])
            te_y.append(index[parts[1]])
        blob = {"x_tr": read(tr_paths), "y_tr": torch.tensor(tr_y), "x_te": read(te_paths), "y_te": torch.tensor(te_y)}
        from ..io import atomic_write
        atomic_write(cache, lambda tmp: torch.save(blob, tmp))
    mean, std = torch.tensor(_TINY_MEAN)[:, None, None], torch.tensor(_TINY_STD)[:, None, None]

    def norm(x):
        return (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std

    return norm(blob["x_tr"]), blob["y_tr"].long(), norm(blob["x_te"]), blob["y_te"].long(), 200, "image"


def synthetic_bundle(n_train: int = 45_000, num_classes: int = 10, shape: tuple = (3, 32, 32), seed: int = 0,
                     n_eval: int = 1_000) -> DataBundle:
    """Random Gaussian images with random labels, CIFAR-shaped by default: for timing the training loop (e.g. the
    ResNet-18 epoch time on a GPU) without the real data. Nothing can be learned from it.

    Args:
        n_train: pool size; n_eval: size of the validation and of the test part; num_classes: C; shape: one input's
            shape (3-D: "image", else "tabular"); seed: the generator's seed.
    Returns:
        :class:`DataBundle` of float32 N(0, 1) inputs and uniform int64 labels, no noise.
    """
    g = torch.Generator().manual_seed(seed)

    def part(n):
        return Split(torch.randn((n,) + tuple(shape), generator=g), torch.randint(0, num_classes, (n,), generator=g))

    train = part(n_train)
    return DataBundle("synthetic", train, part(n_eval), part(n_eval), num_classes,
                      "image" if len(shape) == 3 else "tabular", train.y.clone(),
                      torch.zeros(n_train, dtype=torch.bool))
