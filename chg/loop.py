"""The one loop that trains and values: :func:`value_data` (a model and a data set in, :class:`chg.Values` out), built
on :func:`train_and_value`, which the OpenDataVal plugin and ``chg value`` use too.

Every setting is a keyword of :func:`value_data`: the training ones (``epochs``, ``batch_size``, ``lr``, ``optimizer``,
``momentum``, ``weight_decay``, ``mode``, ``eval_batch_size``, ``seed``, ``progress``; recorded in a
:class:`ValueDataConfig`) and the valuation ones (``utility``, ``gradient``, ``per_class``, ``alpha``, ``skip_epochs``,
``weight``, ``label_smoothing``; see :class:`chg.EpochValuer`). ``mode="pass"`` is Algorithm 1 exactly (a separate
no-grad pass at each epoch's start, :func:`chg.separate_pass`); ``mode="ride"`` takes the factors from the training
forward passes (:meth:`chg.EpochValuer.add_logits`). When to use which: the "which mode, when" page of the docs.

One process: inside a ``torch.distributed`` group of several ranks (``torchrun``) these loops refuse to run (each
rank would train its own model on every row); there the loop of the torchrun page, :class:`chg.EpochValuer` with a
``DistributedSampler``, values each rank's shard.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import (BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset,
                              default_collate)

from .distributed import one_process
from .io import RunCheckpoint, data_fingerprint, model_signature
from .factored import Options
from .lastlayer import (LastLayerTap, _module_name, check_targets, forward_batch, model_device, per_sample_loss,
                        split_batch)
from .progress import progress as progress_bar
from .renames import OPTIONS_REMOVED, Removed, renamed
from .sequence import is_sequence_data, pad_items, sequence_valuer, value_sequences
from .store import label_range_error
from .values import Values, storable
from .valuation import (SKIP_MEANING, EpochValuer, IndexedDataset, add_validation_pass, count, loss_record,
                        separate_pass)

__all__ = ["value_data", "train_and_value", "ValueDataConfig", "MODES"]

MODES = ("pass", "ride")
CONFIG_REMOVED = Removed("pass the training settings as keywords (epochs=, lr=, ...), e.g. "
                         "**dataclasses.asdict(config)")


@dataclass
class ValueDataConfig:
    """Training settings of :func:`value_data` — the validated record of its training keywords (a plain loop: the
    output layer's loss — cross-entropy, or binary cross-entropy for one logit — on its logits).

    Attributes:
        epochs: training epochs (≥ 1); the values are averaged over them.
        batch_size: rows per training step (≥ 1).
        lr: the optimizer's learning rate. optimizer: "adam" | "sgd". momentum: SGD only. weight_decay: L2 penalty.
        mode: "pass": a separate no-grad pass at each epoch start (Algorithm 1) | "ride": ride-along.
        eval_batch_size: rows per no-grad batch (≥ 1).
        seed: seeds the shuffling of the batches.
        progress: a bar over the epochs: True | False | None (only on a terminal; :mod:`chg.progress`).
    """
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    mode: str = "pass"
    eval_batch_size: int = 256  # the separate pass's batch (benchmarks/results/pass_cost.md measures the choice)
    seed: int = 0
    progress: Optional[bool] = None


def _is_pandas(v) -> bool:
    return type(v).__module__.split(".")[0] == "pandas"


def _array_like(v) -> bool:
    """NumPy arrays, tensors and pandas objects: data without the (x, y) item structure of a Dataset."""
    return isinstance(v, (np.ndarray, torch.Tensor)) or _is_pandas(v)


def _nullable(v, what: str) -> Optional[np.ndarray]:
    """A pandas object of numbers with some of pandas' nullable dtypes (Float64, Int64, boolean, ...: what
    ``convert_dtypes()`` gives; their own ``to_numpy()`` is of dtype object) as a NumPy array of numbers: a missing
    value (``pd.NA``) is NaN in X (then refused as any NaN feature is, naming the row) and refused in y, naming the
    rows. None for anything else (read as before)."""
    module = type(v).__module__
    if not (module == "pandas" or module.startswith("pandas.")) or not hasattr(v, "to_numpy"):
        return None
    from pandas.api.extensions import ExtensionDtype
    from pandas.api.types import is_numeric_dtype
    dtypes = list(v.dtypes) if getattr(v, "ndim", 1) == 2 else [v.dtype]
    if not any(isinstance(d, ExtensionDtype) for d in dtypes) or not all(is_numeric_dtype(d) for d in dtypes):
        return None
    missing = np.asarray(v.isna()).reshape(len(v), -1).any(1)  # (n,) rows with a pd.NA
    if not missing.any():
        return v.to_numpy(dtype=np.result_type(*[getattr(d, "numpy_dtype", d) for d in dtypes]))
    if what == "y":
        rows = np.flatnonzero(missing)
        raise ValueError(f"y has no label in row(s) {rows[:10].tolist()}"
                         + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
                         + " (pd.NA; rows numbered from 0): drop those rows from X and y, or give them their labels")
    return v.to_numpy(dtype=np.float64, na_value=np.nan)


def _numpy(v, what: str) -> np.ndarray:
    arr = _nullable(v, what)
    if arr is not None:
        return arr
    arr = v.to_numpy() if hasattr(v, "to_numpy") else np.asarray(v)
    if arr.dtype == object or arr.dtype.kind in "USMm":
        raise ValueError(f"{what} has dtype {arr.dtype}: pass numbers (encode categories or strings as integers, "
                         "e.g. with pandas.factorize)")
    return arr


def _features(X, dtype: torch.dtype, what: str, ids: bool) -> torch.Tensor:
    """X as a tensor: floating features in the model's dtype; integer X only for a model that embeds ids (``ids``)."""
    t = X.detach() if isinstance(X, torch.Tensor) else torch.from_numpy(np.array(_numpy(X, "X")))  # own copy
    if t.dtype.is_floating_point:
        return t.to(dtype)
    if not ids:
        raise ValueError(f"value_data: {what} X has dtype {t.dtype}, but the model has no nn.Embedding to take integer "
                         "ids: pass floating features (X.astype(np.float32) / X.float(), scaled as the model is "
                         "trained on them — raw 0–255 pixels divided by 255, say)")
    return t


