r"""The maths of a batch of sequences, as pure functions: tensors in, tensors out, no state.

A batch's factors after the causal shift and the masks (:func:`sequence_batch`; the positions scored:
:func:`scored_positions`), the differentiable per-sequence loss (:func:`sequence_loss`), the two sweeps of Algorithm 1
on a batch (:func:`sequence_stats`: s and every :math:`\|x_i\|^2`; :func:`sequence_dots`: :math:`\langle m,
x_i\rangle`), eq. (3) (:func:`sequence_values`, :func:`sequence_shapley`), the token players (:func:`token_factors`)
and :func:`causal_shift`. The derivation, the modes and the batch format: :mod:`chg.sequence` (which re-exports every
name here). The collection over an epoch: :mod:`chg.sequence_valuation`; train and value in one call:
:mod:`chg.sequence_loop`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .factored import GroupStats
from .lastlayer import Factors, loss_and_error
from .shapley import check_n, coefficients

__all__ = ["IGNORE_INDEX", "UNITS", "REDUCTIONS", "UTILITIES", "ALPHAS", "MODES", "VOCAB_CHUNK_ELEMENTS",
           "SequenceBatch", "causal_shift", "sequence_batch", "sequence_loss", "sequence_stats", "sequence_dots",
           "sequence_values", "sequence_shapley", "token_factors", "scored_positions"]

IGNORE_INDEX = -100  # HuggingFace's (and F.cross_entropy's) label of a position that is not scored
UNITS = ("sequence", "token")
REDUCTIONS = ("mean", "sum")
UTILITIES = ("chg", "gradient")
ALPHAS = ("train", "valid")
MODES = ("pass", "ride")
VOCAB_CHUNK_ELEMENTS = 1 << 19  # (tokens × vocabulary columns) per chunk: 4 MiB of float64


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
        start: (B,) int64 each sequence's first attended position (its left padding; None without an attention
            mask: 0) — a token's position in its document is its position in the batch less this.
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
    start: Optional[torch.Tensor] = None

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


def scored_positions(labels: torch.Tensor, attention_mask=None, shift: bool = False) -> torch.Tensor:
    """Which positions are players' tokens: a label that is not -100, attended where there is an attention mask,
    and, with ``shift`` (a causal LM: the logits at t predict the label at t+1), position t scoring ``labels[:, t+1]``
    with both t and t+1 attended. A document with none has no loss to value.

    Args:
        labels: (B, T) integer, -100 where not scored. attention_mask: (B, T) of 0/1, or None. shift: the causal-LM
            shift.
    Returns:
        (B, T) bool, or (B, T−1) with ``shift`` (no column when T < 2).
    """
    keep = torch.ones(labels.shape, dtype=torch.bool, device=labels.device) if attention_mask is None \
        else torch.as_tensor(attention_mask).to(labels.device).bool()
    if shift:
        labels, keep = labels[:, 1:], keep[:, :-1] & keep[:, 1:]
    return keep & (labels != IGNORE_INDEX)


def _scored(labels, attention_mask, shift: bool, reduction: str, shape: tuple, device, rows=None) -> tuple:
    """The checks and masks shared by :func:`sequence_batch` and :func:`sequence_loss`: (valid (B, T') bool, target
    (B, T') int64 (0 where not valid), weight (B, T') float64). ``rows``: the sequences' rows in the data set, named
    in the error for a sequence without a scored token (default: their positions in the batch)."""
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
    m = None
    if attention_mask is not None:
        m = torch.as_tensor(attention_mask).to(device)
        if m.shape != (B, T):
            raise ValueError(f"attention_mask must be (B, T) = ({B}, {T}), got {tuple(m.shape)}")
        if m.dtype.is_floating_point or m.dtype.is_complex or not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("attention_mask must hold 0/1 (bool or integer), as HuggingFace's tokenizers give it")
    if shift and T < 2:
        raise ValueError(f"a causal LM needs sequences of at least 2 positions (logits at t predict label t+1), "
                         f"got T = {T}")
    valid = scored_positions(labels, m, shift)  # (B, T')
    labels = labels[:, 1:] if shift else labels
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= C))
    if bool(bad.any()):
        lo, hi = int(labels[bad].min()), int(labels[bad].max())
        raise ValueError(f"labels must lie in [0, {C}) or be {IGNORE_INDEX} (not scored), got values in [{lo}, {hi}]")
    counts = valid.sum(1)
    if bool((counts == 0).any()):
        empty = (counts == 0).nonzero().squeeze(1).cpu()
        rows = None if rows is None else torch.as_tensor(rows).reshape(-1).cpu()
        which = f"sequence(s) {empty[:5].tolist()} of the batch" if rows is None or len(rows) != B else \
            f"document(s) {rows[empty][:5].tolist()} of the data set"
        why = ("every label -100 or masked, or a single token: a causal LM's logits at t predict the token at t+1, "
               "so a document needs 2 tokens" if shift else "every label -100 or masked")
        raise ValueError(f"{which} have no scored token ({why}); a document without a scored token has no loss to "
                         "value: drop it from the data set")
    target = torch.where(valid, labels, torch.zeros_like(labels)).to(torch.int64)
    valid64 = valid.to(torch.float64)
    weight = valid64 / counts[:, None].to(torch.float64) if reduction == "mean" else valid64
    return valid, target, weight


def sequence_batch(logits: torch.Tensor, labels: torch.Tensor, feat: torch.Tensor, attention_mask=None,
                   shift: bool = False, reduction: str = "mean", bias: bool = True,
                   vocab_chunk: Optional[int] = None, rows=None) -> SequenceBatch:
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
            elements per chunk). rows: (B,) the sequences' rows in the data set, named in the error for a sequence
            without a scored token (default: their positions in the batch).
    Returns:
        :class:`SequenceBatch`.
    Raises:
        ValueError: shapes that do not match, labels missing, not integers or outside [0, C) ∪ {-100}, an attention
            mask that is not 0/1, a sequence without a scored token, NaN/Inf logits at a valid position, an unknown
            reduction.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be a floating (B, T, C) tensor, got {_describe(logits)}")
    if not isinstance(feat, torch.Tensor) or feat.ndim != 3 or not feat.dtype.is_floating_point:
        raise ValueError(f"feat must be a floating (B, T, D) tensor (the output layer's input), got {_describe(feat)}")
    if feat.shape[:2] != logits.shape[:2]:
        raise ValueError(f"feat {tuple(feat.shape)} and logits {tuple(logits.shape)} must share (B, T)")
    valid, target, weight = _scored(labels, attention_mask, shift, reduction, tuple(logits.shape), logits.device,
                                    rows)
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
    start = None
    if attention_mask is not None:  # left padding: the leading zeros of each row's mask
        start = (torch.as_tensor(attention_mask).to(valid.device) == 0).to(torch.int64).cumprod(1).sum(1)
    return SequenceBatch(logits, h, target, valid, weight, lse, token_loss, (weight * token_loss).sum(1), bool(bias),
                         start)


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


def _causal_names() -> frozenset:
    """The class names HuggingFace's auto classes list as causal LMs (empty without transformers)."""
    if "transformers" not in sys.modules:  # not a HuggingFace model
        return frozenset()
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover - another transformers layout
        return frozenset()
    names = set()
    for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update(v if isinstance(v, (tuple, list)) else (v,))
    return frozenset(names)


def _causal_class(cls: type, names: frozenset) -> bool:
    """A class that is, or derives from, a causal LM class (named ``*ForCausalLM`` or listed in ``names``)."""
    return any(c.__name__.endswith("ForCausalLM") or c.__name__ in names for c in cls.__mro__)


def causal_shift(model: nn.Module, layer: Optional[nn.Linear] = None) -> bool:
    """Whether ``model``'s logits at t predict the token at t+1: its output layer belongs to a causal language model
    — a module whose class is, or derives from, one named ``*ForCausalLM`` or one HuggingFace's auto classes list as
    a causal LM (``GPT2LMHeadModel``, ...). So a subclass of one (``class MyLM(GPT2LMHeadModel)``), a module that
    wraps one (``torch.compile``'s, DDP's ``module``, a module of your own whose forward calls it) are causal LMs,
    and a model that uses one as a backbone under another head (a reward model's value head) is not.

    Args:
        model: the network. layer: its output ``nn.Linear`` (default: the last one registered,
            :func:`chg.find_last_linear`).
    Returns:
        bool.
    """
    names = _causal_names()
    if _causal_class(type(model), names):
        return True
    lms = [m for m in model.modules() if _causal_class(type(m), names)]
    if not lms:
        return False
    if layer is None:
        from .lastlayer import find_last_linear
        try:
            layer = find_last_linear(model)
        except ValueError:
            return False
    return any(any(sub is layer for sub in lm.modules()) for lm in lms)


def _describe(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"
