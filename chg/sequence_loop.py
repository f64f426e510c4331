"""Train and value in one call, and the hand-over from :func:`chg.value_data` and :class:`chg.EpochValuer`:
:func:`value_sequences` (train a language model or token classifier and value its sequences),
:func:`is_sequence_data` (whether a data set's items carry a label per position), :func:`sequence_valuer` (the
:class:`SequenceValuer` that ``chg.EpochValuer(n, unit=...)`` returns) and :func:`pad_items` (dict items of
different lengths made one batch, right-padded — for :func:`chg.value_data`'s classifiers too).

The per-batch maths: :mod:`chg.sequence_maths`; the valuer: :mod:`chg.sequence_valuation`; the derivation, the modes
and the batch format: :mod:`chg.sequence` (which re-exports every name here).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from .distributed import one_process
from .factored import flag
from .io import RunCheckpoint, data_fingerprint, model_signature
from .lastlayer import LastLayerTap, forward_batch, model_device, split_batch
from .progress import progress as progress_bar
from .renames import unexpected_keyword
from .sequence_maths import IGNORE_INDEX, MODES, causal_shift, scored_positions, sequence_loss
from .sequence_valuation import SequenceValuer, _batches, _choice, _read

__all__ = ["value_sequences", "is_sequence_data", "sequence_valuer", "pad_items"]


# ---- the one-call helper: train and value --------------------------------------------------------------------

_PAD = {"labels": IGNORE_INDEX, "label": IGNORE_INDEX, "attention_mask": 0}


def pad_items(items: list, pad_token_id: int = 0) -> dict:
    """Dict items made one batch, HuggingFace style: each key's values stacked, those of different lengths padded on
    the right to the longest along dim 0 (``torch.nn.utils.rnn.pad_sequence``) — ``input_ids`` with ``pad_token_id``,
    ``labels`` with -100 (not scored), ``attention_mask`` and anything else with 0 — and, when lengths differ and the
    items have no ``attention_mask``, one added: 1 on each item's own positions, 0 on its padding (the lengths of
    ``input_ids``, else of the first key whose lengths differ).

    Args:
        items: dicts with the same keys (a tokenizer's output without padding: ``input_ids``, ``attention_mask``,
            ``labels``, ...), each value a tensor, an array, a list of numbers or a number — or text (a ``"text"``
            column left in: kept as a list of the items' strings, as torch's default collation keeps it).
        pad_token_id: the id ``input_ids`` are padded with (the model's ``config.pad_token_id``).
    Returns:
        dict of tensors, each (B, ...) (a text column: a list of B strings).
    Raises:
        ValueError: items with other keys than the first's.
    """
    keys = list(items[0])
    for it in items:
        if set(it) != set(keys):
            raise ValueError(f"the items of a batch must have the same keys: one has {sorted(it)}, another "
                             f"{sorted(keys)}")
    out, lengths = {}, None
    for key in keys:
        if any(isinstance(it[key], (str, bytes)) for it in items):  # a text column: a list, as default_collate keeps
            out[key] = [it[key] for it in items]  # it (the forward pass leaves out what the model does not take)
            continue
        ts = [torch.as_tensor(it[key]) for it in items]
        if all(t.shape == ts[0].shape for t in ts):
            out[key] = torch.stack(ts)
            continue
        out[key] = pad_sequence(ts, batch_first=True, padding_value=pad_token_id if key == "input_ids" else
                                _PAD.get(key, 0))
        if lengths is None or key == "input_ids":
            lengths = [t.shape[0] for t in ts]
    if lengths is not None and "attention_mask" not in out:
        out["attention_mask"] = (torch.arange(max(lengths))[None] < torch.as_tensor(lengths)[:, None]).long()
    return out


def _collate(dataset, rows: list):
    """A batch of ``dataset``'s items ``rows``: dicts by :func:`pad_items` (right padding, an ``attention_mask``
    added when lengths differ and there is none), or ``(x, y)`` pairs of one length; each with its ``index``."""
    items = [dataset[i] for i in rows]
    index = torch.as_tensor(rows, dtype=torch.int64)
    if isinstance(items[0], Mapping):
        if "labels" not in items[0] and "label" not in items[0]:
            raise ValueError(f"the data set's items need their labels under 'labels' (they have {sorted(items[0])}); "
                             "for a causal LM set labels = input_ids, with -100 at padding")
        out = pad_items([{k: v for k, v in it.items() if k != "index"} for it in items])
        out["index"] = index
        return out
    if not isinstance(items[0], (tuple, list)) or len(items[0]) < 2:
        raise ValueError(f"the data set's items must be dicts with 'labels' or (input_ids, labels) pairs, got "
                         f"{type(items[0]).__name__}")
    xs, ys = [torch.as_tensor(it[0]) for it in items], [torch.as_tensor(it[1]) for it in items]
    if len({x.shape for x in xs}) > 1:
        raise ValueError("(input_ids, labels) items of different lengths: give dict items with an attention_mask "
                         "(padding is then added and masked), or pad them to one length")
    return torch.stack(xs), torch.stack(ys), index


class _Positions(Dataset):
    """The row positions 0..n-1, which :func:`_collate` makes batches of: their third element is each row's index
    (``carries_index``, :func:`chg.lastlayer.carries_index`)."""

    carries_index = True

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _loader(dataset, batch_size: int, generator: Optional[torch.Generator] = None) -> DataLoader:
    """Batches of ``dataset`` with each row's ``index``, in order or shuffled by ``generator``."""
    return DataLoader(_Positions(len(dataset)), batch_size=batch_size, shuffle=generator is not None,
                      generator=generator, collate_fn=lambda rows: _collate(dataset, rows))


