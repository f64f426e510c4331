r"""Theorem 1 from last-layer factors, never materialising per-sample gradients.

For a final ``nn.Linear`` (W: (C, D), bias b: (C,)) under cross-entropy, the gradient of sample i is
:math:`g_i = e_i \otimes \tilde h_i` with :math:`e_i = \mathrm{softmax}(z_i) - \mathrm{onehot}(y_i)` (C,) and
:math:`\tilde h_i = [h_i; 1]` (D+1,), laid out as the (C, D+1) matrix ``[∇W | ∇b]``. The player vectors are
:math:`x_i = l_i g_i` with :math:`l_i` the per-sample loss (CHG; ``loss=None``: :math:`l_i = 1`, Gradient Shapley). With
``feat=None`` only the bias gradient :math:`x_i = l_i e_i` is used (what the official code does).

All that eq. (3) needs are the six inner products, each cheap in factored form:

.. math::  \|x_i\|^2 = l_i^2\|e_i\|^2(\|h_i\|^2+1),\quad s = E^\top\mathrm{diag}(l)\tilde H\ (C\times(D+1)),\quad
           \langle M, x_j\rangle = l_j\, e_j^\top M \tilde h_j .

One computation, two passes over the features in chunks of rows (pass 1: s and every ‖x_i‖²; pass 2: ⟨M, x_j⟩).
Cost O(n·C·D); extra memory O(n·C + chunk·D). The bias-only case is the same computation with D = 0 features.

Precision: l·e, every per-sample combination, the sums and the values are float64. The products with the features
(Σ l_i e_i h_iᵀ, M h_j, ‖h_i‖²) are taken in the features' dtype (half precision raised to float32) of the features
centred on a reference point μ (the mean of the first 32 rows given; μ's share is added back in float64), so that their
rounding scales with the features' spread rather than with an offset they share: for float32 features the values are
within ~1e-6 of their spread of the float64 ones even for features 1000 ± 0.001 (tested). Features whose shared offset
is not larger than their spread (‖μ‖ ≤ the rms distance of those rows from μ, ``CENTRE_RATIO``: zero-mean and ReLU
features, for instance) are used as they are: centring them gains at most a factor √2 in rounding (the offset test of
tests/test_factored.py at offset/spread 1, seeds 3–5: 1.8–3.3e-6 of the spread uncentred, 1.1–1.9e-6 centred) and
costs a read and a write of every feature per pass. :class:`chg.EpochValuer` stores its features already centred (on
the mean of the epoch's first rows: the subtraction rides on the copy), so its passes never subtract. A row far
below μ (a row of zeros among features near 1e4: its ‖h_j‖² and M h_j cancel between the centred terms) is found in
pass 2 (its ‖x_j‖² below 1/16 of its centred terms) and recomputed from h_j in float64. Autocast is
switched off inside. Pass float64 tensors when you need float64 end to end.
The group statistics (n, s, Σ‖x_i‖²) are sums, so per-class groups and multi-process runs just add them up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .renames import OPTIONS_REMOVED, renamed
from .shapley import check_finite, check_n, coefficients, mean_game_coefficients

__all__ = ["Options", "UTILITIES", "GRADIENTS", "ALPHAS", "GroupStats", "group_stats", "values_from_factors",
           "factored_shapley", "shapley_from_factors", "utility_stats", "utility_values", "epoch_values",
           "alpha_from_validation", "stats_by_group", "flag"]

CHUNK_ELEMENTS = 1 << 22  # CPU: features per chunk (16 MiB of float32): few enough chunks that the per-op cost of the
# float64 per-row work stays small beside the GEMMs (measured: 4 MiB chunks cost 4–15% more at n = 10⁶, D = 512)
CHUNK_CLASS_ELEMENTS = 1 << 18  # CPU: and at most this many (row, class) entries (2 MiB per (rows, C) float64 buffer:
# with C = 1,000 the per-chunk temporaries stay small beside the epoch's rows)
CHUNK_ROWS_ACCELERATOR = 1 << 18  # GPU: large chunks (launch overhead dominates, memory is plentiful)
CENTRE_RATIO = 1.0  # features are centred on μ when ‖μ‖ > CENTRE_RATIO · their rms spread (see _Passes)

UTILITIES = ("chg", "gradient", "hardness")
GRADIENTS = ("full", "bias")
ALPHAS = ("train", "valid")


def flag(v, name: str) -> bool:
    """A switch given by a user: True or False (a NumPy bool too), never a string or a number read as one.

    Args:
        v: the value. name: its name, for the message.
    Returns:
        ``v`` as a bool.
    Raises:
        TypeError: not a bool (``"False"`` would read as True).
    """
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {v!r}")
    return bool(v)


@renamed("0.2.0", weighting="utility")
@dataclass(frozen=True)
class Options:
    r"""Which values of a group: the one options type of every entry point, validated once, on construction.

    Args:
        utility: the utility the values are computed under (the paper's and pyDVL's word; ``weighting`` before 0.2.0):
            ``"chg"`` — CHG Shapley, eq. (3) with :math:`x_i = l_i g_i`; ``"gradient"`` — Gradient Shapley,
            :math:`x_i = g_i`; ``"hardness"`` — Hardness Shapley, :math:`U(S) = \frac{1}{|S|}\sum_{i\in S} l_i`.
        gradient: ``"full"`` — :math:`g_i = e_i\otimes[h_i; 1]` (W and b of the output layer; W only for a
            bias-free head) or ``"bias"`` — :math:`g_i = e_i` (the bias gradient, as the official code).
        alpha: where the target α comes from: ``"train"`` — the mean of the players' x_i (Algorithm 1, line 4) or
            ``"valid"`` — the mean of l_i g_i over a validation set. Hardness has no target: only ``"train"``.
        per_class: each class its own game (α and the statistics per class, as in Algorithm 2).
    Raises:
        TypeError: an option of the wrong type (a string is needed; per_class a bool).
        ValueError: naming the option and its allowed values.
    """
    utility: str = "chg"
    gradient: str = "full"
    alpha: str = "train"
    per_class: bool = False

    def __post_init__(self):
        for name, allowed in (("utility", UTILITIES), ("gradient", GRADIENTS), ("alpha", ALPHAS)):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string, one of {allowed}, got {value!r}")
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        object.__setattr__(self, "per_class", flag(self.per_class, "per_class"))
        if self.utility == "hardness" and self.alpha == "valid":
            raise ValueError("utility='hardness' (mean loss over S) has no target: alpha='valid' does not apply")


@dataclass
class GroupStats:
    """Sufficient statistics of a player group for eq. (3), all sums (so groups, batches and ranks add up with ``+``).

    Attributes:
        n: the group's size (int).
        sum: Σ x_i, a (C, D+1) float64 tensor ((C, D) bias-free head, (C,) bias only, (1,) Σ l_i for Hardness
            Shapley).
        sum_sq_norms: Σ‖x_i‖², 0-d float64 (0 for Hardness Shapley).
    """
    n: int
    sum: torch.Tensor
    sum_sq_norms: torch.Tensor

    def __add__(self, other: "GroupStats") -> "GroupStats":
        return GroupStats(self.n + other.n, self.sum + other.sum, self.sum_sq_norms + other.sum_sq_norms)

    def all_reduce(self) -> "GroupStats":
        """Sum the statistics over all ranks of the default ``torch.distributed`` process group (in place; a
        collective: every rank must call it, on the device its backend needs).

        Returns:
            ``self``, now holding the sums over all ranks.
        """
        import torch.distributed as dist
        flat = torch.cat([torch.tensor([float(self.n)], dtype=torch.float64, device=self.sum.device),
                          self.sum.reshape(-1), self.sum_sq_norms.reshape(1)])
        dist.all_reduce(flat)
        self.n = int(round(flat[0].item()))
        self.sum = flat[1:-1].reshape(self.sum.shape)
        self.sum_sq_norms = flat[-1]
        return self


def _validate(err, feat, loss, bias=True):
    """Types, dtypes, shapes and devices. Finiteness is checked once on O(n) results (NaN/Inf propagate into them)."""
    if not bias and feat is None:
        raise ValueError("bias=False (a bias-free output layer) needs the features: without them there is no gradient "
                         "left to value (the bias-only gradient does not exist)")
    for name, t in (("err", err), ("feat", feat), ("loss", loss)):
        if t is None and name != "err":
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.device != err.device:
            raise ValueError(f"{name} is on {t.device} but err is on {err.device}: put all factors on one device")
    if err.ndim != 2:
        raise ValueError(f"err must be 2-D (n, C), got shape {tuple(err.shape)}")
    n = err.shape[0]
    if feat is not None:
        if feat.ndim != 2:
            raise ValueError(f"feat must be 2-D (n, D), got shape {tuple(feat.shape)}")
        if feat.shape[0] != n:
            raise ValueError(f"feat has {feat.shape[0]} rows but err has {n}")
    if loss is not None and (loss.ndim != 1 or loss.shape[0] != n):
        raise ValueError(f"loss must be 1-D with n = {n} entries, got shape {tuple(loss.shape)}")
    return n


def _require_finite(result: torch.Tensor, err, feat, loss, what: str) -> None:
    """One check on an O(n) result (its sum: one reduction; elementwise only if the sum is not finite); only on
    failure are the inputs scanned to name the culprit."""
    if math.isfinite(result.sum()) or bool(torch.isfinite(result).all()):
        return
    for name, t in (("loss (per-sample)", loss), ("err (softmax error)", err),
                    ("feat (penultimate features)", feat)):
        if t is not None:
            check_finite(t, name)
    raise ValueError(f"{what} overflowed although every input is finite: rescale the features or losses")


class _Passes:
    """The rows ready for the two passes: l·e (n, C) float64; the features h (n, D) as given ((n, 0) when bias only);
    the compute dtype (the features', half precision raised to float32; float64 when bias only); the reference point
    μ (D,) in that dtype and in float64 — the caller's ``offset`` (features already centred), else the mean of the
    first 32 rows when it is large beside their spread (``centre``), else 0; ``bias`` (h̃ = [h; 1] or h); the chunks
    of rows."""

    def __init__(self, err, feat, loss, bias, offset=None):
        n = err.shape[0]
        self.err, self.loss = err, loss
        if feat is None:
            self.h, self.dtype = err.new_empty((n, 0), dtype=torch.float64), torch.float64
        else:
            self.h = feat
            self.dtype = torch.float32 if feat.dtype in (torch.float16, torch.bfloat16) else feat.dtype
        self.bias = bias
        D = self.h.shape[1]
        self.given = offset is not None and D > 0  # the features are h − offset already (the row store's)
        if self.given:
            self.mu = offset.to(device=self.h.device, dtype=self.dtype)
        else:
            self.mu = (torch.mean(self.h[:32], 0, dtype=self.dtype) if n
                       else self.h.new_zeros(D, dtype=self.dtype))  # (D,)
        # centre only features whose shared offset is not small beside their spread (else the rounding of h and of
        # h − μ differ by at most √(1 + CENTRE_RATIO²), and the subtraction — a read and a write of every feature per
        # pass — is skipped): zero-mean features sit near 0, ReLU features near 0.7, features 1 ± 0.1 at 10
        self.centre = self.given or bool(n and D and self.mu.square().sum() > CENTRE_RATIO ** 2 * torch.mean(
            (self.h[:32].to(self.dtype) - self.mu).square().sum(1)))
        if not self.centre:
            self.mu = self.mu.zero_()
        self.mu64 = self.mu.to(torch.float64)
        step = (CHUNK_ROWS_ACCELERATOR if err.device.type != "cpu"
                else max(256, min(CHUNK_ELEMENTS // max(D, 1), CHUNK_CLASS_ELEMENTS // max(err.shape[1], 1))))
        self.chunks = [slice(a, min(n, a + step)) for a in range(0, n, step)]
        self._kept = None  # (rows, h − μ) of a group that is one chunk: pass 2 reuses pass 1's
        self._le_kept = None  # l·e of a group that is one chunk (the same: made once for both passes)
        # several chunks: every per-chunk temporary lives in one scratch buffer, reused by every chunk of both passes
        # (no allocation per chunk, so the heap does not grow by freed chunks: peak = inputs + one chunk's buffers)
        C, m = err.shape[1], min(step, n)
        many = len(self.chunks) > 1
        # centred features: the GEMMs carry one more row / column for μ's share of ‖x_i‖², 2‖l_i e_i‖² μ·(h_i − μ)
        # (pass 1: Σ_i ‖l_i e_i‖² (h_i − μ); pass 2: μ·(h_j − μ) per row) — no separate read of the features for it
        self.k = C + 1 if self.centre else C
        self._w = None  # (n,) ‖l_i e_i‖² float64, from pass 1 for pass 2's share (centred only)
        self._hc = (self.h.new_empty((m, D), dtype=self.dtype)  # h − μ (or h raised from half precision)
                    if many and D and ((self.centre and not self.given) or self.h.dtype != self.dtype) else None)
        # the per-row work over the C classes runs on class-major (C, m) blocks: a row's C entries apart by m, so
        # every elementwise op and the sums over classes run along long rows (with C ≈ 10, row-major (m, C) ops spend
        # most of their time on loops of C); flat buffers, so that a short last chunk's (C, m') view is contiguous
        self._le = err.new_empty(C * m, dtype=torch.float64) if many else None  # l·e, class-major
        self._hm = err.new_empty(self.k * m, dtype=self.dtype) if many else None  # [l·e; w] or (h − μ)[m_feat; μ]ᵀ
        self._hm64 = err.new_empty(C * m, dtype=torch.float64) if many else None
        self._s = err.new_empty((self.k, D), dtype=self.dtype) if many else None  # one chunk's [l e; w] (h − μ)

    @staticmethod
    def _view(buf, rows):
        return None if buf is None else buf[:rows.stop - rows.start]

    @staticmethod
    def _block(buf, k, rows):
        """A contiguous (k, m) view of a flat scratch buffer for the chunk's m rows (None without one)."""
        m = rows.stop - rows.start
        return None if buf is None else buf[:k * m].view(k, m)

    def le(self, rows):
        """l_i e_i of the chunk's rows, class-major: (C, m) float64 (made per chunk: never an (n, C) float64 copy)."""
        out = self._block(self._le, self.err.shape[1], rows)
        if out is None:  # one chunk: a new tensor, kept for pass 2
            if self._le_kept is None:
                e = self.err.new_empty((self.err.shape[1], rows.stop - rows.start), dtype=torch.float64)
                e.copy_(self.err[rows].T)  # always a new tensor: err itself is never changed
                self._le_kept = e if self.loss is None else e.mul_(self.loss[rows].to(torch.float64))
            return self._le_kept
        out.copy_(self.err[rows].T)
        return out if self.loss is None else out.mul_(self.loss[rows].to(torch.float64))

    def centred(self, rows):
        """h − μ of the chunk's rows (m, D) in the compute dtype (pass 1's, when the group is one chunk)."""
        if self._kept is not None and self._kept[0] == rows:
            return self._kept[1]
        if self.given or not self.centre:  # the features as given (half precision raised to the compute dtype)
            h = self.h[rows]
            if h.dtype == self.dtype:
                return h
            return self._view(self._hc, rows).copy_(h) if self._hc is not None else h.to(self.dtype)
        hc = torch.sub(self.h[rows], self.mu, out=self._view(self._hc, rows)) if self._hc is not None else \
            torch.sub(self.h[rows], self.mu)
        if len(self.chunks) == 1:
            self._kept = (rows, hc)
        return hc

    def stats_and_sq_norms(self):
        """Pass 1: s = Σ l_i e_i ⊗ h̃_i (C, D+bias) float64, Σ‖x_i‖² (a float64 scalar tensor) and every ‖x_i‖² (n,)
        float64 — for centred features without the share 2‖l_i e_i‖² μ·(h_i − μ), which :meth:`dots` adds (pass 2's
        GEMM gives μ·(h_i − μ)); Σ‖x_i‖² has it (pass 1's GEMM gives Σ‖l_i e_i‖² (h_i − μ)). Every feature is read
        twice here: the GEMM and the row norms."""
        C, D, k = self.err.shape[1], self.h.shape[1], self.k
        s_feat = self.err.new_zeros((k, D), dtype=torch.float64)  # [Σ l e (h − μ)ᵀ; Σ ‖l e‖² (h − μ)ᵀ] (k, D)
        s_bias = self.err.new_zeros(C, dtype=torch.float64)  # Σ l e (C,)
        # ‖l_i e_i‖² (‖h_i − μ‖² + ‖μ‖² + bias) (n,), written chunk by chunk into one array (no list of small
        # long-lived chunks between the big temporaries: the heap could not give their memory back)
        n = self.err.shape[0]
        sq = self.err.new_empty(n, dtype=torch.float64)
        w_all = self.err.new_empty(n, dtype=torch.float64) if self.centre else None
        const = self.mu64 @ self.mu64 + self.bias
        for rows in self.chunks:
            le = self.le(rows)  # (C, m) float64
            hc = self.centred(rows)  # (m, D)
            if self._hm64 is None:  # ‖l_i e_i‖² (m,) float64, in place in sq
                w = torch.linalg.vecdot(le, le, dim=0, out=sq[rows])
            else:  # (the squares in pass 2's scratch: no temporary per chunk)
                w = torch.sum(torch.mul(le, le, out=self._block(self._hm64, C, rows)), 0, out=sq[rows])
            if w_all is not None:
                w_all[rows] = w
            if self._hm is None:  # one chunk: [l e; w] in dtype, then the (k, D) GEMM, summed in float64
                a = le.to(self.dtype) if k == C else torch.cat([le, w[None, :]], 0).to(self.dtype)
                s_feat.add_(a @ hc)
            else:  # the same in the scratch buffers
                a = self._block(self._hm, k, rows)
                a[:C].copy_(le)
                if k > C:
                    a[C].copy_(w)
                s_feat.add_(torch.mm(a, hc, out=self._s))
            s_bias.add_(le.sum(1))
            h_sq = torch.linalg.vector_norm(hc, dim=1).square_()
            w.mul_(h_sq.to(torch.float64).add_(const))  # sq[rows] = ‖l_i e_i‖² (‖h_i − μ‖² + ‖μ‖² + bias)
        sum_sq = sq.sum()
        if self.centre:
            sum_sq = sum_sq + 2 * (s_feat[C] @ self.mu64)
            s_feat = s_feat[:C]
        self._w = w_all
        s_feat.addr_(s_bias, self.mu64)  # + (Σ l e) μᵀ
        s = torch.cat([s_feat, s_bias[:, None]], 1) if self.bias else s_feat
        return s, sq, sum_sq  # ‖x_i‖² = ‖l_i e_i‖² ‖h̃_i‖²

    def dots(self, m, sq=None):
        """Pass 2: ⟨m, x_j⟩ = l_j e_jᵀ m h̃_j for every row (n,) float64; ``m`` (C, D+bias) float64. ``sq``: pass 1's
        ‖x_j‖² (n,) float64, completed in place with the share of μ (centred features), or None."""
        C, D = self.err.shape[1], self.h.shape[1]
        m_feat = m[:, :D].to(self.dtype)  # (C, D)
        if self.centre:  # (C,) μ's and the bias' share; μ as one more row: the GEMM gives μ·(h_j − μ) too
            b = torch.addmv(m[:, D], m[:, :D], self.mu64) if self.bias else m[:, :D] @ self.mu64
            m_feat = torch.cat([m_feat, self.mu[None, :]], 0)  # (C + 1, D)
        else:
            b = m[:, D] if self.bias else None
        share = sq is not None and self.centre
        if share and self._w is None:
            raise ValueError("dots: the share of μ in ‖x_j‖² needs pass 1 first (stats_and_sq_norms)")
        out = self.err.new_empty(self.err.shape[0], dtype=torch.float64)  # l_j e_jᵀ (m_feat (h_j − μ) + b) (n,)
        for rows in self.chunks:
            hc = self.centred(rows)
            r = rows.stop - rows.start
            # the GEMM writes row-major (m, k) (MKL: its (k, m) form takes 1.7× as long at D = 512), then a row's C
            # products go class-major with the float64 copy that was needed anyway
            if self._hm is None:
                prod = F.linear(hc, m_feat)  # (m, k) in dtype
                hm = hc.new_empty((C, r), dtype=torch.float64).copy_(prod[:, :C].T)
            else:
                prod = torch.matmul(hc, m_feat.T, out=self._hm[:r * self.k].view(r, self.k))
                hm = self._block(self._hm64, C, rows).copy_(prod[:, :C].T)
            if b is not None:
                hm.add_(b[:, None])
            le = self.le(rows)
            if self._hm is None:
                torch.linalg.vecdot(le, hm, dim=0, out=out[rows])
            else:  # in the scratch: no temporary per chunk
                torch.sum(hm.mul_(le), 0, out=out[rows])
            if share:  # ‖x_j‖² += 2 ‖l_j e_j‖² μ·(h_j − μ)
                before = sq[rows].clone()  # ‖l_j e_j‖² (‖h_j − μ‖² + ‖μ‖² + bias)
                sq[rows].add_(self._w[rows] * prod[:, C].to(torch.float64), alpha=2)
                self._far_rows(rows, hc, le, before, m, out, sq)
        return out

    def _far_rows(self, rows, hc, le, before, m, out, sq):
        """Rows whose features lie far below μ (a row of zeros among features near 1e4): there M h_j = M(h_j − μ) + Mμ
        and ‖h_j‖² = ‖h_j − μ‖² + ‖μ‖² + 2μ·(h_j − μ) cancel, and the float32 terms lose ε·(‖h_j − μ‖² + ‖μ‖²) /
        ‖h̃_j‖² of them. Rows where ‖x_j‖² came out below 1/16 of ``before`` (its terms without the share of μ: a loss
        of more than 32ε; rare) get both again from h_j = (h_j − μ) + μ in float64: ⟨m, x_j⟩ in ``out`` and ‖x_j‖² =
        ‖l_j e_j‖² (‖h_j‖² + bias) in ``sq``. ``le``: the chunk's l·e (C, m); ``m``: (C, D+bias) float64."""
        far = (sq[rows] < before / 16).nonzero().squeeze(1)
        if far.numel() == 0:
            return
        D = self.h.shape[1]
        h = hc[far].to(torch.float64).add_(self.mu64)  # (f, D) the rows' features, float64
        hm = h @ m[:, :D].T  # (f, C)
        if self.bias:
            hm.add_(m[:, D])
        out[rows.start + far] = torch.linalg.vecdot(le[:, far].T, hm)
        sq[rows.start + far] = self._w[rows.start + far] * (torch.linalg.vecdot(h, h) + self.bias)


@renamed("0.2.0", weight="loss")
def group_stats(err: torch.Tensor, feat: Optional[torch.Tensor] = None,
                loss: Optional[torch.Tensor] = None, bias: bool = True) -> GroupStats:
    r"""Pass 1 of eq. (3): the statistics n, :math:`s = \sum_i l_i e_i \otimes \tilde h_i` and :math:`\sum_i\|x_i\|^2`.

    Args:
        err: (n, C) floating softmax − onehot. feat: (n, D) floating penultimate features, or None (bias gradient
            only). loss: (n,) floating per-sample loss (CHG), or None (Gradient Shapley). bias: h̃ = [h; 1] (True) or
            h (a bias-free output layer). n = 0 is allowed (zeros), so that every rank can take part in the all-reduce.
    Returns:
        :class:`GroupStats` with ``sum`` (C, D+1), (C, D) or (C,) float64 on ``err``'s device.
    Raises:
        ValueError: on dtypes, shapes or devices that do not match, NaN/Inf inputs.
    """
    _validate(err, feat, loss, bias)
    fac = _Passes(err, feat, loss, bias)
    with torch.autocast(err.device.type, enabled=False):  # inside an AMP step, keep our precision
        s, sq, sum_sq = fac.stats_and_sq_norms()
    _require_finite(sq, err, feat, loss, "‖x_i‖²")
    _require_finite(s, err, feat, loss, "Σ x_i")
    _require_finite(sum_sq, err, feat, loss, "Σ ‖x_i‖²")
    return GroupStats(err.shape[0], s if feat is not None else s[:, 0], sum_sq)


def _eq3_terms(n: int, s: torch.Tensor, alpha):
    """From a group's size and Σx_i (float64): the coefficients c, m = c2·s + c5·α (so that c2⟨s,x_j⟩ + c5⟨x_j,α⟩
    = l_j e_jᵀ m h̃_j) and the constant c3‖s‖² + c6⟨s,α⟩ (the c4·Σ‖x_i‖² term is added by the caller)."""
    check_n(n)
    c = coefficients(n)
    flat = s.reshape(-1)
    if alpha is None:  # α = s/n: m and the constant are multiples of s and ‖s‖²
        return c, (c.dot_sum + c.dot_alpha / n) * s, (c.sum_norm_sq + c.sum_dot_alpha / n) * (flat @ flat)
    if torch.as_tensor(alpha).numel() != s.numel():
        raise ValueError(f"alpha has {torch.as_tensor(alpha).numel()} entries; expected {s.numel()} (shape "
                         f"{tuple(s.shape)}: C rows, D (+1 with a bias, last) columns)")
    a = torch.as_tensor(alpha).to(device=s.device, dtype=torch.float64).reshape(s.shape)
    check_finite(a, "alpha")
    return c, c.dot_sum * s + c.dot_alpha * a, c.sum_norm_sq * (flat @ flat) + c.sum_dot_alpha * (flat @ a.reshape(-1))


def _eq3(fac: _Passes, n: int, s: torch.Tensor, sum_sq_norms, sq: torch.Tensor, alpha, partial: bool) -> torch.Tensor:
    """Eq. (3) for the rows of ``fac``: pass 2 with the group's n, s (C, D+bias) and Σ‖x_i‖², the rows' ‖x_i‖² —
    pass 1's (``partial``: pass 2 completes them in place) or complete ones."""
    c, m, const = _eq3_terms(n, s, alpha)
    dots = fac.dots(m, sq if partial else None)
    return dots.add_(sq, alpha=c.sq_norm).add_(const + c.sum_sq_norms * sum_sq_norms)


def _group_values(err, feat, loss, alpha, bias=True):
    """Values of one whole group: pass 1, then pass 2 (float64 out, on ``err``'s device)."""
    _validate(err, feat, loss, bias)
    fac = _Passes(err, feat, loss, bias)
    with torch.autocast(err.device.type, enabled=False):
        s, sq, sum_sq = fac.stats_and_sq_norms()
        out = _eq3(fac, err.shape[0], s, sum_sq, sq, alpha, True)
    _require_finite(out, err, feat, loss, "the values")
    return out


@renamed("0.2.0", weight="loss")
def values_from_factors(err: torch.Tensor, feat: Optional[torch.Tensor], loss: Optional[torch.Tensor],
                        stats: GroupStats, alpha: Optional[torch.Tensor] = None,
                        sq_norms: Optional[torch.Tensor] = None, bias: bool = True) -> torch.Tensor:
    r"""Eq. (3), :math:`\phi_j`, for the rows given, players of the group described by ``stats`` (which may span more
    rows or ranks: Algorithm 1 line 6 with the all-reduced statistics).

    Args:
        err, feat, loss, bias: the rows' factors, as in :func:`group_stats` (the same ``bias`` as for ``stats``).
        stats: the group's :class:`GroupStats`. alpha: the target, shape of ``stats.sum`` (or its flattening),
            default ``stats.sum / stats.n``. sq_norms: the rows' ‖x_i‖² (m,) if known (else pass 1 computes them).
    Returns:
        (m,) float64 on ``err``'s device.
    Raises:
        ValueError: on mismatched shapes (also against ``stats``), dtypes, devices, NaN/Inf, ``stats.n`` < 1.
    """
    _validate(err, feat, loss, bias)
    if feat is not None and (stats.sum.ndim != 2 or stats.sum.shape[1] != feat.shape[1] + bias):
        raise ValueError(f"stats are of gradients of shape {tuple(stats.sum.shape)} but these factors give "
                         f"({err.shape[1]}, {feat.shape[1] + bias}) (features {'with' if bias else 'without'} bias)")
    fac = _Passes(err, feat, loss, bias)
    with torch.autocast(err.device.type, enabled=False):
        sq = fac.stats_and_sq_norms()[1] if sq_norms is None else sq_norms.to(torch.float64)
        out = _eq3(fac, stats.n, stats.sum.reshape(err.shape[1], -1), stats.sum_sq_norms, sq, alpha, sq_norms is None)
    _require_finite(out, err, feat, loss, "the values")
    return out


@renamed("0.2.0", weight="loss")
def factored_shapley(err: torch.Tensor, feat: Optional[torch.Tensor] = None, loss: Optional[torch.Tensor] = None,
                     alpha: Optional[torch.Tensor] = None, groups=None, bias: bool = True) -> torch.Tensor:
    r"""Theorem 1 (eq. 3) values of :math:`x_i = l_i\, e_i\otimes[h_i;1]` (or :math:`l_i e_i` when ``feat`` is None).

    Args:
        err: (n, C) floating softmax − onehot. feat: (n, D) floating penultimate features, or None (bias only).
        loss: (n,) floating per-sample loss for CHG Shapley, None (all ones) for Gradient Shapley.
        alpha: the target (shape of Σ x_i: (C, D+1), (C, D) bias-free, (C,) bias only), default the group mean
            (Algorithm 1, line 4); with ``groups``, a dict {group: alpha}.
        groups: (n,) integer labels (tensor, array or list): values within each group separately (the per-class
            games of Algorithm 2). bias: False for a bias-free output layer, :math:`x_i = l_i\, e_i\otimes h_i`.
    Returns:
        (n,) float64 values on ``err``'s device.
    Raises:
        ValueError: on shapes, dtypes or devices that do not match, NaN/Inf, an empty group, a bad ``alpha``.
    """
    if groups is None:
        return _group_values(err, feat, loss, alpha, bias)
    groups = _groups(groups, err.shape[0], err.device)
    if alpha is not None and not isinstance(alpha, dict):
        raise ValueError(f"with groups, alpha must be a dict {{group: alpha}} (one target per group), got "
                         f"{type(alpha).__name__}")
    out = torch.empty(err.shape[0], dtype=torch.float64, device=err.device)
    for g, idx in _group_rows(groups):
        if alpha is not None and g not in alpha:
            raise ValueError(f"alpha is a dict of per-group targets but has no entry for group {g}")
        out[idx] = _group_values(err[idx], None if feat is None else feat[idx], None if loss is None else loss[idx],
                                 None if alpha is None else alpha[g], bias)
    return out


def _groups(groups, n: int, device) -> torch.Tensor:
    """Group labels as a (n,) integer tensor on ``device``, from a tensor, a NumPy array or a list."""
    g = groups if isinstance(groups, torch.Tensor) else torch.as_tensor(np.asarray(groups))
    if g.dtype.is_floating_point or g.dtype.is_complex or g.dtype == torch.bool:
        raise ValueError(f"groups must be integer labels, got dtype {g.dtype}")
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(f"groups must be 1-D with {n} entries, got shape {tuple(g.shape)}")
    return g.to(device)


def _group_rows(groups: torch.Tensor):
    """(label, row indices) of every group present."""
    for g in torch.unique(groups).tolist():
        yield g, (groups == g).nonzero().squeeze(1)


def _players(factors, options: Options):
    """(err, feat, loss, bias) of the players x_i = l_i e_i ⊗ h̃_i under ``options`` (CHG or Gradient Shapley)."""
    bias = getattr(factors, "bias", True)
    if options.gradient == "bias" and not bias:
        raise ValueError("gradient='bias' values the bias gradient, but these factors are of a bias-free output layer "
                         "(Factors.bias is False); use gradient='full' (the gradient of W, e ⊗ h)")
    return (factors.err, factors.feat if options.gradient == "full" else None,
            factors.loss if options.utility == "chg" else None, bias)


def _loss64(factors) -> torch.Tensor:
    loss = factors.loss
    if not isinstance(loss, torch.Tensor) or not loss.dtype.is_floating_point or loss.ndim != 1:
        raise ValueError(f"loss must be a 1-D floating tensor (n,), got {getattr(loss, 'shape', type(loss))}")
    return loss.to(torch.float64)


def utility_stats(factors, options: Options) -> GroupStats:
    r"""The statistics of one group under ``options``' utility — all sums, so groups, batches and ranks add up.

    Args:
        factors: :class:`chg.lastlayer.Factors` of the group's rows (loss (n,), err (n, C), feat (n, D), bias).
        options: :class:`Options`.
    Returns:
        :class:`GroupStats`: for CHG / Gradient Shapley those of :func:`group_stats`; for Hardness Shapley n,
        ``sum`` = (Σ l_i,) (1,) float64 and ``sum_sq_norms`` = 0 (the mean game needs n and Σ l only).
    Raises:
        ValueError: as :func:`group_stats`, or gradient='bias' with a bias-free head.
    """
    if options.utility == "hardness":
        loss = _loss64(factors)
        check_finite(loss, "loss")
        return GroupStats(loss.shape[0], loss.sum().reshape(1), loss.new_zeros(()))
    err, feat, loss, bias = _players(factors, options)
    return group_stats(err, feat, loss, bias)


def utility_values(factors, stats: GroupStats, options: Options, alpha: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""Values of the rows of ``factors``, players of the group whose (all-reduced) statistics are ``stats``.

    CHG / Gradient Shapley: eq. (3) (:func:`values_from_factors`). Hardness Shapley: the mean game's closed form
    :math:`\phi_j = \frac{H_n - 1/n}{n-1} l_j - \frac{H_n - 1}{n(n-1)}\sum_i l_i` from n and Σ l_i.

    Args:
        factors: the rows' :class:`chg.lastlayer.Factors`. stats: from :func:`utility_stats` (summed over batches /
            ranks). options: :class:`Options`. alpha: the target of eq. (3) (shape of ``stats.sum``), None for the
            group mean; must be None for Hardness Shapley.
    Returns:
        (m,) float64 on the factors' device.
    Raises:
        ValueError: on bad inputs, ``stats.n`` < 1, an α with Hardness Shapley.
    """
    if options.utility == "hardness":
        if alpha is not None:
            raise ValueError("utility='hardness' (mean loss over S) has no target: alpha must be None")
        loss = _loss64(factors)
        check_finite(loss, "loss")
        own, total = mean_game_coefficients(check_n(stats.n))
        return own * loss + total * stats.sum.reshape(()).to(loss.device)
    err, feat, loss, bias = _players(factors, options)
    return values_from_factors(err, feat, loss, stats, alpha, bias=bias)


@renamed("0.3.0", options=OPTIONS_REMOVED)
@renamed("0.2.0", weighting="utility")
def shapley_from_factors(factors, utility: str = "chg", gradient: str = "full",
                         alpha: Optional[torch.Tensor] = None, groups=None) -> torch.Tensor:
    """Values of every sample from :class:`chg.lastlayer.Factors` under one of the paper's three utilities.

    Args:
        factors: loss (n,), err (n, C), feat (n, D) and bias of the rows.
        utility, gradient: as in :class:`Options` (strings).
        alpha: a target as in :func:`factored_shapley` (a dict {group: alpha} with ``groups``); None for the mean.
        groups: (n,) integer labels (tensor, array or list): per-group (e.g. per-class) values, for every utility.
    Returns:
        (n,) float64 on the factors' device.
    Raises:
        TypeError: an option of the wrong type.
        ValueError: an unknown option value, and bad inputs (see :func:`factored_shapley`).
    """
    options = Options(utility=utility, gradient=gradient)
    if options.utility == "hardness" and alpha is not None:
        raise ValueError("utility='hardness' (mean loss over S) has no target: alpha must be None")
    if options.utility != "hardness":
        err, feat, loss, bias = _players(factors, options)
        return factored_shapley(err, feat, loss, alpha=alpha, groups=groups, bias=bias)
    loss = factors.loss
    if groups is None:
        return utility_values(factors, utility_stats(factors, options), options)
    out = torch.empty(loss.shape[0], dtype=torch.float64, device=loss.device)
    for _, idx in _group_rows(_groups(groups, loss.shape[0], loss.device)):
        part = factors[idx]
        out[idx] = utility_values(part, utility_stats(part, options), options)
    return out


def epoch_values(factors, options: Options, groups: Optional[torch.Tensor] = None, alpha: Optional[dict] = None,
                 reduce=None, group_ids: Optional[list] = None,
                 feature_offset: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""Eq. (3) for one epoch (Algorithm 1, lines 3–4; Algorithm 2, line 7 with ``groups``): every player's value
    from the epoch's factors, each group its own game. The one computation behind :meth:`chg.EpochValuer.end_epoch`.

    Per group: pass 1 over the rows in chunks gives :math:`n`, :math:`s=\sum_i x_i` and every :math:`\|x_i\|^2` once;
    ``reduce`` (if given) sums the statistics over processes; pass 2 streams the rows again for
    :math:`\langle m, x_j\rangle`. Extra memory: one chunk of rows plus O(n) float64 (no (n, C) float64 copy).

    Args:
        factors: :class:`chg.lastlayer.Factors` of the epoch's players, each row once: loss (m,), err (m, C), feat
            (m, D) floating, ``bias``.
        options: :class:`Options` (utility, gradient; ``per_class`` and ``alpha`` are the caller's: give ``groups``
            and ``alpha``).
        groups: (m,) int64 group labels (one game per label: the per-class games), or None (one game, label 0).
        alpha: None (each group's α is its own mean, Algorithm 1 line 4) or ``{label: α}`` with α of the shape of
            :math:`\sum x_i` ((C, D+1); (C, D) bias-free; (C,) bias only); must be None for Hardness Shapley.
        reduce: None, or ``reduce(stats) -> stats`` summing a :class:`GroupStats` over processes
            (``GroupStats.all_reduce``); called once per label of ``group_ids``, on every process, even for a group
            with no rows here.
        group_ids: the labels to play (identical on every process under ``reduce``); default the labels present.
        feature_offset: None, or (D,) floating μ when ``factors.feat`` holds :math:`h_i - \mu` (features centred by the
            caller, as :class:`chg.store.RowStore` keeps them): the values are those of the features :math:`h_i`.
    Returns:
        (m,) float64 values on the factors' device (rows of a label not in ``group_ids`` are NaN).
    Raises:
        ValueError: bad factors (as :func:`group_stats`), a label without α in ``alpha``, NaN/Inf, an α with
            Hardness Shapley, or gradient='bias' with a bias-free head.
    """
    m = factors.loss.shape[0]
    out = torch.full((m,), float("nan"), dtype=torch.float64, device=factors.loss.device)
    if group_ids is None:
        group_ids = [0] if groups is None else torch.unique(groups).tolist()
    hardness = options.utility == "hardness"
    if hardness and alpha is not None:
        raise ValueError("utility='hardness' (mean loss over S) has no target: alpha must be None")
    if not hardness:
        err, feat, loss, bias = _players(factors, options)
        _validate(err, feat, loss, bias)
    for g in group_ids:
        rows = None if groups is None else (groups == g).nonzero().squeeze(1)
        if hardness:
            loss = _loss64(factors if rows is None else factors[rows])
            check_finite(loss, "loss")
            stats = GroupStats(loss.shape[0], loss.sum().reshape(1), loss.new_zeros(()))
        else:
            part = (err, feat, loss) if rows is None else (err[rows], None if feat is None else feat[rows],
                                                          None if loss is None else loss[rows])
            fac = _Passes(*part, bias, feature_offset if feat is not None else None)
            with torch.autocast(err.device.type, enabled=False):
                s, sq, sum_sq = fac.stats_and_sq_norms()
            stats = GroupStats(fac.h.shape[0], s if feat is not None else s[:, 0], sum_sq)
        if reduce is not None:
            stats = reduce(stats)
        if stats.n == 0 or (rows is not None and rows.numel() == 0) or m == 0:
            continue
        if hardness:
            own, total = mean_game_coefficients(check_n(stats.n))
            vals = own * loss + total * stats.sum.reshape(())
        else:
            if alpha is not None and g not in alpha:
                raise ValueError(f"alpha has no target for group {g}")
            a = None if alpha is None else alpha[g]
            with torch.autocast(err.device.type, enabled=False):
                vals = _eq3(fac, stats.n, stats.sum.reshape(err.shape[1], -1), stats.sum_sq_norms, sq, a, True)
            _require_finite(vals, *part, "the values")
        if rows is None:
            out = vals
        else:
            out[rows] = vals
    return out


def alpha_from_validation(valid: dict, group_ids: list, reduce=None) -> dict:
    r"""α of every group from validation rows (``alpha="valid"``): :math:`\alpha_g = \frac{1}{|V_g|}\sum_{i\in V_g}
    l_i g_i`, the mean of the validation players' vectors of group g.

    Args:
        valid: {group: :class:`GroupStats`} of the validation rows seen here (:func:`utility_stats`; at least one).
        group_ids: the groups to value (identical on every process under ``reduce``). reduce: a function that sums
            a :class:`GroupStats` over processes in place (``GroupStats.all_reduce``), or None.
    Returns:
        {group: α} with α of the shape of ``GroupStats.sum``, float64.
    Raises:
        ValueError: a group to value without validation rows (on any process).
    """
    like = next(iter(valid.values()))
    out = {}
    for g in group_ids:
        stats = valid.get(g) or GroupStats(0, torch.zeros_like(like.sum), torch.zeros_like(like.sum_sq_norms))
        if reduce is not None:
            reduce(stats)
        if stats.n == 0:
            raise ValueError(f"end_epoch: class {g} has training points but no validation points; "
                             f"alpha='valid' with per_class=True needs every class in the validation set")
        out[g] = stats.sum / stats.n
    return out


def stats_by_group(factors, options: Options, groups: Optional[torch.Tensor] = None) -> dict:
    """:func:`utility_stats` of each group of rows (one group, 0, without ``groups``).

    Args:
        factors: :class:`chg.lastlayer.Factors` of the rows. options: :class:`Options`. groups: (m,) int64 labels, or
            None.
    Returns:
        {group: :class:`GroupStats`}.
    Raises:
        ValueError: as :func:`utility_stats`.
    """
    if groups is None:
        return {0: utility_stats(factors, options)}
    return {g: utility_stats(factors[idx.to(factors.err.device)], options) for g, idx in _group_rows(groups)}
