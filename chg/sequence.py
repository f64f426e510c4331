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

**Where the code is.** Import from this module: ``chg.sequence`` re-exports every public name of the three
modules that define them, each read top to bottom: :mod:`chg.sequence_maths` (the pure maths of a batch:
:class:`SequenceBatch`, :func:`sequence_batch`, :func:`sequence_loss`, the sweeps :func:`sequence_stats` and
:func:`sequence_dots`, eq. (3) :func:`sequence_values`, :func:`sequence_shapley`, :func:`token_factors`,
:func:`causal_shift`, :func:`scored_positions`), :mod:`chg.sequence_valuation` (:class:`SequenceValuer`, the
collection over a training run) and :mod:`chg.sequence_loop` (:func:`value_sequences`, train and value in one call,
and what :func:`chg.value_data` and :class:`chg.EpochValuer` hand over: :func:`is_sequence_data`,
:func:`sequence_valuer`; :func:`pad_items`, the batches of dict items of different lengths, which
:func:`chg.value_data` pads with too).
"""
from .sequence_maths import (IGNORE_INDEX, REDUCTIONS, UNITS, SequenceBatch, causal_shift, sequence_batch,
                             sequence_dots, sequence_loss, sequence_shapley, sequence_stats, sequence_values,
                             token_factors)
from .sequence_maths import ALPHAS, MODES, UTILITIES, VOCAB_CHUNK_ELEMENTS  # noqa: F401  importable as before
from .sequence_maths import scored_positions  # noqa: F401  importable; not in __all__ (kept as before)
from .sequence_valuation import SequenceValuer
from .sequence_loop import is_sequence_data, sequence_valuer, value_sequences
from .sequence_loop import pad_items  # noqa: F401  importable; not in __all__ (kept as before)

__all__ = ["IGNORE_INDEX", "UNITS", "REDUCTIONS", "SequenceBatch", "causal_shift", "sequence_batch", "sequence_loss",
           "sequence_stats", "sequence_dots", "sequence_values", "sequence_shapley", "token_factors",
           "SequenceValuer", "value_sequences", "is_sequence_data", "sequence_valuer"]