def _labels(y, n: int) -> torch.Tensor:
    t = y.detach() if isinstance(y, torch.Tensor) else torch.from_numpy(np.array(_numpy(y, "y")))
    if t.dtype.is_floating_point or t.dtype.is_complex:
        raise ValueError(f"y has dtype {t.dtype}: pass integer class labels (y.astype(int) / y.long() if they are "
                         "whole numbers)")
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"y must be 1-D with one label per row of X ({n}), got shape {tuple(t.shape)}")
    return t.to(torch.int64)


def _row_names(data) -> Optional[np.ndarray]:
    """The row names of a pair ``(X, y)`` of pandas objects: X's index (y's when only y is pandas), so that the values
    name the rows as the user's frame does (``Values.index``, ``suspects()``: ``X.loc[...]``). None for anything
    else, for the default 0..n−1 index, and for an index with repeated labels (a warning: rows then go by position).

    Raises:
        ValueError: X and y both pandas, of one length, with different indexes (rows are paired by position: a
            shuffled y would silently give each row another's label).
    """
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        return None
    frames = [d for d in data if _is_pandas(d) and hasattr(d, "index")]
    if not frames:
        return None
    index = frames[0].index
    if len(frames) == 2 and len(data[0]) == len(data[1]) and not data[0].index.equals(data[1].index):
        a, b = data[0].index.to_list(), data[1].index.to_list()
        k = next(i for i, (u, v) in enumerate(zip(a, b)) if u != v)
        raise ValueError(f"value_data: X and y have different indexes (at position {k}: X's row {a[k]!r}, y's "
                         f"{b[k]!r}); rows are paired by position, so a row would take another's label: align them "
                         "first (y = y.loc[X.index]), or pass X.to_numpy(), y.to_numpy()")
    if type(index).__name__ == "RangeIndex" and index.start == 0 and index.step == 1:
        return None
    import warnings
    if index.has_duplicates:
        warnings.warn("value_data: X's index repeats some labels, so it cannot name each row once; the values name "
                      "the rows by position 0..n-1 (select them with X.iloc[...], or X.reset_index() first)",
                      stacklevel=3)
        return None
    names = index.to_numpy()
    if names.dtype.kind not in "iufUSM":  # object: what Values.save can store, or positions
        stored = storable(names)
        if stored is None:
            warnings.warn(f"value_data: X's index is a {type(index).__name__} of "
                          f"{type(names[0]).__name__ if len(names) else 'no'} labels, which Values.save cannot "
                          "store; the values name the rows by position 0..n-1 (select them with X.iloc[...], or "
                          "X.reset_index() first)", stacklevel=3)
            return None
        names = stored
    return names


