r"""Valuing the documents a small language model trains on: the protocol of reproduce/lm_documents.py.

**Corpus (no download):** the docstrings of the Python standard library of the interpreter that runs this — on every
machine that has Python — read with :mod:`ast` from the source files (no import), whitespace collapsed, ASCII only,
at least ``min_chars`` characters, duplicates dropped, in file order. Technical English of one style: a corpus where
a corrupted document stands out to a reader. It depends on the Python version (the record keeps the version and the
corpus' SHA-256).

**Corruptions** (each a share of the training documents): ``shuffled`` — the words of a document in a random order
(the same bytes, broken language); ``script`` — the document written in Cyrillic letters (a fixed letter-for-letter
transliteration: another script, 2 UTF-8 bytes a letter); ``duplicate`` — an exact copy of another training document
(the copy is the one marked; its original stays clean). The validation documents are clean.

**Model:** GPT-2 from a ``GPT2Config`` (no download), byte-level (vocabulary 256, documents truncated to ``seq_len``
bytes, shorter ones right-padded and masked), Adam on the mean per-document loss (each document's mean token
cross-entropy).

**Scores of every training document** (one training run, :func:`run_lm_documents`):

* CHG Shapley, exact (Algorithm 1): :meth:`chg.sequence.SequenceValuer.value_epoch` — two no-grad sweeps at the
  start of every epoch — averaged over the epochs;
* CHG Shapley, ride-along: the training forward passes valued against the previous epoch's statistics (epochs ≥ 1);
* per-document loss: the training forward passes' loss, averaged over the epochs;
* loss trend: the least-squares slope of that loss over the epochs (a document the model does not learn keeps a
  flat or rising loss);
* In-Run-style first-order value (Wang et al., 2024, its first-order term, restricted to the output layer as here):
  :math:`\sum_k \langle \bar g^{\mathrm{val}}_k, G_i\rangle`, the head gradient of the document in each training
  forward pass dotted with the mean head gradient of the validation documents at the start of that epoch (eval
  mode), by the same factored products (:func:`chg.sequence.sequence_dots`, ``utility="gradient"``).

Suspicion = −value for the values, the loss itself, the slope itself. Metrics: ROC AUC, AP, precision at k against
the corrupted mask (:func:`chg.detection.detection_metrics`), ROC AUC of each kind against the clean documents, and
how close ride-along is to the exact values per epoch (Spearman, overlap of the 10% lowest and highest).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import random
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..detection import detection_metrics
from ..lastlayer import LastLayerTap
from ..sequence import SequenceValuer, sequence_batch, sequence_dots, sequence_loss, sequence_stats

__all__ = ["KINDS", "METHODS", "LMDocConfig", "stdlib_docstrings", "corrupt_documents", "encode", "build_model",
           "run_lm_documents", "agreement"]

KINDS = ("clean", "shuffled", "script", "duplicate")
METHODS = ("chg_pass", "chg_ride", "loss", "loss_trend", "in_run")
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "pydoc_data", "encodings"}
_LATIN = "abcdefghijklmnopqrstuvwxyz"
_CYRILLIC = "абцдефгхийклмнопярстувшжыз"  # one Cyrillic letter per Latin letter (a fixed transliteration)
_SCRIPT = str.maketrans(_LATIN + _LATIN.upper(), _CYRILLIC + _CYRILLIC.upper())


@dataclass(frozen=True)
class LMDocConfig:
    """Settings of :func:`run_lm_documents` (defaults: the quick scale).

    Attributes:
        docs, corrupt_each, valid_docs: training documents (corrupted ones included), training documents of each
            corrupted kind, clean validation documents. min_chars: a docstring's shortest length to be a document.
        seq_len: bytes per document. n_embd, n_layer, n_head, dropout: the GPT-2's width, depth, heads and dropout.
        epochs, batch_size, lr: the training run (Adam). reduction: a document's loss, "mean" or "sum" of its token
            cross-entropies. seed: seeds the documents drawn, the corruptions, the model, the batches and dropout.
    """
    docs: int = 600               # training documents, corrupted ones included
    corrupt_each: int = 30        # training documents of each corrupted kind (shuffled, script, duplicate)
    valid_docs: int = 100         # clean validation documents (the In-Run-style baseline's gradient)
    min_chars: int = 64           # a docstring's shortest length to be a document
    seq_len: int = 128            # bytes per document (longer ones truncated, shorter ones padded and masked)
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    dropout: float = 0.1          # GPT-2's resid/embd/attn dropout
    epochs: int = 8
    batch_size: int = 16
    lr: float = 1e-3              # Adam
    reduction: str = "mean"       # a document's loss: its mean token cross-entropy
    seed: int = 0


@functools.lru_cache(maxsize=4)
def stdlib_docstrings(min_chars: int = 64) -> tuple:
    """The corpus: every docstring (module, class, function) of the standard library's source files, in file order.

    Args:
        min_chars: the shortest document kept (characters, after collapsing whitespace).
    Returns:
        ``(docs, sha256)``: a tuple of distinct ASCII strings, and the SHA-256 of their text joined by newlines.
    Raises:
        FileNotFoundError: the standard library's source files are not on this machine.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not (_SKIP_DIRS & set(p.relative_to(root).parts)))
    if not files:
        raise FileNotFoundError(f"no Python source files under {root}: the standard library's sources are needed "
                                "(Debian: apt-get install libpython3-stdlib)")
    seen, docs = set(), []
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                text = " ".join(doc.split()) if doc else ""
                if len(text) >= min_chars and text.isascii() and text not in seen:
                    seen.add(text)
                    docs.append(text)
    return tuple(docs), hashlib.sha256("\n".join(docs).encode()).hexdigest()


