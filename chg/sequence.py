r"""CHG Shapley for sequence models: the documents a language model or a token classifier trains on as players.

**Players and their vectors.** For a sequence :math:`i` with valid positions :math:`t` (label not ``-100``,
``attention_mask`` 1 where given; a causal LM's logits at :math:`t` predict the label at :math:`t+1`), token
cross-entropy :math:`\ell_t`, error :math:`e_t = \mathrm{softmax}(z_t) - \mathrm{onehot}(y_t)` (C,) and features
:math:`\tilde h_t = [h_t; 1]` entering the output ``nn.Linear`` (:math:`h_t` alone for a head without bias), the
per-sequence loss is

.. math::  l_i = \sum_t w_t \ell_t, \qquad w_t = 1/T_i\ (\text{``reduction="mean"``, the default: each document's mean
           token cross-entropy}) \ \text{or}\ w_t = 1\ (\text{``"sum"``}),

and its gradient with respect to the head's weight and bias is :math:`G_i = \sum_t w_t e_t \tilde h_t^\top`
(C × (D+1)). Theorem 1 (eq. 3) with :math:`x_i = l_i\,\mathrm{vec}(G_i)` (``utility="chg"``; ``"gradient"``:
:math:`x_i = \mathrm{vec}(G_i)`) needs only

.. math::  \|x_i\|^2 = l_i^2 \sum_{t,u} w_t w_u (e_t\cdot e_u)(\tilde h_t\cdot\tilde h_u),\qquad
           s = \sum_i x_i\ (C\times(D+1)),\qquad \langle m, x_j\rangle = l_j \sum_t w_t\, e_t^\top m\, \tilde h_t ,

two T × T Gram matrices per sequence, one C × (D+1) sum, and one product per token with a C × (D+1) matrix — never a
per-sequence gradient. With ``unit="token"`` (NER style) every valid token is a player,
:math:`x_t = \ell_t\, e_t\otimes\tilde h_t`: the ordinary rank-1 case, valued by :mod:`chg.factored` itself.

**Exact epoch values (``mode="pass"``, Algorithm 1):** two no-grad sweeps over the training set at the same
parameters (model in eval mode): sweep 1 sums :math:`s` and keeps every :math:`\|x_i\|^2` (O(n)); sweep 2 computes
:math:`\langle m, x_j\rangle` for eq. (3). Valuation memory O(C·D + n): no per-sequence (T, C) storage across
batches; within a batch the softmax is taken over chunks of the vocabulary (``vocab_chunk``), so no (B, T, C)
float64 array is made. Cost: two forward passes per epoch plus O(B·T·C·D + B·T²·(C+D)) per batch.

**Ride-along values (``mode="ride"``) — an approximation, named so:** during epoch k each training batch's factors
(its forward pass at that step, train mode) are valued at once against *the statistics of the previous epoch*
(n, s, Σ‖x‖², α of epoch k−1), while epoch k's own statistics are summed for epoch k+1. No extra pass, no per-row
storage. The first epoch only gathers statistics: its values are NaN (not valued), so ride-along needs ≥ 2 epochs.
They equal the exact values when the parameters do not change (learning rate 0, no dropout: tested);
reproduce/lm_documents.py measures how close they are in training (Spearman, top-10% overlap).

**Tied heads** (GPT-2's ``lm_head`` shares its weight with the token embedding ``wte``): the value uses the gradient
of the *head's use* of the matrix only (:math:`\sum_t w_t e_t h_t^\top`), not the embedding's share of the tied
parameter's gradient; the oracle tests differentiate an untied copy of the head.

**Batches:** dicts as HuggingFace gives them — ``labels`` (B, T) with ``-100`` for positions that are not scored,
optional ``attention_mask`` (B, T), optional ``index`` (each row's position in the data set), every other entry
passed to the model as a keyword — or ``(input_ids, labels[, index])`` tuples. The output layer is the last
``nn.Linear`` of the model (or ``layer=``), read with :class:`chg.lastlayer.LastLayerTap` ``(sequence=True)``.
"""
from __future__ import annotations

import operator
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler

from .factored import GroupStats, Options, group_stats, values_from_factors
from .lastlayer import Factors, LastLayerTap, forward_batch, loss_and_error, model_device, split_batch
from .progress import progress as progress_bar
from .shapley import check_n, coefficients
from .values import Values

__all__ = ["IGNORE_INDEX", "UNITS", "REDUCTIONS", "SequenceBatch", "causal_shift", "sequence_batch", "sequence_loss",
           "sequence_stats", "sequence_dots", "sequence_values", "sequence_shapley", "token_factors",
           "SequenceValuer", "value_sequences", "is_sequence_data", "sequence_valuer"]

IGNORE_INDEX = -100  # HuggingFace's (and F.cross_entropy's) label of a position that is not scored
UNITS = ("sequence", "token")
REDUCTIONS = ("mean", "sum")
UTILITIES = ("chg", "gradient")
ALPHAS = ("train", "valid")
MODES = ("pass", "ride")
VOCAB_CHUNK_ELEMENTS = 1 << 19  # (tokens × vocabulary columns) per chunk: 4 MiB of float64


# ---- the maths of a batch: pure functions ------------------------------------------------------------------------

@dataclass
class SequenceBatch:
    """A batch's per-position factors after the causal shift and the masks (from :func:`sequence_batch`).

    Attributes:
        logits: (B, T, C) the head's output at the scored positions (a view of the model's logits, not a copy).
        feat: (B, T, D) the features entering the head (detached; zero at positions that are not valid).
        target: (B, T) int64 target class (0 where not valid). valid: (B, T) bool, the positions that are players'
            tokens.
        weight: (B, T) float64 :math:`w_t` (1/T_i for "mean", 1 for "sum"; 0 where not valid).
        lse: (B, T) float64 log-sum-exp of the logits over the vocabulary. token_loss: (B, T) float64 :math:`\\ell_t`
            (0 where not valid). loss: (B,) float64 :math:`l_i = \\sum_t w_t \\ell_t`.
        bias: whether the head has a bias (:math:`\\tilde h_t = [h_t; 1]`).
    """
    logits: torch.Tensor
    feat: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor
    weight: torch.Tensor
    lse: torch.Tensor
    token_loss: torch.Tensor
    loss: torch.Tensor
    bias: bool = True

    @property
    def counts(self) -> torch.Tensor:
        """(B,) int64: the valid tokens of each sequence."""
        return self.valid.sum(1)