def _list_pair(data) -> bool:
    """``(X, y)`` with a Python list or tuple among them (n rows each), not a data set of two ``(x, y)`` items: four
    rows or more, or y of plain integers beside X's rows of features."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        return False
    X, y = data
    if not all(isinstance(d, (list, tuple)) or _array_like(d) for d in data) or all(_array_like(d) for d in data):
        return False
    if len(X) != len(y) or len(X) == 0:
        return False
    if len(X) >= 4:
        return True
    return (all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in y)
            and all(isinstance(r, (list, tuple, np.ndarray, torch.Tensor)) for r in X))


def _as_dataset(data, what: str, dtype: torch.dtype, ids: bool = False):
    """A Dataset from what a user passes: a Dataset (of ``(x, y)`` items or dicts), or a pair ``(X, y)`` of arrays,
    tensors or pandas objects (integer X only when ``ids``: the model embeds token ids). A bare array is refused
    (features without labels: never split into (x, y))."""
    if data is None:
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(_array_like(d) for d in data):
        X = _features(data[0], dtype, what, ids)
        if X.ndim < 1:
            raise ValueError(f"value_data: {what} X must have one row per point, got a scalar")
        return TensorDataset(X, _labels(data[1], X.shape[0]))
    if _list_pair(data):
        kinds = " and ".join(type(d).__name__ for d in data)
        raise ValueError(f"value_data: {what} is a pair of a {kinds} ({len(data[0])} rows each): pass X and y as "
                         "arrays or tensors, value_data(model, (np.asarray(X, dtype=np.float32), np.asarray(y))), "
                         "or a torch Dataset of (x, y) items")
    if _array_like(data):
        shape = tuple(getattr(data, "shape", ()))
        raise ValueError(f"value_data: {what} is a {type(data).__module__}.{type(data).__name__} of shape {shape}, "
                         f"not a data set of (x, y) items: pass features and labels together as a pair, "
                         f"value_data(model, (X, y)) (valid_dataset=(X_valid, y_valid)), or a torch Dataset")
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise ValueError(f"value_data: {what} must be a Dataset of (x, y) items (or dicts with 'labels') or a pair "
                         f"(X, y), got {type(data).__name__}")
    if isinstance(data, TensorDataset) and len(data.tensors) >= 2 and data.tensors[0].is_floating_point() \
            and data.tensors[0].dtype != dtype:  # floating features to the model's dtype, as a pair's (X, y)
        return TensorDataset(data.tensors[0].to(dtype), *data.tensors[1:])
    first = data[0] if len(data) else None
    if isinstance(first, dict) and not ({"labels", "label"} & first.keys()):
        raise ValueError(f"value_data: {what}'s items are dicts without 'labels' (keys {sorted(first)}): give each "
                         "item its targets under 'labels' — a class for a classifier; for a language model the "
                         "tokens themselves (labels = input_ids: the causal shift is applied)")
    return data


@renamed("0.3.0", options=OPTIONS_REMOVED, config=CONFIG_REMOVED)
@renamed("0.2.0", weighting="utility")
def value_data(model: nn.Module, train_dataset, valid_dataset=None, *, epochs: int = 10, batch_size: int = 64,
               lr: float = 0.01, optimizer: str = "adam", momentum: float = 0.9, weight_decay: float = 0.0,
               mode: str = "pass", eval_batch_size: Optional[int] = None, seed: int = 0,
               progress: Optional[bool] = None,
               utility: str = "chg", gradient: str = "full", per_class: bool = False, alpha: str = "train",
               skip_epochs: int = 0, weight=None, label_smoothing: float = 0.0, layer: Optional[nn.Linear] = None,
               unit: Optional[str] = None, checkpoint=None, return_valuer: bool = False):
    """Train ``model`` (in place) on ``train_dataset`` and return every point's CHG value (Algorithm 1).

    Args:
        model: a classifier whose output layer is an ``nn.Linear`` (with or without bias; C ≥ 2 logits trained with
            cross-entropy, or one logit with binary cross-entropy); it may return the logits or a tuple / dict /
            ``ModelOutput`` holding them (see :mod:`chg.lastlayer`). ``layer``: its output layer, if not the last
            ``nn.Linear`` registered.
        train_dataset: a torch Dataset of ``(x, y)`` items or of dicts with ``"labels"`` (HuggingFace style, tensors:
            ``.with_format("torch")``; ``input_ids`` of different lengths, as a tokenizer gives them without padding,
            are padded on the right in each batch with the model's ``config.pad_token_id`` — 0 for a model without
            a config — and the ``attention_mask`` is 0 there: :func:`chg.sequence.pad_items`), or a pair ``(X, y)``:
            X an array, tensor or pandas DataFrame (floating features are converted to the model's dtype; pandas'
            nullable columns — Float64, Int64, boolean — are read as numbers, a missing value as NaN), y integer
            labels (any integer dtype; float labels are refused). A bare array is refused with a message, never split
            into (x, y). A pandas X (or y) names the rows by its index: the values' ``index`` and ``suspects()``
            are its labels (``X.loc[values.suspects()]``); X and y with different indexes are an error (rows are
            paired by position).
        valid_dataset: the same kinds; needed for ``alpha="valid"``.
        epochs, batch_size, lr, optimizer, momentum, weight_decay, mode, eval_batch_size, seed, progress: the
            training settings, as :class:`ValueDataConfig` documents them (``mode``: "pass" | "ride";
            ``eval_batch_size`` None: 256 for a classifier, ``batch_size`` for a language model's documents — whose
            logits are (B, T, V) — as :func:`chg.sequence.value_sequences` takes it).
        utility, gradient, per_class, alpha: as in :class:`chg.EpochValuer` (strings and a bool).
        skip_epochs: the first k epochs left out of the average, 0 ≤ k < epochs (0: every epoch, Algorithm 1).
        weight, label_smoothing: the loss trained on and valued — ``F.cross_entropy``'s class weights (C,) and
            label smoothing in [0, 1] (default: plain cross-entropy).
        unit: None: a data set whose items' labels are sequences (a language model's or token classifier's:
            :func:`chg.sequence.is_sequence_data`) goes to :func:`chg.sequence.value_sequences` with these settings
            (one value per sequence), any other to the classifier's loop; "sequence" or "token" (one value per scored
            token) choose the sequence path.
        checkpoint: a file path (str or ``Path``), or None: the run's state is written there before training and
            after every epoch (:class:`chg.io.RunCheckpoint`), and a run started again with the same path, model
            architecture, data and settings resumes after its last finished epoch — values and weights bit for bit
            those of a run not cut short; the same call after the run ended returns its values without training, one
            with more ``epochs`` trains only the new ones. Every training row is read once more to check the data.
        return_valuer: also return the :class:`chg.EpochValuer` (a :class:`chg.sequence.SequenceValuer` there).
    Returns:
        :class:`chg.Values`: each point's value averaged over the epochs (after the first ``skip_epochs``), with the
        per-epoch history; with ``return_valuer``, ``(values, valuer)``.
    Raises:
        TypeError: a setting of the wrong type, or a keyword removed in 0.3.0 (``options=``, ``config=``).
        RuntimeError: ``torch.distributed`` initialised with several processes (``torchrun``): ``value_data`` is
            single-process; write the loop with :class:`chg.EpochValuer` and a ``DistributedSampler``
            (:func:`chg.distributed.one_process`).
        ValueError: a setting of a wrong value, a ``skip_epochs`` not in [0, epochs), data it cannot read as
            (x, y) rows, integer features X for a model without ``nn.Embedding`` (pass floating features), dict
            items of different lengths for a HuggingFace model whose config has no ``pad_token_id`` (set it), a
            missing label (``pd.NA`` in y), and (at the first epoch's end) features that are NaN or infinite,
            naming the row; a ``checkpoint`` file of another run (other settings, model or data, more epochs than
            asked: :class:`chg.io.CheckpointError`).
        OSError: a ``checkpoint`` path that cannot be written (before training).
    """
    one_process("chg.value_data")
    sweep = ValueDataConfig.eval_batch_size if eval_batch_size is None else eval_batch_size  # (a classifier's)
    cfg = ValueDataConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
                          weight_decay=weight_decay, mode=mode, eval_batch_size=sweep, seed=seed,
                          progress=progress)
    _check_config(cfg)
    skip_epochs = count(skip_epochs, "skip_epochs", 0, SKIP_MEANING)
    if skip_epochs >= cfg.epochs:
        raise ValueError(f"value_data: skip_epochs={skip_epochs} leaves none of the {cfg.epochs} epochs to average; "
                         f"it must be < epochs")
    options = Options(utility=utility, gradient=gradient, per_class=per_class, alpha=alpha)  # before the data
    if unit is not None or is_sequence_data(train_dataset):
        unit = unit or "sequence"
        sequence_valuer(1, unit=unit, utility=utility, alpha=alpha, gradient=gradient, per_class=per_class,
                        weight=weight, label_smoothing=label_smoothing)  # the options a sequence valuer takes
        return value_sequences(model, train_dataset, valid_dataset, unit=unit, mode=cfg.mode, utility=utility,
                               alpha=alpha, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                               optimizer=cfg.optimizer, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               eval_batch_size=eval_batch_size, seed=cfg.seed, skip_epochs=skip_epochs,
                               layer=layer, progress=cfg.progress, checkpoint=checkpoint,
                               return_valuer=return_valuer)
    if options.alpha == "valid" and valid_dataset is None:
        raise ValueError("value_data: alpha='valid' needs valid_dataset")
    dtype = next(model.parameters()).dtype
    ids = any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules())  # integer X: token ids
    names = _row_names(train_dataset)  # a pandas X's index names the rows of the values
    _row_names(valid_dataset)  # (X and y of different indexes: refused there too)
    train_dataset = _as_dataset(train_dataset, "train_dataset", dtype, ids)
    valid_dataset = _as_dataset(valid_dataset, "valid_dataset", dtype, ids)
    valuer = EpochValuer(len(train_dataset), utility=utility, gradient=gradient, per_class=per_class, alpha=alpha,
                         skip_epochs=skip_epochs, weight=weight, label_smoothing=label_smoothing)
    run = None if checkpoint is None else RunCheckpoint(checkpoint, "value_data", {
                "batch_size": cfg.batch_size, "lr": cfg.lr, "optimizer": cfg.optimizer,
                "momentum": cfg.momentum if cfg.optimizer == "sgd" else None,  # (Adam has none)
                "weight_decay": cfg.weight_decay, "mode": cfg.mode, "eval_batch_size": cfg.eval_batch_size,
                "seed": cfg.seed, "utility": utility, "gradient": gradient, "per_class": per_class, "alpha": alpha,
                "skip_epochs": skip_epochs, "loss": loss_record(weight, label_smoothing),
                "layer": None if layer is None else _module_name(model, layer),
                **model_signature(model),
                "valid_data": None if valid_dataset is None else data_fingerprint(valid_dataset)}, train_dataset)
    train_and_value(model, train_dataset, valid_dataset, cfg, valuer, layer=layer, caller="value_data", checkpoint=run)
    values = valuer.values(mode=cfg.mode, epochs=int(cfg.epochs))
    if names is not None:
        values = Values(values.history, values.skipped, index=names, meta=values.meta)
    return (values, valuer) if return_valuer else values


def _check_config(cfg: ValueDataConfig) -> None:
    """The training settings' types and values (:class:`ValueDataConfig`)."""
    if not isinstance(cfg.mode, str) or not isinstance(cfg.optimizer, str):
        raise TypeError(f"mode and optimizer must be strings, got {cfg.mode!r} and {cfg.optimizer!r}")
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    if cfg.optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {cfg.optimizer!r}")
    for name in ("epochs", "batch_size", "eval_batch_size"):
        count(getattr(cfg, name), name, 1)
    for name in ("lr", "momentum", "weight_decay"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number, got {v!r}")


class _TensorRows(Dataset):
    """A TensorDataset's rows fetched a batch at a time (one indexing per tensor, not one item per row): item
    ``rows`` (a list of row numbers) is ``(x[rows], y[rows], rows)``."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, rows):
        r = torch.as_tensor(rows, dtype=torch.int64)
        return self.tensors[0][r], self.tensors[1][r], r


def _length(v) -> tuple:
    return tuple(v.shape) if hasattr(v, "shape") else (len(v),) if isinstance(v, (list, tuple)) else ()


class _Collate:
    """torch's default collation; dict items of different lengths (a tokenizer's output without padding) padded on
    the right by :func:`chg.sequence.pad_items` with the model's ``config.pad_token_id`` (0 for a model without a
    HuggingFace config), the ``attention_mask`` 0 on the padding. A HuggingFace config without a pad_token_id is
    refused: decoder classifiers (``GPT2ForSequenceClassification``, ...) find each row's last token by it. The
    floating features x of ``(x, y)`` items go to the model's dtype, as a pair ``(X, y)``'s do (a TensorDataset of
    float64 features for a float32 model)."""

    def __init__(self, model: nn.Module, what: str):
        config = getattr(model, "config", None)
        self.pad = 0 if config is None else getattr(config, "pad_token_id", None)
        self.model, self.what = type(model).__name__, what
        self.dtype = next((q.dtype for q in model.parameters() if q.is_floating_point()), None)

    def _cast(self, t):
        """A floating tensor of features in the model's dtype (anything else as it is)."""
        if isinstance(t, torch.Tensor) and t.is_floating_point() and self.dtype is not None and t.dtype != self.dtype:
            return t.to(self.dtype)
        return t

    def __call__(self, items):
        if not isinstance(items[0], Mapping):
            batch = default_collate(items)
            if isinstance(batch, (list, tuple)) and batch:
                batch = [self._cast(batch[0]), *batch[1:]]
            return batch
        keys = sorted(items[0], key=lambda k: k != "input_ids")  # input_ids first
        ragged = next((k for k in keys if len({_length(it.get(k)) for it in items}) > 1), None)
        if ragged is None:
            batch = default_collate(items)
            return {k: (v if k in ("labels", "label") else self._cast(v)) for k, v in batch.items()}
        if self.pad is None:
            lengths = [_length(it[ragged])[:1] for it in items]
            a = next(k for k, n in enumerate(lengths) if n != lengths[0])
            rows = [items[k].get("index", k) for k in (0, a)]
            where = f"rows {rows[0]} and {rows[1]} of the data" if "index" in items[0] else f"two items of {self.what}"
            raise ValueError(
                f"value_data: {self.what}'s items have {ragged} of different lengths ({where}: {lengths[0][0]} and "
                f"{lengths[a][0]} tokens), so each batch is padded on the right, but the model's config has no "
                f"pad_token_id, by which {self.model} finds each row's last token: set model.config.pad_token_id = "
                "tokenizer.pad_token_id (a GPT-2 tokenizer has none: tokenizer.pad_token = tokenizer.eos_token "
                "first), or pad the items yourself")
        return pad_items(items, self.pad)