def corrupt_documents(cfg: LMDocConfig) -> tuple:
    """The run's documents: validation (clean) and training (clean and corrupted, in a seeded order).

    Args:
        cfg: :class:`LMDocConfig` (docs, corrupt_each, valid_docs, min_chars, seed).
    Returns:
        ``(train_texts, kinds, source, valid_texts, corpus_info)``: lists of strings, each training document's kind
        (:data:`KINDS`), its source (the corpus index of the docstring it was made from; a duplicate has its
        original's), and a dict with the corpus size and SHA-256.
    Raises:
        ValueError: the corpus has too few documents for the settings.
    """
    corpus, sha = stdlib_docstrings(cfg.min_chars)
    clean_n = cfg.docs - 3 * cfg.corrupt_each
    need = cfg.valid_docs + clean_n + 2 * cfg.corrupt_each
    if clean_n < cfg.corrupt_each or need > len(corpus):
        raise ValueError(f"{cfg.docs} training documents with {cfg.corrupt_each} of each corrupted kind and "
                         f"{cfg.valid_docs} validation ones need {need} docstrings (and at least as many clean as "
                         f"duplicated); the corpus has {len(corpus)}")
    rng = random.Random(cfg.seed)
    pick = rng.sample(range(len(corpus)), need)
    valid = [corpus[i] for i in pick[:cfg.valid_docs]]
    clean = pick[cfg.valid_docs:cfg.valid_docs + clean_n]
    to_shuffle = pick[cfg.valid_docs + clean_n:cfg.valid_docs + clean_n + cfg.corrupt_each]
    to_script = pick[cfg.valid_docs + clean_n + cfg.corrupt_each:]
    rows = [(corpus[i], "clean", i) for i in clean]
    for i in to_shuffle:
        words = corpus[i].split(" ")
        rng.shuffle(words)
        rows.append((" ".join(words), "shuffled", i))
    rows += [(corpus[i].translate(_SCRIPT), "script", i) for i in to_script]
    rows += [(corpus[i], "duplicate", i) for i in rng.sample(clean, cfg.corrupt_each)]
    rng.shuffle(rows)
    texts, kinds, source = (list(t) for t in zip(*rows))
    return texts, kinds, source, valid, {"corpus_docs": len(corpus), "corpus_sha256": sha}