def _check_documents(dataset, shift: bool, batch_size: int, name: str) -> None:
    """Every document of ``dataset`` has a scored token (:func:`scored_positions`) — read once before training, so
    that a ValueError names each one without by its row in the data set (malformed labels are left to
    :func:`sequence_batch`'s messages)."""
    empty = []
    for batch in _loader(dataset, batch_size):
        inputs, labels, idx = split_batch(batch)
        mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        if not isinstance(labels, torch.Tensor) or labels.ndim != 2 or labels.dtype.is_floating_point \
                or (mask is not None and tuple(torch.as_tensor(mask).shape) != tuple(labels.shape)):
            continue
        empty += idx[~scored_positions(labels, mask, shift).any(1)].tolist()
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (f", ... ({len(empty)} in all)" if len(empty) > 10 else "")
        why = ("every label -100 or masked, or a single token: a causal LM's logits at t predict the token at t+1, "
               "so a document needs 2 tokens" if shift else "every label -100 or masked")
        raise ValueError(f"value_sequences: document(s) {shown} of {name} have no scored token ({why}); a document "
                         "without a scored token has no loss to value: drop it from the data set")


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


def value_sequences(model: nn.Module, train_dataset, valid_dataset=None, *, unit: str = "sequence",
                    reduction: str = "mean", mode: str = "pass", utility: str = "chg", alpha: str = "train",
                    epochs: int = 3, batch_size: int = 8, lr: float = 1e-3, optimizer: str = "adam",
                    momentum: float = 0.9, weight_decay: float = 0.0, eval_batch_size: Optional[int] = None,
                    seed: int = 0, shift: Optional[bool] = None, skip_epochs: int = 0,
                    layer: Optional[nn.Linear] = None, vocab_chunk: Optional[int] = None,
                    progress: Optional[bool] = None, checkpoint=None, return_valuer: bool = False):
    """Train a language model or token classifier (in place) and return CHG Shapley values of its training
    sequences (or tokens), Algorithm 1 over ``epochs`` epochs.

    Training: ``epochs`` epochs of shuffled mini-batches (``seed``), Adam or SGD, minimising the batch mean of the
    per-sequence losses :math:`l_i` (:func:`sequence_loss` under ``reduction`` — each document weighted equally,
    unlike HuggingFace's token-weighted mean). Valuing: ``mode="pass"`` — the exact two-sweep values at the start of
    every epoch (:meth:`SequenceValuer.value_epoch`); ``mode="ride"`` — ride-along values against the previous
    epoch's statistics (the first epoch is not valued, so ``epochs >= 2``).

    Args:
        model: e.g. ``GPT2LMHeadModel`` or ``BertForTokenClassification``: its output layer an ``nn.Linear``
            applied per position (``layer`` if not the last one registered).
        train_dataset: a map-style data set of dicts (``input_ids``, ``labels`` (T,) with -100 for unscored
            positions, optional ``attention_mask``, other model inputs; items of different lengths are right-padded,
            labels with -100) or of ``(input_ids, labels)`` pairs of one length. valid_dataset: the same, for
            ``alpha="valid"``.
        unit, reduction, utility, alpha, shift, skip_epochs, vocab_chunk: as :class:`SequenceValuer` (shift None:
            :func:`causal_shift` of the model).
        mode: "pass" | "ride". epochs, batch_size, lr, optimizer ("adam" | "sgd"), momentum (SGD), weight_decay,
            seed: training settings. eval_batch_size: the sweeps' batch (default ``batch_size``).
        progress: a bar over the epochs (True | False | None: on a terminal).
        checkpoint: a file path, or None: the run's state after every epoch, to resume from (as
            :func:`chg.value_data`'s ``checkpoint``: :class:`chg.io.RunCheckpoint`).
        return_valuer: also return the valuer.
    Returns:
        :class:`chg.Values` (with the per-epoch history); with ``return_valuer``, ``(values, valuer)``.
    Raises:
        RuntimeError: ``torch.distributed`` initialised with several processes (a single-process loop:
            :func:`chg.distributed.one_process`).
        ValueError: unknown settings, ride-along with fewer than 2 epochs, skip_epochs not below epochs, alpha="valid"
            without ``valid_dataset``, data without labels, a document without a scored token (every label -100 or
            masked, or a causal LM's document of one token; named by its row, before training), a head that is not
            an ``nn.Linear`` applied per position, a ``checkpoint`` file of another run, and as
            :class:`SequenceValuer`.
    """
    one_process("chg.value_sequences")
    mode = _choice("mode", mode, MODES)
    optimizer = _choice("optimizer", optimizer, ("adam", "sgd"))
    epochs, batch_size = _positive_int("epochs", epochs), _positive_int("batch_size", batch_size)
    eval_batch_size = batch_size if eval_batch_size is None else _positive_int("eval_batch_size", eval_batch_size)
    if mode == "ride" and epochs < 2:
        raise ValueError("mode='ride' values each epoch against the previous epoch's statistics, so the first epoch "
                         "is not valued: train at least 2 epochs (or use mode='pass')")
    if isinstance(skip_epochs, (int, np.integer)) and not isinstance(skip_epochs, bool) and skip_epochs >= epochs:
        raise ValueError(f"skip_epochs={skip_epochs} leaves none of the {epochs} epochs to average; it must be < "
                         "epochs")
    if alpha == "valid" and valid_dataset is None:
        raise ValueError("alpha='valid' needs valid_dataset")
    for name, data in (("train_dataset", train_dataset), ("valid_dataset", valid_dataset)):
        if data is not None and not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise ValueError(f"{name} must be a map-style data set (len and [i]) of dicts with 'labels' or "
                             f"(input_ids, labels) pairs, got {type(data).__name__}")
    valuer = SequenceValuer(len(train_dataset), unit, reduction, utility, alpha,
                            causal_shift(model, layer) if shift is None else shift, skip_epochs, vocab_chunk)
    for name, data in (("train_dataset", train_dataset), ("valid_dataset", valid_dataset)):
        if data is not None:  # before training: a long run does not stop at such a document
            _check_documents(data, valuer.shift, eval_batch_size, name)
    device = model_device(model)
    shuffle = torch.Generator().manual_seed(int(seed))
    train_loader = _loader(train_dataset, batch_size, shuffle)
    eval_loader = _loader(train_dataset, eval_batch_size)
    valid_loader = None if valid_dataset is None else _loader(valid_dataset, eval_batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay) if optimizer == "adam" else \
        torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    tap = LastLayerTap(model, layer, sequence=True)
    run = RunCheckpoint(None, "value_sequences", {}, train_dataset) if checkpoint is None else RunCheckpoint(
        checkpoint, "value_sequences", {
            "unit": unit, "reduction": reduction, "mode": mode, "utility": utility, "alpha": alpha,
            "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
            "momentum": momentum if optimizer == "sgd" else None,
            "weight_decay": weight_decay, "eval_batch_size": eval_batch_size, "seed": seed, "shift": valuer.shift,
            "skip_epochs": skip_epochs, "vocab_chunk": vocab_chunk, "layer": tap.name, **model_signature(model),
            "valid_data": None if valid_dataset is None else data_fingerprint(valid_dataset)}, train_dataset)
    done = run.resume(model, opt, valuer, shuffle, epochs)
    if done == 0:  # before any training: a run cut short in its first epoch restarts from here
        run.save(0, model, opt, valuer, shuffle)
    model.train()
    for epoch in progress_bar(range(done, epochs), desc=f"value_sequences ({mode})", unit="epoch",
                              enabled=progress):
        if mode == "pass":
            valuer.value_epoch(model, eval_loader, valid_loader, layer)
        with tap:
            for batch in train_loader:
                inputs, labels, idx = split_batch(batch)
                logits, feat = _read(tap, forward_batch(model, inputs, device))
                mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
                if mode == "ride":
                    valuer.add_logits(idx, logits, labels, feat, mask, tap.bias)
                loss = sequence_loss(logits, labels, mask, valuer.shift, reduction).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if mode == "ride" and alpha == "valid":
                was = model.training
                model.eval()
                try:
                    with torch.no_grad():
                        for _, batch in _batches(model, tap, valid_loader, valuer, "valid", False, need_index=False):
                            valuer.add_validation(batch)
                finally:
                    model.train(was)
        if mode == "ride":
            valuer.end_epoch()
        run.save(epoch + 1, model, opt, valuer, shuffle)
    values = valuer.values(mode=mode, epochs=epochs, lr=float(lr), optimizer=optimizer, batch_size=batch_size)
    return (values, valuer) if return_valuer else values