def _indexed_loader(dataset, batch_size: int, generator: Optional[torch.Generator] = None,
                    collate: Optional[Callable] = None) -> DataLoader:
    """Batches ``(x, y, index)`` of ``dataset`` in order, or shuffled by ``generator`` (the permutation of
    ``DataLoader(shuffle=True, generator=generator)``); a TensorDataset's are fetched a batch at a time; other
    items are collated by ``collate`` (default: torch's)."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        order = RandomSampler(dataset, generator=generator) if generator is not None else SequentialSampler(dataset)
        # generator= too: each iter() of a DataLoader draws its base seed from it before the sampler's permutation,
        # so without it the permutations would not be those of DataLoader(shuffle=True, generator=generator)
        return DataLoader(_TensorRows(dataset.tensors), sampler=BatchSampler(order, batch_size, False),
                          batch_size=None, generator=generator)
    return DataLoader(IndexedDataset(dataset), batch_size=batch_size, shuffle=generator is not None,
                      generator=generator, collate_fn=collate)


def _checked_targets(logits: torch.Tensor, y, idx, device, caller: str) -> torch.Tensor:
    """A training batch's labels validated (:func:`chg.lastlayer.check_targets`), labels outside 0..C-1 named by the
    function called and the first such row of the data (the message of :func:`chg.store.label_range_error`)."""
    y = torch.as_tensor(y).to(device)
    try:
        return check_targets(logits, y)
    except ValueError as e:
        C = logits.shape[1]
        if y.ndim != 1 or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool or not len(y):
            raise ValueError(f"{caller}: {e}") from None
        bad = ((y < 0) | (y >= (2 if C == 1 else C))).nonzero().squeeze(1)
        if bad.numel() == 0:
            raise ValueError(f"{caller}: {e}") from None
        rows = torch.as_tensor(idx).reshape(-1).to(bad.device)[bad] if idx is not None else bad
        first = int(bad[rows.argmin()])
        row = int(rows.min())
        raise label_range_error(caller, C, int(y.min()), int(y.max()),
                                f"(first outside it in this batch: row {row} of the data, target {int(y[first])})"
                                ) from None


def train_and_value(model: nn.Module, train_dataset, valid_dataset, cfg: ValueDataConfig, valuer: EpochValuer,
                    layer: Optional[nn.Linear] = None, output: str = "logits",
                    loss_fn: Optional[Callable] = None, caller: str = "train_and_value",
                    checkpoint: Optional[RunCheckpoint] = None) -> EpochValuer:
    """The one loop that trains and values — :func:`value_data`'s, the OpenDataVal plugin's and ``chg value``'s:
    ``cfg.epochs`` epochs of shuffled mini-batches (``cfg.seed``), each epoch valued by ``valuer`` (``cfg.mode``: a
    separate pass at its start, :func:`separate_pass`, or ride-along through :meth:`EpochValuer.add_logits`), every
    forward pass through one :class:`chg.lastlayer.LastLayerTap` built once.

    Args:
        model: the classifier (trained in place). train_dataset, valid_dataset: Datasets (see :func:`value_data`).
        cfg: :class:`ValueDataConfig`. valuer: an :class:`EpochValuer` of ``len(train_dataset)`` rows; its
            ``weight`` and ``label_smoothing`` are the training loss's too. layer, output: as in
            :class:`chg.lastlayer.LastLayerTap`.
        loss_fn: ``loss_fn(output, logits, targets, index)`` → scalar training loss; default the mean of
            :func:`chg.lastlayer.per_sample_loss` under the valuer's loss (weighted mean with class weights, as
            ``F.cross_entropy``); ``targets`` arrive validated, int64.
        caller: the function the user called, named by the errors about the data (labels out of range, NaN).
        checkpoint: a :class:`chg.io.RunCheckpoint` to resume from and write after every epoch, or None.
    Returns:
        ``valuer``.
    Raises:
        RuntimeError: ``torch.distributed`` initialised with several processes (a single-process loop:
            :func:`chg.distributed.one_process`).
        ValueError: a bad config, a valuer of another size, ``alpha="valid"`` without a validation set, and as the
            tap and the valuer do.
    """
    one_process("chg.loop.train_and_value (behind chg.value_data, chg value and the OpenDataVal plugin)")
    _check_config(cfg)
    if len(train_dataset) != valuer.n:
        raise ValueError(f"the valuer has n = {valuer.n} but the training set has {len(train_dataset)} rows")
    if valuer.alpha == "valid" and valid_dataset is None:
        raise ValueError("alpha='valid' needs a validation set")
    device = model_device(model)
    collate = _Collate(model, "train_dataset")  # dict items of different lengths: padded on the right
    shuffle = torch.Generator().manual_seed(int(cfg.seed))
    train_loader = _indexed_loader(train_dataset, int(cfg.batch_size), shuffle, collate)
    eval_loader = _indexed_loader(train_dataset, int(cfg.eval_batch_size), collate=collate)
    valid_loader = None if valid_dataset is None else DataLoader(valid_dataset, batch_size=int(cfg.eval_batch_size),
                                                                 collate_fn=_Collate(model, "valid_dataset"))
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    tap = LastLayerTap(model, layer, output)
    valuer.check_head(model, tap.layer)
    weight = None if valuer.weight is None else torch.as_tensor(np.asarray(valuer.weight, dtype=np.float64))
    checkpoint = checkpoint or RunCheckpoint(None, caller, {}, train_dataset)
    done = checkpoint.resume(model, opt, valuer, shuffle, int(cfg.epochs))
    if done == 0:  # before any training: a run cut short in its first epoch restarts from here
        checkpoint.save(0, model, opt, valuer, shuffle)
    model.train()
    for epoch in progress_bar(range(done, int(cfg.epochs)), desc=f"value_data ({cfg.mode})", unit="epoch",
                              enabled=cfg.progress):
        if cfg.mode == "pass":
            separate_pass(valuer, model, eval_loader, valid_loader, layer, output, caller=caller)
        try:
            _train_epoch(model, valuer, tap, train_loader, valid_loader, opt, cfg, weight, loss_fn, device, caller)
        except BaseException:  # an error or Ctrl-C mid-epoch: the epoch's rows must not play in a later epoch
            valuer.discard_epoch()
            raise
        checkpoint.save(epoch + 1, model, opt, valuer, shuffle)
    return valuer


def _train_epoch(model, valuer, tap, train_loader, valid_loader, opt, cfg, weight, loss_fn, device, caller) -> None:
    """One epoch of :func:`train_and_value`'s training and, ride-along, its valuing (``valuer.end_epoch``)."""
    with tap:
        for batch in train_loader:
            inputs, y, idx = split_batch(batch)
            out = forward_batch(model, inputs, device)
            logits, feat = tap.read(out)  # (B, C) with its graph, (B, D) detached
            y = _checked_targets(logits, y, idx, device, caller)  # once, for the factors and the loss
            if cfg.mode == "ride":
                valuer.add_logits(idx, logits, y, feat, tap.bias)
            loss = (per_sample_loss(logits, y, weight, valuer.label_smoothing, reduction="mean")
                    if loss_fn is None else loss_fn(out, logits, y, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if cfg.mode == "ride" and valuer.alpha == "valid":
            was = model.training
            model.eval()
            try:
                add_validation_pass(valuer, model, valid_loader, tap)
            finally:
                model.train(was)
    if cfg.mode == "ride":
        valuer.end_epoch()