def encode(texts: list, seq_len: int) -> list:
    """Byte-level documents: dicts of ``input_ids`` (the UTF-8 bytes, truncated to ``seq_len``, right-padded with 0),
    ``attention_mask`` and ``labels`` (= input_ids, -100 at padding), each (seq_len,) int64.

    Args:
        texts: the documents. seq_len: bytes per document.
    Returns:
        a list of dicts, one per document.
    """
    out = []
    for text in texts:
        raw = list(text.encode("utf-8")[:seq_len])
        ids = torch.zeros(seq_len, dtype=torch.int64)
        ids[:len(raw)] = torch.tensor(raw, dtype=torch.int64)
        mask = (torch.arange(seq_len) < len(raw)).long()
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return out


def build_model(cfg: LMDocConfig):
    """GPT-2 from a config (transformers, no download): byte vocabulary 256, ``seq_len`` positions, seeded.

    Args:
        cfg: :class:`LMDocConfig`.
    Returns:
        a ``transformers.GPT2LMHeadModel`` (float32, its head tied to the token embedding).
    """
    from transformers import GPT2Config, GPT2LMHeadModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=256, n_positions=cfg.seq_len, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
            resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, bos_token_id=0, eos_token_id=0,
            use_cache=False))


def _batches(items: list, rows, batch_size: int) -> list:
    """Dict batches of ``items[rows]`` (stacked) with their ``index``, as a list (the two sweeps read it twice)."""
    out = []
    for b in range(0, len(rows), batch_size):
        idx = torch.as_tensor(rows[b:b + batch_size], dtype=torch.int64)
        out.append({k: torch.stack([items[i][k] for i in idx.tolist()]) for k in items[0]} | {"index": idx})
    return out