# ---- what chg.value_data and chg.EpochValuer hand over ------------------------------------------------------

def is_sequence_data(dataset) -> bool:
    """Whether a data set's items carry a label per position — sequences for :func:`value_sequences` — rather than a
    label per item: a dict item whose ``labels`` (or ``label``) has one or more dimensions, or a ``(x, y)`` item whose
    ``y`` does.

    Args:
        dataset: a map-style data set, or anything else (then False).
    Returns:
        bool (False for an empty data set or one that cannot be indexed).
    """
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2 and not isinstance(dataset[0], Mapping):
        return False  # an (X, y) pair of arrays: a classifier's data
    try:
        if len(dataset) == 0:
            return False
        item = dataset[0]
    except (TypeError, KeyError, IndexError, AttributeError):
        return False
    if isinstance(item, Mapping):
        y = item.get("labels", item.get("label"))
    elif isinstance(item, (tuple, list)) and len(item) >= 2:
        y = item[1]
    else:
        return False
    return y is not None and np.ndim(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y) >= 1


_CLASSIFIER_DEFAULTS = {"gradient": "full", "per_class": False, "partial_epochs": False, "weight": None,
                        "label_smoothing": 0.0, "storage_dtype": None, "offload": None, "directory": None}


def _is_default(value, default) -> bool:
    return value is default or (isinstance(value, (bool, np.bool_, int, float, str)) and value == default)