def _vocab_chunks(C: int, tokens: int, vocab_chunk: Optional[int]) -> list:
    """Column ranges [a, b) of the vocabulary: ``vocab_chunk`` columns each, default ~VOCAB_CHUNK_ELEMENTS per
    chunk of ``tokens`` rows."""
    if vocab_chunk is None:
        step = max(1, VOCAB_CHUNK_ELEMENTS // max(tokens, 1))
    elif isinstance(vocab_chunk, bool) or not isinstance(vocab_chunk, (int, np.integer)) or vocab_chunk < 1:
        raise ValueError(f"vocab_chunk must be a positive integer (vocabulary columns per chunk), got {vocab_chunk!r}")
    else:
        step = int(vocab_chunk)
    return [(a, min(C, a + step)) for a in range(0, C, step)]


def _compute_dtype(batch: SequenceBatch) -> torch.dtype:
    """float64 when logits and features are float64, else float32 (half precision raised)."""
    return torch.float64 if batch.logits.dtype == torch.float64 and batch.feat.dtype == torch.float64 \
        else torch.float32


def _scored(labels, attention_mask, shift: bool, reduction: str, shape: tuple, device) -> tuple:
    """The checks and masks shared by :func:`sequence_batch` and :func:`sequence_loss`: (labels shifted, valid
    (B, T') bool, target (B, T') int64 (0 where not valid), weight (B, T') float64)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if labels is None:
        raise ValueError("labels are missing: a sequence model is valued on its labels (B, T); for a causal LM pass "
                         "labels = input_ids (with -100 at padding), as HuggingFace's models take them")
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype.is_complex \
            or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (B, T), got {_describe(labels)}"
                         + (f" of dtype {labels.dtype}" if isinstance(labels, torch.Tensor) else ""))
    B, T, C = shape
    if labels.shape != (B, T):
        raise ValueError(f"labels must be (B, T) = ({B}, {T}) like the logits {tuple(shape)}, got "
                         f"{tuple(labels.shape)}")
    labels = labels.to(device)
    keep = torch.ones((B, T), dtype=torch.bool, device=device)
    if attention_mask is not None:
        m = torch.as_tensor(attention_mask).to(device)
        if m.shape != (B, T):
            raise ValueError(f"attention_mask must be (B, T) = ({B}, {T}), got {tuple(m.shape)}")
        if m.dtype.is_floating_point or m.dtype.is_complex or not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("attention_mask must hold 0/1 (bool or integer), as HuggingFace's tokenizers give it")
        keep = m.bool()
    if shift:
        if T < 2:
            raise ValueError(f"a causal LM needs sequences of at least 2 positions (logits at t predict label t+1), "
                             f"got T = {T}")
        labels, keep = labels[:, 1:], keep[:, :-1] & keep[:, 1:]
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= C))
    if bool(bad.any()):
        lo, hi = int(labels[bad].min()), int(labels[bad].max())
        raise ValueError(f"labels must lie in [0, {C}) or be {IGNORE_INDEX} (not scored), got values in [{lo}, {hi}]")
    valid = keep & (labels != IGNORE_INDEX)  # (B, T')
    counts = valid.sum(1)
    if bool((counts == 0).any()):
        empty = (counts == 0).nonzero().squeeze(1)[:5].tolist()
        raise ValueError(f"sequence(s) {empty} of the batch have no valid token (every label -100 or masked): a "
                         "document without a scored token has no loss to value; drop it from the data set")
    target = torch.where(valid, labels, torch.zeros_like(labels)).to(torch.int64)
    valid64 = valid.to(torch.float64)
    weight = valid64 / counts[:, None].to(torch.float64) if reduction == "mean" else valid64
    return valid, target, weight


def sequence_batch(logits: torch.Tensor, labels: torch.Tensor, feat: torch.Tensor, attention_mask=None,
                   shift: bool = False, reduction: str = "mean", bias: bool = True,
                   vocab_chunk: Optional[int] = None) -> SequenceBatch:
    r"""The factors of a batch of sequences: which positions are players' tokens, :math:`\ell_t`, :math:`w_t`,
    :math:`l_i` and the log-sum-exp of every position (over chunks of the vocabulary, in float64).

    A position t is valid when its label is not ``-100`` and, with ``attention_mask``, it is attended and (with
    ``shift``) so is the position it predicts. ``shift`` (causal LM): ``logits[:, :-1]`` and ``feat[:, :-1]``
    predict ``labels[:, 1:]``, as HuggingFace's ``*ForCausalLM`` losses do. (HuggingFace's own loss ignores the
    attention mask and scores every label that is not -100; its collators set padding's labels to -100, and then
    the two agree.)

    Args:
        logits: (B, T, C) floating, the output layer's output. labels: (B, T) integer, classes in [0, C) or -100.
        feat: (B, T, D) floating, the output layer's input. attention_mask: (B, T) of 0/1 (bool or integer), or None.
        shift: the causal-LM shift. reduction: "mean" (:math:`w_t = 1/T_i`) or "sum" (:math:`w_t = 1`).
        bias: whether the output layer has a bias. vocab_chunk: vocabulary columns per chunk (default: about 2^19
            elements per chunk).
    Returns:
        :class:`SequenceBatch`.
    Raises:
        ValueError: shapes that do not match, labels missing, not integers or outside [0, C) ∪ {-100}, an attention
            mask that is not 0/1, a sequence without a valid token, NaN/Inf logits at a valid position, an unknown
            reduction.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be a floating (B, T, C) tensor, got {_describe(logits)}")
    if not isinstance(feat, torch.Tensor) or feat.ndim != 3 or not feat.dtype.is_floating_point:
        raise ValueError(f"feat must be a floating (B, T, D) tensor (the output layer's input), got {_describe(feat)}")
    if feat.shape[:2] != logits.shape[:2]:
        raise ValueError(f"feat {tuple(feat.shape)} and logits {tuple(logits.shape)} must share (B, T)")
    valid, target, weight = _scored(labels, attention_mask, shift, reduction, tuple(logits.shape), logits.device)
    logits, feat = logits.detach(), feat.detach()
    if shift:
        logits, feat = logits[:, :-1], feat[:, :-1]
    B, T, C = logits.shape
    lse = None
    for a, b in _vocab_chunks(C, B * T, vocab_chunk):
        part = torch.logsumexp(logits[..., a:b].to(torch.float64), dim=-1)  # (B, T) over these columns
        lse = part if lse is None else torch.logaddexp(lse, part)
    picked = logits.gather(2, target[..., None]).squeeze(2).to(torch.float64)  # (B, T) z_y
    token_loss = torch.where(valid, lse - picked, torch.zeros_like(lse))  # (B, T) ℓ_t
    if not bool(torch.isfinite(token_loss).all()):
        raise ValueError("logits contain NaN or Inf at scored positions: the model diverged or its input is not "
                         "finite")
    h = torch.where(valid[..., None], feat, torch.zeros((), dtype=feat.dtype, device=feat.device))  # (B, T, D)
    return SequenceBatch(logits, h, target, valid, weight, lse, token_loss, (weight * token_loss).sum(1), bool(bias))


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor, attention_mask=None, shift: bool = False,
                  reduction: str = "mean") -> torch.Tensor:
    r"""The per-sequence training loss :math:`l_i = \sum_t w_t \ell_t`, differentiable (the loss
    :func:`sequence_batch` values; a training step takes its mean over the batch).

    Args:
        logits: (B, T, C) floating, with its graph. labels, attention_mask, shift, reduction: as
            :func:`sequence_batch`.
    Returns:
        (B,) in the logits' dtype (half precision: float32), with the logits' graph.
    Raises:
        ValueError: as :func:`sequence_batch` (the same checks).
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be a floating (B, T, C) tensor, got {_describe(logits)}")
    valid, target, weight = _scored(labels, attention_mask, shift, reduction, tuple(logits.shape), logits.device)
    z = logits[:, :-1] if shift else logits
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    y = torch.where(valid, target, torch.full_like(target, IGNORE_INDEX))
    tok = F.cross_entropy(z.reshape(-1, z.shape[2]), y.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")
    return (tok.reshape(y.shape) * weight.to(tok.dtype)).sum(1)


def _error_chunk(batch: SequenceBatch, a: int, b: int) -> torch.Tensor:
    r"""(B, T, b−a) float64: :math:`e_t` on vocabulary columns [a, b) — softmax − onehot, with :math:`p_y - 1 =
    e^{-\ell_t} - 1` (expm1, no cancellation), zero at positions that are not valid."""
    p = batch.logits[..., a:b].to(torch.float64, copy=True)  # (B, T, Cc): one new array, the rest in place
    p.sub_(batch.lse[..., None]).exp_()
    hit = batch.valid & (batch.target >= a) & (batch.target < b)  # (B, T)
    bi, ti = hit.nonzero(as_tuple=True)
    p[bi, ti, batch.target[bi, ti] - a] = torch.expm1(-batch.token_loss[bi, ti])
    return p.masked_fill_(~batch.valid[..., None], 0.0)


def _coef(batch: SequenceBatch, utility: str) -> torch.Tensor:
    """(B, T) float64: the factor of e_t ⊗ h̃_t in x_i — l_i w_t (CHG) or w_t (Gradient Shapley)."""
    return batch.weight * batch.loss[:, None] if utility == "chg" else batch.weight


def _features(batch: SequenceBatch, dtype: torch.dtype) -> torch.Tensor:
    """(B, T, D+bias) h̃ in ``dtype`` (zero rows where not valid)."""
    h = batch.feat.to(dtype)
    if batch.bias:
        h = torch.cat([h, batch.valid[..., None].to(dtype)], 2)
    return h


def sequence_stats(batch: SequenceBatch, utility: str = "chg", vocab_chunk: Optional[int] = None) -> tuple:
    r"""Sweep 1 of a batch: its share of :math:`s = \sum_i x_i` and every :math:`\|x_i\|^2` (sequence unit).

    :math:`\|x_i\|^2 = \sum_{t,u} a_t a_u (e_t\cdot e_u)(\tilde h_t\cdot\tilde h_u)` with :math:`a_t = l_i w_t`
    (``"chg"``) or :math:`w_t` (``"gradient"``); the error Gram is summed over chunks of the vocabulary. Products
    with the vocabulary run in the model's dtype (float64 when logits and features are float64, else float32) and
    are summed in float64.

    Args:
        batch: :class:`SequenceBatch`. utility: "chg" (:math:`x_i = l_i G_i`) or "gradient" (:math:`x_i = G_i`).
        vocab_chunk: vocabulary columns per chunk (default: about 2^19 elements per chunk).
    Returns:
        ``(stats, sq_norms)``: :class:`chg.factored.GroupStats` of the batch (n = B, ``sum`` (C, D+bias) float64,
        ``sum_sq_norms``) and the (B,) float64 :math:`\|x_i\|^2`.
    Raises:
        ValueError: an unknown utility or vocab_chunk; non-finite features.
    """
    a = _coef(batch, utility)  # (B, T)
    B, T, C = batch.logits.shape
    dt = _compute_dtype(batch)
    h = _features(batch, dt)  # (B, T, D+bias)
    h64 = h.to(torch.float64)
    hh = torch.bmm(h64, h64.transpose(1, 2))  # (B, T, T) h̃_t · h̃_u
    if not bool(torch.isfinite(hh).all()):
        raise ValueError("the output layer's input features contain NaN or Inf at scored positions")
    ee = torch.zeros_like(hh)  # (B, T, T) e_t · e_u
    s = torch.zeros((C, h.shape[2]), dtype=torch.float64, device=h.device)  # (C, D+bias)
    ah = (h * a[..., None].to(dt)).reshape(B * T, -1)  # (B·T, D+bias) a_t h̃_t
    for lo, hi in _vocab_chunks(C, B * T, vocab_chunk):
        e = _error_chunk(batch, lo, hi).to(dt)  # (B, T, Cc)
        ee.add_(torch.bmm(e, e.transpose(1, 2)).to(torch.float64))
        s[lo:hi] = (e.reshape(B * T, hi - lo).T @ ah).to(torch.float64)  # Σ a_t e_t h̃_tᵀ on these rows
    sq = torch.einsum("bt,bu,btu->b", a, a, ee * hh)  # (B,)
    return GroupStats(B, s, sq.sum()), sq


def sequence_dots(batch: SequenceBatch, m: torch.Tensor, utility: str = "chg",
                  vocab_chunk: Optional[int] = None) -> torch.Tensor:
    r"""Sweep 2 of a batch: :math:`\langle m, x_i\rangle = \sum_t a_t\, e_t^\top m\, \tilde h_t` for every sequence.

    Args:
        batch: :class:`SequenceBatch`. m: (C, D+bias) floating (e.g. :math:`c_2 s + c_5\alpha`, or a validation
            gradient). utility, vocab_chunk: as :func:`sequence_stats`.
    Returns:
        (B,) float64.
    Raises:
        ValueError: ``m`` of another shape; an unknown utility or vocab_chunk.
    """
    a = _coef(batch, utility)
    B, T, C = batch.logits.shape
    dt = _compute_dtype(batch)
    h = _features(batch, dt).reshape(B * T, -1)  # (B·T, D+bias)
    if not isinstance(m, torch.Tensor) or m.shape != (C, h.shape[1]):
        raise ValueError(f"m must be a ({C}, {h.shape[1]}) tensor (the shape of the head's gradient "
                         f"{'[W | b]' if batch.bias else 'W'}), got {_describe(m)}")
    m = m.to(device=h.device, dtype=dt)
    dot = torch.zeros((B, T), dtype=torch.float64, device=h.device)
    for lo, hi in _vocab_chunks(C, B * T, vocab_chunk):
        mh = (h @ m[lo:hi].T).reshape(B, T, hi - lo).to(torch.float64)  # (B, T, Cc) (m h̃_t) on these rows
        dot.add_(mh.mul_(_error_chunk(batch, lo, hi)).sum(2))
    return (a * dot).sum(1)


def _game(stats: GroupStats, alpha: Optional[torch.Tensor]) -> tuple:
    """Eq. (3) of a game with ``stats``: (c1, m = c2 s + c5 α, const = c3‖s‖² + c4 Σ‖x‖² + c6 ⟨s, α⟩)."""
    c = coefficients(check_n(stats.n))
    s = stats.sum
    a = s / stats.n if alpha is None else alpha.to(device=s.device, dtype=torch.float64).reshape(s.shape)
    const = c.sum_norm_sq * (s * s).sum() + c.sum_sq_norms * stats.sum_sq_norms + c.sum_dot_alpha * (s * a).sum()
    return c.sq_norm, c.dot_sum * s + c.dot_alpha * a, const


def sequence_values(batch: SequenceBatch, stats: GroupStats, alpha: Optional[torch.Tensor] = None,
                    utility: str = "chg", sq_norms: Optional[torch.Tensor] = None,
                    vocab_chunk: Optional[int] = None) -> torch.Tensor:
    r"""Eq. (3) for the sequences of ``batch``, players of the game whose statistics are ``stats`` (summed over every
    batch of the epoch: Algorithm 1, line 6):
    :math:`\phi_j = c_1\|x_j\|^2 + \langle c_2 s + c_5\alpha, x_j\rangle + c_3\|s\|^2 + c_4\sum_i\|x_i\|^2
    + c_6\langle s, \alpha\rangle` with :func:`chg.shapley.coefficients` of ``stats.n``.

    Args:
        batch: :class:`SequenceBatch`. stats: the game's :class:`chg.factored.GroupStats` (``sum`` (C, D+bias)).
        alpha: (C, D+bias) target, default ``stats.sum / stats.n`` (Algorithm 1, line 4). utility: as
            :func:`sequence_stats`. sq_norms: the batch's (B,) :math:`\|x_i\|^2` if known (else computed).
        vocab_chunk: as :func:`sequence_stats`.
    Returns:
        (B,) float64.
    Raises:
        ValueError: ``stats.n`` < 1, shapes that do not match, non-finite values.
    """
    if sq_norms is None:
        sq_norms = sequence_stats(batch, utility, vocab_chunk)[1]
    c1, m, const = _game(stats, alpha)
    out = c1 * sq_norms.to(torch.float64) + sequence_dots(batch, m, utility, vocab_chunk) + const
    if not bool(torch.isfinite(out).all()):
        raise ValueError("the values overflowed (non-finite): rescale the features or losses")
    return out


def sequence_shapley(logits: torch.Tensor, labels: torch.Tensor, feat: torch.Tensor, attention_mask=None,
                     shift: bool = False, reduction: str = "mean", bias: bool = True, utility: str = "chg",
                     alpha: Optional[torch.Tensor] = None, vocab_chunk: Optional[int] = None) -> torch.Tensor:
    r"""Theorem 1 for one batch of sequences as the whole player set (the two sweeps of one batch).

    Args:
        logits, labels, feat, attention_mask, shift, reduction, bias, vocab_chunk: as :func:`sequence_batch`.
        utility: "chg" or "gradient". alpha: (C, D+bias) target, default the mean of the :math:`x_i`.
    Returns:
        (B,) float64 values :math:`\phi_i`.
    Raises:
        ValueError: as :func:`sequence_batch` and :func:`sequence_values`.
    """
    batch = sequence_batch(logits, labels, feat, attention_mask, shift, reduction, bias, vocab_chunk)
    stats, sq = sequence_stats(batch, utility, vocab_chunk)
    return sequence_values(batch, stats, alpha, utility, sq, vocab_chunk)


def token_factors(batch: SequenceBatch) -> Factors:
    r"""The valid tokens as rank-1 players (``unit="token"``): :class:`chg.lastlayer.Factors` with loss
    :math:`\ell_t`, error :math:`e_t` (:func:`chg.lastlayer.loss_and_error`) and features :math:`h_t`, rows in
    (sequence, position) order — what :mod:`chg.factored` values. Materialises the (N, C) errors of the batch's N
    tokens (fine for a token classifier; for a large vocabulary prefer ``unit="sequence"``).

    Args:
        batch: :class:`SequenceBatch`.
    Returns:
        :class:`chg.lastlayer.Factors` of the N valid tokens.
    """
    bi, ti = batch.valid.nonzero(as_tuple=True)  # row-major: each sequence's tokens in position order
    loss, err = loss_and_error(batch.logits[bi, ti], batch.target[bi, ti])
    return Factors(loss, err, batch.feat[bi, ti], batch.bias)


def causal_shift(model: nn.Module) -> bool:
    """Whether ``model`` is a causal language model whose logits at t predict the token at t+1: a class named
    ``*ForCausalLM`` or one HuggingFace's auto classes list as a causal LM (``GPT2LMHeadModel``, ...).

    Args:
        model: the network.
    Returns:
        bool.
    """
    name = type(model).__name__
    if name.endswith("ForCausalLM"):
        return True
    if "transformers" not in sys.modules:  # not a HuggingFace model
        return False
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover - another transformers layout
        return False
    names = set()
    for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update(v if isinstance(v, (tuple, list)) else (v,))
    return name in names



# ---- collection: the valuer -------------------------------------------------------------------------------------

def _n_rows(n) -> int:
    try:
        if isinstance(n, bool):
            raise TypeError
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"SequenceValuer: n must be a positive integer (the number of sequences), got {n!r}") from None
    if n < 1:
        raise ValueError(f"SequenceValuer: n must be a positive integer (the number of sequences), got {n}")
    return n


def _choice(name: str, value, allowed: tuple):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


class SequenceValuer:
    """CHG Shapley values of the sequences (or tokens) of a data set over a training run, with
    :class:`chg.EpochValuer`'s verbs: :meth:`value_epoch` (the exact two-sweep pass), :meth:`add_logits` /
    :meth:`add` and :meth:`end_epoch` (ride-along, against the previous epoch's statistics), :meth:`add_validation`
    (α from a validation set), :meth:`values`. Single process (no ``torch.distributed``).

    Args:
        n: the number of sequences (indices 0..n-1), ≥ 1.
        unit: "sequence" (each sequence a player, :math:`x_i = l_i G_i`) or "token" (each valid token a player,
            :math:`x_t = \\ell_t e_t\\otimes\\tilde h_t`; values in (sequence, position) order, :attr:`token_index`).
        reduction: "mean" (default: :math:`l_i` = the sequence's mean token cross-entropy) or "sum".
        utility: "chg" (:math:`x = l\\,G`) or "gradient" (Gradient Shapley, :math:`x = G`).
        alpha: "train" (α = the mean of the players' x, Algorithm 1 line 4) or "valid" (the mean of the validation
            players' x: :meth:`add_validation`, or ``value_epoch(..., valid_loader)``).
        shift: the causal-LM shift (logits at t predict label t+1); None: decided from the model in
            :meth:`value_epoch` (:func:`causal_shift`), required for :meth:`add_logits`.
        skip_epochs: the first k epochs left out of :meth:`values` (kept in ``epoch_values``).
        vocab_chunk: vocabulary columns per chunk (default: about 2^19 elements per chunk).
    Raises:
        ValueError: an invalid n, option or skip_epochs.
    """

    def __init__(self, n: int, unit: str = "sequence", reduction: str = "mean", utility: str = "chg",
                 alpha: str = "train", shift: Optional[bool] = None, skip_epochs: int = 0,
                 vocab_chunk: Optional[int] = None):
        self.n = _n_rows(n)
        self.unit = _choice("unit", unit, UNITS)
        self.reduction = _choice("reduction", reduction, REDUCTIONS)
        options = Options(utility=utility, alpha=alpha)  # the one validator of the options (types and values)
        if options.utility not in UTILITIES:
            raise ValueError(f"utility={utility!r} is not available for sequences (Hardness Shapley's mean-loss game "
                             f"is the classifier's only); choose one of {UTILITIES}")
        self.utility, self.alpha = options.utility, options.alpha
        if shift is not None and not isinstance(shift, (bool, np.bool_)):
            raise ValueError(f"shift must be True, False or None (decided from the model), got {shift!r}")
        self.shift = None if shift is None else bool(shift)
        if isinstance(skip_epochs, bool) or not isinstance(skip_epochs, (int, np.integer)) or skip_epochs < 0:
            raise ValueError(f"skip_epochs must be an integer >= 0, got {skip_epochs!r}")
        self.skip_epochs = int(skip_epochs)
        _vocab_chunks(1, 1, vocab_chunk)  # validates it
        self.vocab_chunk = vocab_chunk
        self.epoch_values: list = []  # (N,) float64 per finished epoch (N = n, or the number of tokens)
        self._prev: Optional[tuple] = None  # (GroupStats, alpha or None) of the last finished epoch
        self._tokens: Optional[list] = None  # unit="token": per sequence (positions, targets), from the first sight
        self._reset_epoch()

    epochs = property(lambda self: len(self.epoch_values), doc="the epochs ended so far")

    def _reset_epoch(self) -> None:
        self._seen = torch.zeros(self.n, dtype=torch.bool)
        self._stats: Optional[GroupStats] = None
        self._valid: Optional[GroupStats] = None
        self._vals = self._empty()

    # ---- per batch ----------------------------------------------------------------------------------------------
    def _rows(self, indices, batch: SequenceBatch, seen: torch.Tensor, what: str) -> torch.Tensor:
        """The batch's row indices (CPU int64), checked: one per sequence, in [0, n), each once per sweep."""
        t = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"{what}: indices must be integers, got dtype {t.dtype}")
        idx = t.reshape(-1).to(device="cpu", dtype=torch.int64)
        B = batch.loss.shape[0]
        if idx.shape[0] != B:
            raise ValueError(f"{what}: {idx.shape[0]} indices for {B} sequences")
        if B and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
            raise ValueError(f"{what}: indices must lie in [0, {self.n}), got [{int(idx.min())}, {int(idx.max())}]")
        if torch.unique(idx).shape[0] != B or bool(seen[idx].any()):
            raise ValueError(f"{what}: a sequence was added twice in one epoch (each is one player, once per epoch)")
        seen[idx] = True
        return idx

    def _note_tokens(self, idx: torch.Tensor, batch: SequenceBatch) -> None:
        """unit="token": record each sequence's token positions (first sight) or check they did not change."""
        if self.unit != "token":
            return
        if self._tokens is None:
            self._tokens = [None] * self.n
        counts = batch.counts.cpu()
        for k, i in enumerate(idx.tolist()):
            pos = batch.valid[k].nonzero().squeeze(1).cpu() + int(bool(self.shift))
            known = self._tokens[i]
            if known is None:
                self._tokens[i] = (pos, batch.target[k][batch.valid[k]].cpu())
            elif known[0].shape[0] != int(counts[k]) or not torch.equal(known[0], pos):
                raise ValueError(f"unit='token': sequence {i} has other scored positions than when first seen "
                                 f"({known[0].shape[0]} then, {int(counts[k])} now): the players must stay the same")

    def _batch_stats(self, batch: SequenceBatch) -> tuple:
        """(GroupStats of the batch's players, what :meth:`_batch_values` reuses: ‖x‖² or the token factors)."""
        if self.unit == "sequence":
            return sequence_stats(batch, self.utility, self.vocab_chunk)
        f = token_factors(batch)
        return group_stats(f.err, f.feat, f.loss if self.utility == "chg" else None, f.bias), f

    def _batch_values(self, batch: SequenceBatch, reuse, stats: GroupStats, alpha) -> torch.Tensor:
        if self.unit == "sequence":
            return sequence_values(batch, stats, alpha, self.utility, reuse, self.vocab_chunk)
        f = reuse if reuse is not None else token_factors(batch)
        return values_from_factors(f.err, f.feat, f.loss if self.utility == "chg" else None, stats, alpha,
                                   bias=f.bias)

    def _empty(self):
        """An epoch's value store: (n,) NaN (sequence unit) or n per-sequence slots (token unit)."""
        return torch.full((self.n,), float("nan"), dtype=torch.float64) if self.unit == "sequence" else [None] * self.n

    def _store(self, store, idx: torch.Tensor, batch: SequenceBatch, vals: torch.Tensor) -> None:
        vals = vals.detach().cpu()
        if self.unit == "sequence":
            store[idx] = vals
            return
        for i, v in zip(idx.tolist(), torch.split(vals, batch.counts.cpu().tolist())):
            store[i] = v

    def add(self, indices, batch: SequenceBatch) -> None:
        """Ride-along's step with a batch's factors: its players are valued at once against the previous epoch's
        statistics (nothing in the first epoch) and its statistics are summed for the next.

        Args:
            indices: (B,) the sequences' row indices in [0, n) (integer tensor, array or list).
            batch: the batch's :class:`SequenceBatch` (:func:`sequence_batch`, under this valuer's reduction).
        Raises:
            ValueError: indices of another count, out of range or repeated within the epoch; a change of head
                (C, D or bias) since the previous epoch; unit="token" with other scored positions than before.
        """
        if not isinstance(batch, SequenceBatch):
            raise ValueError(f"add: batch must be a SequenceBatch (chg.sequence.sequence_batch), got "
                             f"{type(batch).__name__}")
        idx = self._rows(indices, batch, self._seen, "add")
        self._note_tokens(idx, batch)
        stats, reuse = self._batch_stats(batch)
        self._stats = stats if self._stats is None else self._stats + stats
        if self._prev is not None:
            self._store(self._vals, idx, batch, self._batch_values(batch, reuse, *self._prev))

    def add_logits(self, indices, logits: torch.Tensor, labels: torch.Tensor, feat: torch.Tensor,
                   attention_mask=None, bias: bool = True) -> None:
        """Ride-along's step in a training loop: ``logits, feat = tap.read(out)`` (a
        ``LastLayerTap(model, sequence=True)``), then ``valuer.add_logits(idx, logits, labels, feat, mask,
        tap.bias)`` — :meth:`add` of :func:`sequence_batch` under the valuer's shift and reduction.

        Args:
            indices: (B,) row indices. logits: (B, T, C) (its graph is not kept). labels: (B, T) integer (-100: not
                scored). feat: (B, T, D). attention_mask: (B, T) 0/1 or None. bias: whether the head has a bias.
        Raises:
            ValueError: the valuer's ``shift`` is None (say whether the model is a causal LM), and as
                :func:`sequence_batch` and :meth:`add`.
        """
        if self.shift is None:
            raise ValueError("add_logits: the valuer does not know whether the model is a causal LM: build it with "
                             "shift=True (logits at t predict label t+1, e.g. GPT-2) or shift=False (a token "
                             "classifier); chg.sequence.causal_shift(model) tells")
        self.add(indices, sequence_batch(logits, labels, feat, attention_mask, self.shift, self.reduction, bias,
                                         self.vocab_chunk))

    def add_validation(self, batch: SequenceBatch) -> None:
        """Validation players into this epoch's α (``alpha="valid"``): α = the mean of their x (per sequence or per
        token, as the valuer's unit). In ride-along it is the next epoch's α; :meth:`value_epoch` uses its own.

        Args:
            batch: the validation batch's :class:`SequenceBatch`.
        Raises:
            ValueError: the valuer was built with ``alpha="train"``.
        """
        if self.alpha != "valid":
            raise ValueError("add_validation: this valuer was built with alpha='train'; use alpha='valid'")
        stats = self._batch_stats(batch)[0]
        self._valid = stats if self._valid is None else self._valid + stats

    # ---- ends of epochs ---------------------------------------------------------------------------------------
    def _check_complete(self, seen: torch.Tensor, what: str) -> None:
        missing = self.n - int(seen.sum())
        if missing:
            first = (~seen).nonzero().squeeze(1)[:5].tolist()
            raise ValueError(f"{what}: {missing} of the {self.n} sequences were not added this epoch (e.g. rows "
                             f"{first}): every sequence enters each epoch's game once (a DataLoader with "
                             "drop_last=True, or a sampler over a subset?)")

    def _alpha_from(self, valid: Optional[GroupStats], what: str) -> Optional[torch.Tensor]:
        if self.alpha == "train":
            return None
        if valid is None or valid.n == 0:
            raise ValueError(f"{what}: alpha='valid' but no validation rows were given (add_validation, or "
                             "value_epoch(..., valid_loader))")
        return valid.sum / valid.n

    def _history_row(self, store, valued: bool) -> torch.Tensor:
        if self.unit == "sequence":
            return store.clone()
        if valued:
            return torch.cat(store)
        return torch.full((self.token_count,), float("nan"), dtype=torch.float64)

    def end_epoch(self) -> torch.Tensor:
        """Ride-along's end of an epoch: the epoch's values (valued batch by batch against the previous epoch's
        statistics; NaN in the first epoch, which only gathers them), and its statistics kept for the next.

        Returns:
            the epoch's values, (n,) float64 (unit="token": one per token, :attr:`token_index`), on the CPU.
        Raises:
            ValueError: no row was added, a sequence missing, alpha="valid" without validation rows.
        """
        if self._stats is None:
            raise ValueError("end_epoch: no training rows were added this epoch (add_logits / add)")
        self._check_complete(self._seen, "end_epoch")
        row = self._history_row(self._vals, self._prev is not None)
        alpha = self._alpha_from(self._valid, "end_epoch")
        self.epoch_values.append(row)
        self._prev = (self._stats, alpha)
        self._reset_epoch()
        return row

    @torch.no_grad()
    def value_epoch(self, model: nn.Module, loader, valid_loader=None, layer: Optional[nn.Linear] = None,
                    progress: Optional[bool] = None) -> torch.Tensor:
        """Algorithm 1's exact epoch values by two no-grad sweeps over ``loader`` at the current parameters (model
        in eval mode, its mode restored after): sweep 1 sums s and keeps every ‖x_i‖², sweep 2 values every
        player with eq. (3). With ``alpha="valid"`` a sweep over ``valid_loader`` first gives α.

        Args:
            model: a language model or token classifier whose output layer is an ``nn.Linear`` applied per position
                (``layer``: that layer, if not the last ``nn.Linear`` registered), returning its logits (a tensor,
                or a tuple / dict / ``ModelOutput`` holding them). loader: batches (see the module docstring) with
                an ``index`` (or a plain sequential DataLoader: rows numbered in order). valid_loader: validation
                batches (``alpha="valid"``). progress: a bar over the batches (True | False | None: on a terminal).
        Returns:
            the epoch's values (n,) float64 on the CPU (unit="token": one per token).
        Raises:
            ValueError: a head that is not an ``nn.Linear`` applied per position, batches without labels, a
                sequence missing or added twice, alpha="valid" without ``valid_loader``, and as
                :func:`sequence_batch`.
        """
        if self.alpha == "valid" and valid_loader is None:
            raise ValueError("value_epoch: alpha='valid' needs valid_loader")
        if self._stats is not None:
            raise ValueError("value_epoch: a ride-along epoch is under way (add/add_logits since the last end_epoch); "
                             "call end_epoch first")
        shift = causal_shift(model) if self.shift is None else self.shift
        if self.shift is None:
            self.shift = shift
        was_training = model.training
        model.eval()
        try:
            with LastLayerTap(model, layer, sequence=True) as tap:
                alpha = None
                if self.alpha == "valid":
                    valid = None
                    for _, batch in _batches(model, tap, valid_loader, self, "valid", progress, need_index=False):
                        stats = self._batch_stats(batch)[0]
                        valid = stats if valid is None else valid + stats
                    alpha = self._alpha_from(valid, "value_epoch")
                seen = torch.zeros(self.n, dtype=torch.bool)
                total, sq = None, torch.full((self.n,), float("nan"), dtype=torch.float64)
                for idx, batch in _batches(model, tap, loader, self, "sweep 1", progress):  # s and every ‖x‖²
                    idx = self._rows(idx, batch, seen, "value_epoch")
                    self._note_tokens(idx, batch)
                    stats, reuse = self._batch_stats(batch)
                    total = stats if total is None else total + stats
                    if self.unit == "sequence":
                        sq[idx] = reuse.cpu()
                self._check_complete(seen, "value_epoch")
                seen, store = torch.zeros(self.n, dtype=torch.bool), self._empty()
                for idx, batch in _batches(model, tap, loader, self, "sweep 2", progress):  # ⟨m, x_j⟩ and eq. (3)
                    idx = self._rows(idx, batch, seen, "value_epoch (sweep 2)")
                    reuse = sq[idx].to(batch.loss.device) if self.unit == "sequence" else None
                    self._store(store, idx, batch, self._batch_values(batch, reuse, total, alpha))
                self._check_complete(seen, "value_epoch (sweep 2: the loader gave other rows than in sweep 1)")
        finally:
            model.train(was_training)
        row = self._history_row(store, True)
        self.epoch_values.append(row)
        self._prev = (total, alpha)
        return row

    # ---- results --------------------------------------------------------------------------------------------
    @property
    def token_count(self) -> int:
        """unit="token": the number of token players N (known once every sequence was seen)."""
        if self.unit != "token" or self._tokens is None or any(t is None for t in self._tokens):
            raise ValueError("token_count: unit='token' and every sequence seen once are needed")
        return sum(t[0].shape[0] for t in self._tokens)

    @property
    def token_index(self) -> np.ndarray:
        """unit="token": (N, 2) int64, each token player's (sequence, position in the sequence's labels)."""
        self.token_count  # noqa: B018  (raises when not known)
        return torch.cat([torch.stack([torch.full_like(pos, i), pos], 1)
                          for i, (pos, _) in enumerate(self._tokens)]).numpy()

    def values(self, **meta) -> Values:
        """Each player's value averaged over the epochs it was valued in (after ``skip_epochs``), with the history.

        Args:
            **meta: settings to keep with the values (JSON-ready).
        Returns:
            :class:`chg.Values` — n sequences, or N tokens (``labels``: each token's target class; row order as
            :attr:`token_index`).
        Raises:
            ValueError: no epoch valued yet (ride-along values its first epoch as NaN: train two epochs), or only
                epochs among the first ``skip_epochs``.
        """
        history = torch.stack(self.epoch_values).numpy() if self.epoch_values else None
        kept = history[self.skip_epochs:] if history is not None else None
        if kept is None or kept.shape[0] == 0 or bool(np.isnan(kept).all()):
            raise ValueError(f"values: no epoch has been valued yet ({self.epochs} ended, skip_epochs="
                             f"{self.skip_epochs}); ride-along values start at the second epoch (the first only "
                             "gathers the statistics)")
        info = {"unit": self.unit, "reduction": self.reduction, "utility": self.utility, "alpha": self.alpha,
                "shift": self.shift, **meta}
        labels = torch.cat([t[1] for t in self._tokens]).numpy() if self.unit == "token" else None
        return Values(history, self.skip_epochs, labels=labels, meta=info)


def _read(tap: LastLayerTap, output) -> tuple:
    """``tap.read(output)`` with the sequence path's reading of its errors."""
    try:
        return tap.read(output)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"chg.sequence: the model's output layer must be an nn.Linear applied per position (the "
                         f"hooked layer is {tap.name!r}) whose output the model returns as its logits; pass "
                         f"layer=<that nn.Linear> if it is not the last one registered ({exc})") from None


def _sequential(loader) -> bool:
    return isinstance(getattr(loader, "sampler", None), SequentialSampler)


def _batches(model: nn.Module, tap: LastLayerTap, loader, valuer: SequenceValuer, desc: str,
             progress: Optional[bool], need_index: bool = True):
    """(indices, SequenceBatch) of every batch of ``loader`` through ``model`` (no grad, the model's mode as it is)."""
    device = model_device(model)
    offset = 0
    total = len(loader) if hasattr(loader, "__len__") else None
    for batch in progress_bar(loader, total=total, unit="batch", desc=f"value_epoch {desc}", enabled=progress):
        if isinstance(batch, Mapping) and "labels" not in batch and "label" not in batch:
            raise ValueError(f"a batch needs its labels (B, T) under 'labels' (it has {sorted(batch)}); for a causal "
                             "LM set labels = input_ids, with -100 at padding")
        inputs, labels, idx = split_batch(batch)
        logits, feat = _read(tap, forward_batch(model, inputs, device))
        mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        labels = torch.as_tensor(labels)
        if idx is None and need_index:
            if not _sequential(loader):
                raise ValueError("value_epoch: batches without an 'index' must come from a plain sequential "
                                 "DataLoader (rows numbered in order); add each row's index to its item otherwise")
            idx = torch.arange(offset, offset + labels.shape[0])
        offset += labels.shape[0]
        yield idx, sequence_batch(logits, labels, feat, mask, valuer.shift, valuer.reduction, tap.bias,
                                  valuer.vocab_chunk)


# ---- the one-call helper: train and value --------------------------------------------------------------------

_PAD = {"labels": IGNORE_INDEX, "label": IGNORE_INDEX, "attention_mask": 0}


def _stack(values: list, key) -> torch.Tensor:
    """Items' tensors stacked, right-padded to the longest along dim 0 (labels with -100, masks with 0, else 0)."""
    ts = [torch.as_tensor(v) for v in values]
    longest = max(t.shape[0] if t.ndim else 0 for t in ts)
    if all(t.shape == ts[0].shape for t in ts):
        return torch.stack(ts)
    out = ts[0].new_full((len(ts), longest, *ts[0].shape[1:]), _PAD.get(key, 0))
    for k, t in enumerate(ts):
        out[k, :t.shape[0]] = t
    return out


def _collate(dataset, rows: list):
    """A batch of ``dataset``'s items ``rows``: dicts stacked key by key (right padding; an ``attention_mask`` is
    added when lengths differ and there is none), or ``(x, y)`` pairs of one length; each with its ``index``."""
    items = [dataset[i] for i in rows]
    index = torch.as_tensor(rows, dtype=torch.int64)
    if isinstance(items[0], Mapping):
        if "labels" not in items[0] and "label" not in items[0]:
            raise ValueError(f"the data set's items need their labels under 'labels' (they have {sorted(items[0])}); "
                             "for a causal LM set labels = input_ids, with -100 at padding")
        out = {k: _stack([it[k] for it in items], k) for k in items[0] if k != "index"}
        lengths = [len(it["labels" if "labels" in it else "label"]) for it in items]
        if len(set(lengths)) > 1 and "attention_mask" not in out:
            out["attention_mask"] = (torch.arange(max(lengths))[None] < torch.as_tensor(lengths)[:, None]).long()
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


def _loader(dataset, batch_size: int, generator: Optional[torch.Generator] = None) -> DataLoader:
    """Batches of ``dataset`` with each row's ``index``, in order or shuffled by ``generator``."""
    return DataLoader(range(len(dataset)), batch_size=batch_size, shuffle=generator is not None, generator=generator,
                      collate_fn=lambda rows: _collate(dataset, rows))


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
                    progress: Optional[bool] = None, return_valuer: bool = False):
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
        progress: a bar over the epochs (True | False | None: on a terminal). return_valuer: also return the valuer.
    Returns:
        :class:`chg.Values` (with the per-epoch history); with ``return_valuer``, ``(values, valuer)``.
    Raises:
        ValueError: unknown settings, ride-along with fewer than 2 epochs, skip_epochs not below epochs, alpha="valid"
            without ``valid_dataset``, data without labels, a head that is not an ``nn.Linear`` applied per
            position, and as :class:`SequenceValuer`.
    """
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
                            causal_shift(model) if shift is None else shift, skip_epochs, vocab_chunk)
    device = model_device(model)
    train_loader = _loader(train_dataset, batch_size, torch.Generator().manual_seed(int(seed)))
    eval_loader = _loader(train_dataset, eval_batch_size)
    valid_loader = None if valid_dataset is None else _loader(valid_dataset, eval_batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay) if optimizer == "adam" else \
        torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    tap = LastLayerTap(model, layer, sequence=True)
    model.train()
    for _ in progress_bar(range(epochs), desc=f"value_sequences ({mode})", unit="epoch", enabled=progress):
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
    return value is default or (isinstance(value, (bool, int, float, str)) and value == default)


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
            weights, label smoothing, offloaded storage), an unknown keyword, or as :class:`SequenceValuer`.
    """
    unknown = sorted(set(classifier_options) - set(_CLASSIFIER_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown keyword(s) {unknown} for a sequence valuer (unit={unit!r})")
    bad = sorted(k for k, v in classifier_options.items() if not _is_default(v, _CLASSIFIER_DEFAULTS[k]))
    if bad:
        raise ValueError(f"{bad} apply to a classifier's valuer only; a sequence valuer (unit={unit!r}) values each "
                         "sequence or token in one game under the plain cross-entropy (see chg.sequence)")
    return SequenceValuer(n, unit, reduction, utility, alpha, shift, skip_epochs, vocab_chunk)


def _describe(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"