def _valid_gradient(model, tap, items: list, cfg: LMDocConfig) -> tuple:
    """Eval mode, no grad: the mean head gradient of the validation documents (C, D) and their mean loss."""
    total, losses = None, []
    with torch.no_grad():
        for batch in _batches(items, list(range(len(items))), 64):
            logits, feat = tap.read(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
            b = sequence_batch(logits, batch["labels"], feat, batch["attention_mask"], True, cfg.reduction, tap.bias)
            stats = sequence_stats(b, utility="gradient")[0]
            total = stats if total is None else total + stats
            losses.append(b.loss)
    return total.sum / total.n, float(torch.cat(losses).mean())


def agreement(a, b, share: float = 0.1) -> dict:
    """How close two rankings are: Spearman's rho, and the overlap of their ``share`` lowest and highest sets.

    Args:
        a, b: (n,) values. share: the share of rows in the lowest / highest set.
    Returns:
        dict ``spearman``, ``low_overlap``, ``high_overlap`` (overlaps as fractions of the set size).
    """
    from scipy.stats import spearmanr
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    k = max(1, int(round(share * len(a))))
    lo = len(set(np.argsort(a, kind="stable")[:k]) & set(np.argsort(b, kind="stable")[:k])) / k
    hi = len(set(np.argsort(-a, kind="stable")[:k]) & set(np.argsort(-b, kind="stable")[:k])) / k
    return {"spearman": float(spearmanr(a, b).statistic), "low_overlap": lo, "high_overlap": hi}


def _slope(losses: np.ndarray) -> np.ndarray:
    """(n,) least-squares slope of each column of (E, n) over the epochs 0..E-1."""
    t = np.arange(losses.shape[0], dtype=np.float64)
    t -= t.mean()
    return (t[:, None] * (losses - losses.mean(0))).sum(0) / max(float((t * t).sum()), 1e-300)


def run_lm_documents(cfg: LMDocConfig) -> dict:
    """One run: the documents, a GPT-2 trained on them, every document scored by every method.

    Args:
        cfg: :class:`LMDocConfig`.
    Returns:
        dict: ``kinds`` (per training document), ``scores`` (method → (n,) suspicion), ``metrics`` (method → all
        documents' metrics and per-kind ROC AUC), ``agreement`` (ride-along vs exact: per epoch ≥ 1 and of the
        averages over those epochs), ``valid_loss`` per epoch, ``times_s`` (wall seconds: training steps; the
        exact values' sweeps; ride-along's factors and values; the In-Run-style validation sweeps and products —
        the per-document loss comes with the training forward pass), ``corpus``.
    """
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator: seeded, then restored
        torch.manual_seed(cfg.seed + 2)
        return _run(cfg)


def _run(cfg: LMDocConfig) -> dict:
    from sklearn.metrics import roc_auc_score
    texts, kinds, _, valid_texts, corpus = corrupt_documents(cfg)
    train, valid = encode(texts, cfg.seq_len), encode(valid_texts, cfg.seq_len)
    n, E = len(train), cfg.epochs
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    exact = SequenceValuer(n, reduction=cfg.reduction, shift=True)
    ride = SequenceValuer(n, reduction=cfg.reduction, shift=True)
    losses, first_order = np.zeros((E, n)), np.zeros((E, n))
    valid_loss, times = [], {"train": 0.0, "chg_pass": 0.0, "chg_ride": 0.0, "in_run": 0.0}
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    tap = LastLayerTap(model, sequence=True)
    sweep = _batches(train, list(range(n)), 64)
    for epoch in range(E):
        t0 = time.perf_counter()
        exact.value_epoch(model, sweep)  # two no-grad sweeps at θ_k, eval mode
        t1 = time.perf_counter()
        model.eval()
        with tap:
            g_val, vloss = _valid_gradient(model, tap, valid, cfg)
        valid_loss.append(vloss)
        times["chg_pass"] += t1 - t0
        times["in_run"] += time.perf_counter() - t1
        model.train()
        with tap:
            for batch in _batches(train, torch.randperm(n, generator=gen).tolist(), cfg.batch_size):
                t0 = time.perf_counter()
                logits, feat = tap.read(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
                loss = sequence_loss(logits, batch["labels"], batch["attention_mask"], True, cfg.reduction).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                t1 = time.perf_counter()
                b = sequence_batch(logits, batch["labels"], feat, batch["attention_mask"], True, cfg.reduction,
                                   tap.bias)  # the factors: ride-along's, and the per-document loss
                ride.add(batch["index"], b)
                t2 = time.perf_counter()
                rows = batch["index"].numpy()
                losses[epoch, rows] = b.loss.numpy()
                first_order[epoch, rows] = sequence_dots(b, g_val, utility="gradient").numpy()
                times["train"] += t1 - t0
                times["chg_ride"] += t2 - t1
                times["in_run"] += time.perf_counter() - t2
        ride.end_epoch()
    pass_values, ride_values = exact.values(), ride.values()
    scores = {"chg_pass": -np.asarray(pass_values), "chg_ride": -np.asarray(ride_values),
              "loss": losses.mean(0), "loss_trend": _slope(losses), "in_run": -first_order.sum(0)}
    kinds_arr = np.asarray(kinds)
    corrupted = kinds_arr != "clean"
    metrics = {}
    for m, s in scores.items():
        metrics[m] = detection_metrics(s, corrupted)
        for kind in KINDS[1:]:  # this kind against the clean documents
            keep = (kinds_arr == kind) | ~corrupted
            metrics[m][f"roc_auc_{kind}"] = float(roc_auc_score(kinds_arr[keep] == kind, s[keep]))
    hp, hr = pass_values.history, ride_values.history
    per_epoch = [agreement(hr[k], hp[k]) for k in range(1, E)]
    averaged = agreement(hr[1:].mean(0), hp[1:].mean(0))
    return {"kinds": list(kinds), "scores": {m: s.tolist() for m, s in scores.items()}, "metrics": metrics,
            "agreement": {"per_epoch": per_epoch, "averaged": averaged}, "valid_loss": valid_loss,
            "train_loss_first_last": [float(losses[0].mean()), float(losses[-1].mean())],
            "times_s": times, "corpus": corpus, "n_train": n, "n_valid": len(valid)}