def sequence_valuer(n: int, *, unit: str = "sequence", utility: str = "chg", alpha: str = "train",
                    skip_epochs: int = 0, reduction: str = "mean", shift: Optional[bool] = None,
                    vocab_chunk: Optional[int] = None, **classifier_options) -> SequenceValuer:
    """The :class:`SequenceValuer` that ``chg.EpochValuer(n, unit=...)`` returns: the options both valuers share,
    the sequence valuer's own, and the classifier's only at their defaults.

    Args:
        n: the number of sequences. unit: "sequence" or "token". utility, alpha, skip_epochs: as
            :class:`SequenceValuer`. reduction, shift, vocab_chunk: as :class:`SequenceValuer`.
        **classifier_options: :class:`chg.EpochValuer`'s other keywords, accepted at their defaults only.
    Returns:
        :class:`SequenceValuer`.
    Raises:
        ValueError: a classifier-only option away from its default (per-class games, the bias gradient, class
            weights, label smoothing, offloaded storage), or as :class:`SequenceValuer`.
        TypeError: an unknown keyword (naming the closest one it takes); ``per_class`` or ``partial_epochs`` not a
            bool.
    """
    unknown = sorted(set(classifier_options) - set(_CLASSIFIER_DEFAULTS))
    if unknown:
        takes = {"unit", "utility", "alpha", "skip_epochs", "reduction", "shift", "vocab_chunk", *_CLASSIFIER_DEFAULTS}
        raise unexpected_keyword("EpochValuer", unknown[0], takes, f" for a sequence valuer (unit={unit!r})")
    for name in ("per_class", "partial_epochs"):  # switches: True or False, as the classifier's valuer says
        if name in classifier_options:
            flag(classifier_options[name], name)
    bad = sorted(k for k, v in classifier_options.items() if not _is_default(v, _CLASSIFIER_DEFAULTS[k]))
    if bad:
        raise ValueError(f"{bad} apply to a classifier's valuer only; a sequence valuer (unit={unit!r}) values each "
                         "sequence or token in one game under the plain cross-entropy (see chg.sequence)")
    return SequenceValuer(n, unit, reduction, utility, alpha, shift, skip_epochs, vocab_chunk)
