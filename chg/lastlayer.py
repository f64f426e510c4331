r"""The one path from a model and its data to Theorem 1's factors: per-sample loss, error and penultimate features.

One forward pass with a hook on the model's output ``nn.Linear`` gives everything Theorem 1 needs: the features
:math:`h_i` entering that layer, its output — the logits :math:`z_i` —, the loss :math:`l_i` and the error :math:`e_i`
with :math:`\nabla_{W} l_i = e_i \otimes h_i` (and :math:`\nabla_b l_i = e_i`), so that the last-layer gradient is
:math:`g_i = e_i \otimes [h_i; 1]` (head with bias) or :math:`g_i = e_i \otimes h_i` (bias-free head). No per-sample
autograd. Two heads:

* **C ≥ 2 logits, softmax cross-entropy**: :math:`l_i = -\log\mathrm{softmax}(z_i)_{y_i}`,
  :math:`e_i = \mathrm{softmax}(z_i) - \mathrm{onehot}(y_i)` (C,); targets are class indices in [0, C).
* **one logit, binary cross-entropy on the sigmoid** (``BCEWithLogitsLoss``): :math:`l_i = \log(1 + e^{z_i}) - y_i z_i`,
  :math:`e_i = \sigma(z_i) - y_i` (1,); targets are 0 or 1.

**What the model may return** (the rule every entry point follows): the hooked layer's output *is* the logits. The
model's output must be that tensor, or a tuple / list / dict / HuggingFace ``ModelOutput`` holding it (e.g.
``(logits, features)`` or ``{"logits": ...}``); a 1-logit head's output may be squeezed to (B,). A dict /
``ModelOutput`` with a ``"logits"`` entry must hold it *there*; a model returning several heads' outputs (the hooked
layer, the last ``nn.Linear`` registered, giving another entry, or — ``layer`` not given — a later element of a tuple
whose first tensor is another ``nn.Linear``'s output on the same features) is an error that says to name the output
layer (``layer=``), never the values of the wrong head. With
``output="probabilities"`` the model may instead return the sigmoid or softmax of the logits (OpenDataVal's
classifiers do). A head applied at every position — input (B, T, D), output (B, T, C) — may be pooled by the model to
one position per row (a HuggingFace decoder's sequence classifier, ``GPT2ForSequenceClassification`` or
``LlamaForSequenceClassification``, returns the logits of each row's last non-pad token): the returned (B, C) logits
must then be an exact copy of the head's output at one position per row, and that position's input is the row's
:math:`h_i`. Anything else — post-processed logits (a temperature), the hooked layer not being the output layer,
the layer run twice in one forward pass, another output type, a final softmax / log-softmax / sigmoid (named as
such) — is a clear error, never wrong values.

**What a batch may be**: ``(x, y)`` or ``(x, y, index)`` tuples/lists (``index``: the rows' positions in the data set,
see :class:`chg.valuation.IndexedDataset`; from a DataLoader it is read as such only over that data set,
:func:`carries_index`), or a dict as HuggingFace data sets give them — the targets under
``"labels"`` (or ``"label"``), an optional ``"index"``, every other entry passed to the model as a keyword argument
(``model(**inputs)``). Tensors are moved to the model's device.

Use the tap around your own forward pass (the training step's), or :func:`compute_factors` for a no-grad pass::

    with LastLayerTap(model) as tap:
        out = model(x)                 # a tensor, a tuple, a dict or a ModelOutput holding the logits
        f = tap.factors(out, y)        # f.loss (B,), f.err (B, C), f.feat (B, D), all detached
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, SequentialSampler, Subset

from .values import is_missing

__all__ = ["Factors", "find_last_linear", "LastLayerTap", "as_targets", "factors_from_logits", "per_sample_loss",
           "loss_and_error", "check_loss", "check_logits", "check_targets", "upcast", "forward_batch", "model_device",
           "compute_factors", "split_batch", "carries_index", "unknown_index", "OUTPUTS", "BAD_TARGET"]

OUTPUTS = ("logits", "probabilities")  # what the model returns: the logits (in a container or not), or σ/softmax


@dataclass
class Factors:
    """Detached last-layer factors of a batch (Theorem 1's ingredients, never the (C, D) gradients themselves).

    Attributes:
        loss: (B,) per-sample loss :math:`l_i` (cross-entropy, or binary cross-entropy for a 1-logit head).
        err: (B, C) error :math:`e_i = \\partial l_i / \\partial z_i` (softmax − onehot, or σ(z) − y with C = 1).
        feat: (B, D) features :math:`h_i` entering the output layer.
        bias: whether the output layer has a bias, i.e. :math:`g_i = e_i \\otimes [h_i; 1]` (True) or
            :math:`e_i \\otimes h_i` (False).
    """
    loss: torch.Tensor
    err: torch.Tensor
    feat: torch.Tensor
    bias: bool = True

    def __getitem__(self, idx) -> "Factors":
        return Factors(self.loss[idx], self.err[idx], self.feat[idx], self.bias)

    def to(self, *args, **kwargs) -> "Factors":
        """The factors with ``Tensor.to(*args, **kwargs)`` applied to each tensor.

        Args:
            *args, **kwargs: as ``torch.Tensor.to`` takes them (a dtype and/or a device).
        Returns:
            :class:`Factors` (``bias`` unchanged).
        """
        return dataclasses.replace(self, loss=self.loss.to(*args, **kwargs), err=self.err.to(*args, **kwargs),
                                   feat=self.feat.to(*args, **kwargs))

    @staticmethod
    def cat(parts: list) -> "Factors":
        """Rows of several batches in order.

        Args:
            parts: a list of :class:`Factors` of one head (same C, D and ``bias``).
        Returns:
            :class:`Factors` of all rows.
        Raises:
            ValueError: no parts, or parts of a head with bias and of one without.
        """
        if not parts:
            raise ValueError("Factors.cat: no batches to concatenate")
        if len({p.bias for p in parts}) > 1:
            raise ValueError("Factors.cat: batches of a head with bias and of a head without")
        return Factors(*(torch.cat([getattr(p, k) for p in parts]) for k in ("loss", "err", "feat")), parts[0].bias)


def find_last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered in ``model`` (taken as its output layer).

    Args:
        model: any ``nn.Module``.
    Returns:
        the ``nn.Linear`` module itself.
    Raises:
        ValueError: ``model`` has no ``nn.Linear``.
    """
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise ValueError(_no_head(model) or f"{type(model).__name__} has no nn.Linear module; CHG Shapley needs a "
                         "final linear layer")
    return last


def _no_head(model: nn.Module) -> Optional[str]:
    """Why ``model`` gives no logits when it was built without a classifier head (``num_classes`` 0, as timm models
    take it), else None."""
    nc = getattr(model, "num_classes", None)
    if not isinstance(nc, int) or isinstance(nc, bool) or nc != 0:
        return None
    return (f"{type(model).__name__} has no classifier head (num_classes=0): it returns its features, not logits, so "
            "there is no output layer to value; build it with one output per class (timm.create_model(name, "
            "num_classes=C)) or give it a head (model.reset_classifier(C) for a timm model)")


def _two_heads(model: nn.Module) -> Optional[str]:
    """Why no single ``nn.Linear`` gives ``model``'s logits when it is a distilled timm model (DeiT, LeViT: the mean of
    ``head`` and ``head_dist``), else None."""
    if not (isinstance(getattr(model, "head_dist", None), nn.Module) and hasattr(model, "distilled_training")):
        return None
    return (f"{type(model).__name__} is a distilled model: its logits are the mean of two heads, (head + head_dist) "
            "/ 2 (with set_distilled_training(True), in training it returns the two heads' logits apart instead), so "
            "no one nn.Linear gives them and layer= cannot help: CHG Shapley values one output layer. Use the model "
            "without the distillation head (timm: for DeiT the name without '_distilled', e.g. deit_tiny_patch16_224; "
            "for LeViT timm.create_model(name, distilled=False))")


BAD_TARGET = -(2 ** 62)  # check_targets(defer=True): a 1-logit head's float target that is not 0 or 1, marked


def as_targets(targets, device=None):
    """Class labels given as a list, tuple, NumPy array or pandas Series, as a tensor on ``device`` (what
    :func:`check_targets` then checks); a tensor, or anything else, as it is.

    Args:
        targets: (B,) labels. device: where the tensor goes (None: the CPU).
    Returns:
        a tensor (or ``targets`` unchanged when it is a tensor or not array-like).
    Raises:
        ValueError: missing labels (None, NaN, ``pd.NA``, masked), naming their positions; labels that are not whole
            numbers (text, categories of text, dates, objects such as 1.9), saying to encode them as 0..C−1.
    """
    if isinstance(targets, torch.Tensor) or not (isinstance(targets, (list, tuple)) or hasattr(targets, "__array__")):
        return targets
    if np.ma.isMaskedArray(targets) and bool(np.ma.getmaskarray(targets).any()):
        gone = np.flatnonzero(np.ma.getmaskarray(targets).reshape(-1))[:10].tolist()
        raise ValueError(f"targets hold missing labels (masked) at batch position(s) {gone}: every training row "
                         "needs its class")
    a = np.asarray(targets.to_numpy(dtype=object) if hasattr(targets, "to_numpy") and
                   str(getattr(targets, "dtype", "")) in ("Int64", "Int32", "Int16", "Int8", "boolean", "category")
                   else targets)
    if a.dtype.kind in "mM":
        raise ValueError(f"targets must be integer class labels 0..C-1, got {a.dtype} (dates or times): encode them "
                         "first (codes, classes = pandas.factorize(y))")
    if a.dtype.kind in "OUS" or (a.dtype.kind == "f" and bool(np.isnan(a).any())):
        gone = [k for k, v in enumerate(a.reshape(-1).tolist()) if is_missing(v)]
        if gone:
            raise ValueError(f"targets hold missing labels (None, NaN or NA) at batch position(s) {gone[:10]}: every "
                             "training row needs its class")
        if a.dtype.kind in "OUS":
            try:
                whole = a.astype(np.int64)
            except OverflowError:  # inf, 1e20, 2**70: no class number
                flat = a.reshape(-1).tolist()
                k = next(i for i, v in enumerate(flat) if isinstance(v, (int, float)) and not -2**63 <= v < 2**63)
                raise ValueError(f"targets must be whole class labels 0..C-1, got {flat[k]!r} at batch position "
                                 f"{k}") from None
            except (TypeError, ValueError):
                whole = None
            if whole is not None and a.dtype.kind == "O":  # objects such as 1.9: no class (astype would cut it)
                off = np.flatnonzero(whole.reshape(-1) != a.reshape(-1).astype(np.float64))
                if off.size:
                    raise ValueError(f"targets must be whole class labels 0..C-1, got {a.reshape(-1)[off[0]]!r} at "
                                     f"batch position {int(off[0])}")
            if whole is not None:
                a = whole
            else:
                first = a.reshape(-1).tolist()[0]
                raise ValueError(f"targets must be integer class labels 0..C-1, got {a.dtype} labels such as "
                                 f"{first!r}: encode them first (codes, classes = pandas.factorize(y))")
    return torch.as_tensor(a, device=device)


def check_targets(logits: torch.Tensor, targets, defer: bool = False) -> torch.Tensor:
    """The one check of a batch's class labels against its logits: (B,) integer class indices in [0, C), or 0/1 for
    a 1-logit head (also 0.0/1.0, and (B, 1), as ``BCEWithLogitsLoss`` takes them; bool is 0/1).

    Args:
        logits: (B, C) tensor (only its shape and device are read). targets: the labels, a tensor.
        defer: False: also check the values (one host-device synchronisation). True: check type, dtype and shape
            only — no synchronisation, for a training step; a 1-logit head's float target that is not 0 or 1 is
            marked :data:`BAD_TARGET`, and the range is checked later over the whole epoch
            (:func:`chg.store.check_rows`).
    Returns:
        (B,) int64 targets on the logits' device.
    Raises:
        ValueError: not a tensor; soft (floating) labels for C ≥ 2; a shape other than (B,); a value outside the
            range (unless ``defer``).
    """
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"targets must be class labels in a tensor (an array or list where the caller takes one), "
                         f"got {type(targets).__name__}")
    B, C = logits.shape
    if defer and targets.dtype == torch.int64 and targets.shape == (B,) and targets.device == logits.device:
        return targets  # the common case of a training step: nothing to convert (no dispatch)
    binary = C == 1
    if targets.dtype == torch.bool:  # False / True: classes 0 / 1
        targets = targets.to(torch.int64)
    if targets.dtype.is_complex or (targets.dtype.is_floating_point and not binary):
        raise ValueError(f"targets must be integer class labels, got dtype {targets.dtype} (soft labels are not "
                         "supported: e = softmax − onehot needs a class index; pass y.long() if they are whole)")
    if binary and targets.ndim == 2 and targets.shape[1] == 1:
        targets = targets.reshape(-1)  # (B, 1) targets as BCEWithLogitsLoss takes them
    if targets.ndim != 1 or targets.shape[0] != B:
        raise ValueError(f"targets must be (B,) = ({B},), got shape {tuple(targets.shape)}")
    if targets.dtype.is_floating_point:  # 1-logit head: 0.0 / 1.0 as BCEWithLogitsLoss takes them; nothing else
        ok = (targets == 0) | (targets == 1)
        if defer:
            targets = torch.where(ok, targets.to(torch.int64), torch.full_like(targets, BAD_TARGET,
                                                                               dtype=torch.int64))
        elif B and not bool(ok.all()):
            raise ValueError("a 1-logit head (binary cross-entropy) needs targets 0 or 1; soft targets are not "
                             "supported")
    targets = targets.to(device=logits.device, dtype=torch.int64)
    if not defer and targets.numel():  # the range before gather (out of range is a device assert on CUDA)
        lo, hi = torch.stack(torch.aminmax(targets)).tolist()
        top = 2 if binary else C
        if lo < 0 or hi >= top:
            what = "a 1-logit head (binary cross-entropy) needs targets 0 or 1" if binary else \
                f"targets must lie in [0, {C})"
            raise ValueError(f"{what}, got range [{lo}, {hi}]")
    return targets


def check_logits(logits) -> None:
    """A batch's logits are a (B, C) tensor.

    Args:
        logits: what the output layer gave.
    Raises:
        ValueError: anything else (naming its type or shape).
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError(f"logits must be a (B, C) tensor, got {_describe(logits)}")


def per_sample_loss(logits: torch.Tensor, targets: torch.Tensor, weight=None, label_smoothing: float = 0.0,
                    reduction: str = "none") -> torch.Tensor:
    """Training loss of the logits, differentiable: softmax cross-entropy for C ≥ 2 logits (with class ``weight``
    and ``label_smoothing`` as ``F.cross_entropy`` takes them), binary cross-entropy with logits for one — the loss
    :math:`l_i` whose factors :func:`loss_and_error` gives.

    Args:
        logits: (B, C) any floating dtype. targets: (B,) integer labels in [0, C) (0/1 for one logit). weight,
            label_smoothing: as :func:`check_loss`. reduction: "none" (per sample) or "mean" (with weights the
            weighted mean Σ l_i / Σ w_{y_i}, as ``F.cross_entropy``).
    Returns:
        (B,) loss (or a scalar for "mean") in the logits' dtype, with the logits' autograd graph.
    Raises:
        ValueError: bad shapes, labels, weight or smoothing, or an unknown reduction.
    """
    check_logits(logits)
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
    w = check_loss(logits.shape[1], weight, label_smoothing)
    y = check_targets(logits, targets)
    if logits.shape[1] == 1 or (w is None and not label_smoothing):
        loss = _loss(logits, y)
        return loss.mean() if reduction == "mean" else loss
    return F.cross_entropy(logits, y, weight=None if w is None else w.to(logits), label_smoothing=float(
        label_smoothing), reduction=reduction)


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:func:`per_sample_loss` of targets already validated by :func:`check_targets`."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype), reduction="none")
    return F.cross_entropy(logits, y, reduction="none")


def factors_from_logits(logits: torch.Tensor, targets: torch.Tensor, feat: torch.Tensor,
                        bias: bool = True) -> Factors:
    r"""Theorem 1's factors of a batch: loss :math:`l_i`, error :math:`e_i = \partial l_i/\partial z_i` and the
    features. C ≥ 2: cross-entropy, e = softmax − onehot; C = 1: binary cross-entropy, e = σ(z) − y. Computed in
    float64 (B×C: cheap), returned in the logits' dtype (half precision → float32).

    Args:
        logits: (B, C) floating. targets: (B,) integer labels in [0, C) (0/1, or 0.0/1.0, for one logit).
        feat: (B, D) floating features entering the output layer. bias: whether that layer has a bias.
    Returns:
        :class:`Factors` (detached): loss (B,), err (B, C), feat (B, D).
    Raises:
        ValueError: shapes that do not match, non-integer or out-of-range labels, NaN/Inf logits.
    """
    check_logits(logits)
    return _factors(logits, check_targets(logits, targets), feat, bias)


def _factors(logits: torch.Tensor, targets: torch.Tensor, feat: torch.Tensor, bias: bool) -> Factors:
    """:func:`factors_from_logits` of targets already validated by :func:`check_targets`."""
    if not isinstance(feat, torch.Tensor) or feat.ndim != 2:
        raise ValueError(f"features must be a (B, D) tensor, got {_describe(feat)}")
    if feat.shape[0] != logits.shape[0]:
        raise ValueError(f"features have {feat.shape[0]} rows but logits have {logits.shape[0]}")
    loss, err = _loss_err(logits, targets)
    return Factors(loss, err, upcast(feat.detach()), bool(bias))


def _log_softmax(z: torch.Tensor) -> torch.Tensor:
    """log softmax over dim 1 of (B, C) float64: z − max − log Σ exp(z − max), as ``torch.log_softmax`` computes it
    (within a few ulps), in four vectorised passes — on a CPU about 4× faster than ``torch.log_softmax`` for a
    classifier's few classes. A new tensor."""
    out = z - z.amax(1, keepdim=True)
    return out.sub_(out.exp().sum(1, keepdim=True).log_())


def _loss_err(logits: torch.Tensor, targets: torch.Tensor, weight: Optional[torch.Tensor] = None,
              label_smoothing: float = 0.0) -> tuple:
    """:func:`loss_and_error` of targets already validated by :func:`check_targets` (and a checked ``weight``)."""
    z = upcast(logits.detach())
    z64 = z.double()
    if z.shape[1] == 1:  # binary cross-entropy on σ(z): l = softplus(z) − y z, e = σ(z) − y
        yf = targets.to(torch.float64)[:, None]
        loss = F.binary_cross_entropy_with_logits(z64, yf, reduction="none").squeeze(1)
        err = torch.where(yf == 1, -torch.sigmoid(-z64), torch.sigmoid(z64))  # σ(z) − 1 = −σ(−z), no cancellation
    elif weight is None and not label_smoothing:
        logp = _log_softmax(z64)  # (B, C) in float64, then rounded once at the end
        y = targets[:, None]
        loss = logp.gather(1, y).squeeze(1).neg_()  # (B,) cross-entropy
        err = logp.exp_()  # (B, C) softmax
        err.scatter_(1, y, 0.0)
        err.scatter_(1, y, err.sum(1, keepdim=True).neg_())  # p_y − 1 = −Σ_{c≠y} p_c, without cancellation
    else:  # l = Σ_c a_c (−log p_c), a = (1−s) w_y onehot(y) + (s/C) w  ⇒  e = ∂l/∂z = (Σ_c a_c) p − a
        C = z.shape[1]
        logp = _log_softmax(z64)  # (B, C)
        w = z64.new_ones(C) if weight is None else weight.to(device=z.device, dtype=torch.float64)
        a = w.mul(label_smoothing / C).expand(z.shape[0], C).clone()  # (B, C)
        a.scatter_add_(1, targets[:, None], (1.0 - label_smoothing) * w[targets][:, None])
        loss = torch.linalg.vecdot(a, logp).neg_()  # (B,)
        err = logp.exp_().mul_(a.sum(1, keepdim=True)).sub_(a)  # (B, C)
    if not (math.isfinite(loss.sum()) or bool(torch.isfinite(loss).all())):  # NaN/Inf logits: non-finite loss
        raise ValueError("logits contain NaN or Inf: the model diverged or its input is not finite")
    return loss.to(z.dtype), err.to(z.dtype)


def check_loss(num_classes: Optional[int], weight=None, label_smoothing: float = 0.0) -> Optional[torch.Tensor]:
    r"""The training loss's ``weight`` and ``label_smoothing`` checked, as ``torch.nn.functional.cross_entropy`` takes
    them (the loss whose values are computed: Theorem 1's :math:`l_i` and :math:`e_i = \partial l_i/\partial z_i`).

    Args:
        num_classes: C, the logits per row; None when it is not known yet (the weight's length is then not checked).
        weight: (C,) non-negative finite class weights (a tensor of any real dtype — bfloat16 and float16 too —, an
            array or a list), or None. label_smoothing: s in [0, 1].
    Returns:
        ``weight`` as a (C,) float64 CPU tensor, or None.
    Raises:
        ValueError: a single number or a weight of another length, negative or not finite; s outside [0, 1]; either
            with a 1-logit head (binary cross-entropy is valued unweighted and unsmoothed; said before any check of
            the weight's length).
        TypeError: a weight that is not numeric, or an s that is not a number.
    """
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.floating, np.integer)):
        raise TypeError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1] (as in F.cross_entropy), got {label_smoothing}")
    if num_classes == 1 and (weight is not None or label_smoothing):  # before the weight's length: C = 1 is the cause
        raise ValueError("weight and label_smoothing apply to a softmax head (C >= 2, cross-entropy); a 1-logit head "
                         "(binary cross-entropy) is valued with its plain loss: pass neither (or give the output "
                         "layer 2 outputs, trained with cross-entropy)")
    what = "one number per class" if num_classes is None else f"C = {num_classes} numbers, one per class"
    if weight is None:
        w = None
    else:
        try:
            if isinstance(weight, torch.Tensor):  # via torch: NumPy has no bfloat16
                if weight.dtype.is_complex:
                    raise TypeError
                w = weight.detach().to("cpu", torch.float64)
            else:  # a copy: a read-only array (a pandas Series') makes no writable tensor
                w = torch.tensor(np.asarray(weight, dtype=np.float64))
        except (TypeError, ValueError):
            got = f"a {weight.dtype} tensor" if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise TypeError(f"weight must be {what} (a tensor, array or list), got {got}") from None
        if w.ndim == 0:
            raise ValueError(f"weight must be {what} (a 1-D tensor, array or list), got the single number "
                             f"{float(w)!r}")
        if w.ndim != 1 or (num_classes is not None and w.shape[0] != num_classes):
            shape = "(C,)" if num_classes is None else f"({num_classes},)"
            raise ValueError(f"weight must have one entry per class, shape {shape}, got {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError(f"weight must be finite and >= 0, got {w.tolist()}")
    return w


def loss_and_error(logits: torch.Tensor, targets: torch.Tensor, weight=None, label_smoothing: float = 0.0) -> tuple:
    r"""Theorem 1's per-sample loss :math:`l_i` and error :math:`e_i = \partial l_i / \partial z_i` of a batch.

    C ≥ 2: the cross-entropy of ``torch.nn.functional.cross_entropy(logits, targets, weight=weight,
    label_smoothing=label_smoothing, reduction="none")`` — with class weights :math:`w` and smoothing :math:`s`,
    :math:`l_i = \sum_c a_{ic}(-\log p_{ic})`, :math:`a_{ic} = (1-s)\,w_{y_i}[c = y_i] + \frac{s}{C} w_c`, so
    :math:`e_i = (\sum_c a_{ic})\,p_i - a_i` (plain: :math:`p_i - \mathrm{onehot}(y_i)`). C = 1: binary cross-entropy,
    :math:`e_i = \sigma(z_i) - y_i`. Computed in float64, returned in the logits' dtype (half precision → float32).

    Args:
        logits: (B, C) floating. targets: (B,) integer labels in [0, C) (0/1 for one logit). weight, label_smoothing:
            as :func:`check_loss` takes them.
    Returns:
        ``(loss, err)``: (B,) and (B, C), detached.
    Raises:
        ValueError / TypeError: bad shapes, labels, weight or smoothing; NaN/Inf logits.
    """
    check_logits(logits)
    w = check_loss(logits.shape[1], weight, label_smoothing)
    return _loss_err(logits, check_targets(logits, targets), w, float(label_smoothing))


def upcast(t: torch.Tensor) -> torch.Tensor:
    """Half precision (AMP) → float32; float32 and float64 stay as they are.

    Args:
        t: a floating tensor.
    Returns:
        ``t`` itself, or its float32 copy.
    """
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _describe(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


LAYER_FIX = ("layer=<the output nn.Linear> (LastLayerTap, value_data, EpochValuer.value_epoch and the trainer "
             "callbacks all take it)")  # how a message says to name the output layer


def _logits_entry(output) -> Optional[torch.Tensor]:
    """The tensor a dict / ``ModelOutput`` holds under ``"logits"`` (what is read as the logits), else None."""
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    return None


def _candidates(output) -> list:
    """The tensors a model output may hold the logits in (the rule of the module docstring), a ``"logits"`` entry
    first; [] for other types."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):  # dict, OrderedDict, HuggingFace ModelOutput
        first = _logits_entry(output)
        return ([] if first is None else [first]) + [v for k, v in output.items()
                                                      if k != "logits" and isinstance(v, torch.Tensor)]
    if isinstance(output, (tuple, list)):
        return [v for v in output if isinstance(v, torch.Tensor)]
    return []


def _module_name(model: nn.Module, module: nn.Module) -> str:
    """``module``'s name in ``model`` (``"?"`` when it is not one of its modules)."""
    return next((n for n, m in model.named_modules() if m is module), "?")


def _sums_to_one(cands: list) -> str:
    """For a message on logits that are not the hooked layer's output: a note when the first candidate's rows are
    probabilities (≥ 0, summing to 1) or log-probabilities (log-sum-exp 0), else ""."""
    c = cands[0].detach()
    if c.ndim != 2 or c.shape[1] < 2 or not c.dtype.is_floating_point or c.shape[0] == 0:
        return ""
    c = c.double()
    one = c.new_ones(c.shape[0])
    if bool((c >= 0).all()) and torch.allclose(c.sum(1), one, rtol=0, atol=1e-3):
        return (" (its rows sum to 1: probabilities — a final nn.Softmax? Remove it and train on the logits with "
                "F.cross_entropy)")
    if torch.allclose(torch.logsumexp(c, 1), 0 * one, rtol=0, atol=1e-3):
        return (" (its rows are log-probabilities, log-sum-exp 0 — a final nn.LogSoftmax? Remove it and train on the "
                "logits with F.cross_entropy)")
    return ""


def _pooling_owner(model: nn.Module, layer: nn.Linear) -> Optional[nn.Module]:
    """The module holding ``layer`` as a direct child with a HuggingFace config of a ``pad_token_id`` (a decoder's
    sequence classifier, which pools the head's output at each row's last non-pad token), else None."""
    for m in model.modules():
        config = getattr(m, "config", None)
        if hasattr(config, "pad_token_id") and any(c is layer for c in m.children()):
            return m
    return None


def _last_non_pad(owner: Optional[nn.Module], ids, B: int, T: int, device) -> Optional[torch.Tensor]:
    """The position HuggingFace's decoder sequence classifiers pool: each row's last token other than the pad token
    (the last position without a pad token or input_ids); None when ``owner`` is None or ``ids`` are not (B, T)."""
    if owner is None:
        return None
    config = owner.config.get_text_config() if hasattr(owner.config, "get_text_config") else owner.config
    pad = getattr(config, "pad_token_id", None)
    if pad is None or ids is None:
        return torch.full((B,), T - 1, dtype=torch.int64, device=device)
    if ids.shape != (B, T):
        return None
    keep = (ids.to(device) != pad).to(torch.int64)
    return (torch.arange(T, device=device) * keep).argmax(1)


class LastLayerTap:
    """Context manager: while open, records the input (features) and output (logits) of the model's output layer.

    Args:
        model: the classifier; its output layer is an ``nn.Linear`` (with or without bias) taking (B, D) features.
        layer: that ``nn.Linear``; default the last ``nn.Linear`` registered in ``model`` (pass it when the output
            layer is registered earlier, or another Linear after it).
        output: "logits" (the model returns the layer's output, possibly inside a tuple / list / dict /
            ``ModelOutput``) or "probabilities" (it returns their sigmoid or softmax, as OpenDataVal's classifiers do).
        sequence: the layer is applied per position (a language model's or token classifier's head): its input is
            (B, T, D) and its output (B, T, C), read as they are (:mod:`chg.sequence` values them); default False,
            a classifier's (B, D) → (B, C) — or a head applied per position whose (B, T, C) output the model pools to
            one position per row (``GPT2ForSequenceClassification``, ``LlamaForSequenceClassification``): the tap
            finds each row's position, where the head's output equals the returned logits exactly.

    :meth:`factors` (and :meth:`read`) check that the layer ran exactly once since the last call and that the model's
    output is (or holds) what it produced, so a head called twice, logits post-processed after the layer (e.g. a
    temperature), a hooked layer that is not the output layer, or ``nn.DataParallel`` replicas give a clear error
    instead of wrong values. With ``torch.compile``, open the tap before the first compiled call: hooks added later
    are not seen by the compiled code.

    Raises:
        ValueError: a model without ``nn.Linear``, a ``layer`` that is not one, or an unknown ``output``.
    """

    def __init__(self, model: nn.Module, layer: Optional[nn.Linear] = None, output: str = "logits",
                 sequence: bool = False):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.layer = layer if layer is not None else find_last_linear(model)
        self.layer_given = layer is not None  # the user named the output layer (not the last nn.Linear by default)
        if not isinstance(self.layer, nn.Linear):
            raise ValueError(f"layer must be an nn.Linear, got {type(self.layer).__name__}")
        self._model = model
        self._name: Optional[str] = None  # the layer's name in the model, looked up when a message needs it
        self.output_kind = output
        self.bias = self.layer.bias is not None
        self.sequence = bool(sequence)
        self.feat: Optional[torch.Tensor] = None
        self.output: Optional[torch.Tensor] = None
        self.calls = 0
        self._handle = None
        self._owner = None if self.sequence else _pooling_owner(model, self.layer)  # a HF sequence classifier
        self._owner_handle = None
        self._ids: Optional[torch.Tensor] = None  # its last input_ids (to break a tie of pooled positions)
        self._others: Optional[list] = None  # the model's other nn.Linear layers (another head's output, _head_giving)

    @property
    def name(self) -> str:
        """The hooked layer's name in the model (``"?"`` when it is no longer one of the model's modules)."""
        if self._name is None:
            self._name = next((n for n, m in self._model.named_modules() if m is self.layer), None)
        return "?" if self._name is None else self._name

    @property
    def replaced(self) -> bool:
        """True when the hooked layer is no longer one of the model's modules (timm's ``reset_classifier``, a new head
        assigned): the one check of a replaced head, for :meth:`read` and the trainer callbacks."""
        return not any(m is self.layer for m in self._model.modules())

    def _hook(self, module, inputs, output):
        h = inputs[0]
        if self.sequence and h.ndim != 3:
            raise ValueError(f"the output layer {self.name!r} got input of shape {tuple(h.shape)}; a sequence head "
                             "(sequence=True) takes (B, T, D) features, one row per position")
        self.feat, self.output = h.detach(), output  # without sequence, (B, T, D) is checked by read (pooled)
        self.calls += 1

    def _ids_hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._ids = ids if isinstance(ids, torch.Tensor) else None

    def __enter__(self) -> "LastLayerTap":
        self.name  # looked up once, at the first opening, so a message after the head is replaced still names it
        self._handle = self.layer.register_forward_hook(self._hook)
        if self._owner is not None:
            self._owner_handle = self._owner.register_forward_pre_hook(self._ids_hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        if self._owner_handle is not None:
            self._owner_handle.remove()
            self._owner_handle = None
        self._ids = None

    def _matches(self, cand: torch.Tensor, z: torch.Tensor) -> bool:
        if cand.numel() != z.numel() or (cand.shape != z.shape and z.shape[1] != 1):
            return False  # only a 1-logit head may be reshaped ((B, 1) → (B,))
        if cand.data_ptr() == z.data_ptr() and cand.dtype == z.dtype:
            return True
        c, zd = cand.detach().reshape(z.shape), z.detach()
        if torch.equal(c, zd):
            return True
        if self.output_kind == "probabilities":  # the same kernel gives the same bits; else a tight tolerance
            probs = (torch.sigmoid(zd), torch.softmax(zd, -1))
            return (any(torch.equal(c, p) for p in probs)
                    or any(torch.allclose(c.float(), p.float(), rtol=1e-5, atol=1e-6) for p in probs))
        return False

    def _other_entry(self, output, z: torch.Tensor, feat: torch.Tensor) -> Optional[str]:
        """Why ``output`` is refused when it holds the logits under ``"logits"`` but the hooked layer's output is
        another of its entries (a model with several heads: the hooked one is not the classifier), else None."""
        logits = _logits_entry(output)
        if logits is None:
            return None
        key = next((k for k, v in output.items() if k != "logits" and isinstance(v, torch.Tensor)
                    and self._matches(v, z)), None)
        if key is None:
            return None
        how = "" if self.layer_given else \
            " (the last nn.Linear registered in the model, taken as the output layer by default)"
        other = self._head_giving(logits, feat)
        which = "" if other is None else f"here {_module_name(self._model, other)!r}, "
        return (f"the model returns its logits under 'logits' ({_describe(logits)}), but the hooked nn.Linear "
                f"{self.name!r}{how} gives its {key!r} entry ({_describe(z)}): that is another head, and its values "
                f"(and value_data's training) would be that head's; name the output layer ({which}the nn.Linear "
                f"whose output is 'logits'): {LAYER_FIX}")

    def _head_giving(self, t: torch.Tensor, feat: torch.Tensor) -> Optional[nn.Module]:
        """Another ``nn.Linear`` of the model that gives ``t`` from the hooked layer's input ``feat`` (a second head
        on the same features), else None. Recomputed, so only a cheap look at the layers of the right shape."""
        if t.ndim != 2 or feat.ndim != 2 or t.shape[0] != feat.shape[0] or not t.dtype.is_floating_point:
            return None
        if self._others is None:  # the model's other nn.Linear layers, listed once
            self._others = [m for m in self._model.modules() if isinstance(m, nn.Linear) and m is not self.layer]
        for m in self._others:
            if m.in_features != feat.shape[1] or m.out_features != t.shape[1]:
                continue
            with torch.no_grad():
                got = F.linear(feat.to(m.weight), m.weight, m.bias).double()
            td = t.detach().double()
            tol = 1e-3 if t.dtype in (torch.float32, torch.float64) else 3e-2  # half precision (autocast): looser
            if torch.allclose(got, td, rtol=tol, atol=tol * float(td.abs().max().clamp(min=1e-12))):
                return m
        return None

    def _activation(self, cands: list, z: torch.Tensor) -> Optional[str]:
        """Why ``output`` is refused when a candidate is a (log-)softmax or (log-)sigmoid of the hooked layer's
        output (a final nn.Softmax / nn.LogSoftmax / nn.Sigmoid after the output layer), else None."""
        zd = z.detach().double()
        if zd.ndim != 2 or zd.shape[0] == 0:
            return None
        C = zd.shape[1]
        kinds = ({"a softmax": torch.softmax(zd, 1), "a log-softmax": torch.log_softmax(zd, 1)} if C > 1 else
                 {"a sigmoid": torch.sigmoid(zd), "a log-sigmoid": F.logsigmoid(zd)})
        for c in cands:
            if c.numel() != zd.numel() or not c.dtype.is_floating_point:
                continue
            cd = c.detach().double().reshape(zd.shape)
            what = next((k for k, v in kinds.items() if torch.allclose(cd, v, rtol=1e-3, atol=1e-5)), None)
            if what is None:
                continue
            module = {"a softmax": "nn.Softmax", "a log-softmax": "nn.LogSoftmax", "a sigmoid": "nn.Sigmoid",
                      "a log-sigmoid": "nn.LogSigmoid"}[what]
            loss = "F.cross_entropy / nn.CrossEntropyLoss, which apply the log-softmax themselves" if C > 1 else \
                "F.binary_cross_entropy_with_logits / nn.BCEWithLogitsLoss, which apply the sigmoid themselves"
            keep = "" if what.startswith("a log") or self.output_kind == "probabilities" else (
                "; or, to keep the model as it is, read it with output='probabilities' (LastLayerTap, "
                "compute_factors, EpochValuer.value_epoch take it; chg.value_data trains the output layer's logits "
                "and needs the model to return them)")
            return (f"the model returns {what} of the output of the hooked nn.Linear {self.name!r} ({_describe(z)}), "
                    f"not the logits themselves — a final {module} (or its function) after the output layer: "
                    f"remove it and train on the logits with {loss}{keep}")
        return None

    def read(self, output) -> tuple:
        """The hooked layer's output and input of the last forward pass, after checking ``output`` against the rule
        of the module docstring.

        Args:
            output: what the model returned (a tensor, tuple, list, dict or ``ModelOutput``).
        Returns:
            ``(logits, feat)``: the layer's output (B, C) with its autograd graph (for a training loss) and its
            input (B, D) detached; (B, T, C) and (B, T, D) with ``sequence=True``; for a head applied per position
            whose output the model pools, both at each row's pooled position.
        Raises:
            RuntimeError: the layer did not run since the tap opened or the last read.
            ValueError: it ran more than once; ``output`` does not hold its output (naming a final softmax,
                log-softmax or sigmoid when it holds one of those instead); ``output`` holds it beside another head's
                logits — a dict / ``ModelOutput`` with another entry under ``"logits"``, or (``layer`` not given) a
                tuple / list whose first tensor is another ``nn.Linear``'s output on the same features — (pass
                ``layer=``).
        """
        if self.output is None:
            if self.replaced:
                raise RuntimeError("LastLayerTap: the model's output layer was replaced since the tap was built (e.g. "
                                   "timm's reset_classifier, or a new head assigned): the values of one run must come "
                                   "from one head; build a new tap (and a new EpochValuer) for the new head")
            raise RuntimeError(f"LastLayerTap: no forward pass went through the hooked nn.Linear {self.name!r} since "
                               "the tap opened or the last read (is it the model's output layer? pass "
                               "layer=<the output nn.Linear> — LastLayerTap, value_data, EpochValuer.value_epoch and "
                               "the trainer callbacks all take it; with torch.compile, open the tap before the first "
                               "compiled call)")
        calls, self.calls = self.calls, 0
        z, feat = self.output, self.feat
        self.feat = self.output = None
        if calls > 1:
            raise ValueError(f"the hooked nn.Linear {self.name!r} ran {calls} times since the last factors() call (a "
                             "head called twice, or nn.DataParallel replicas); call factors() after each single "
                             "forward pass")
        ids, self._ids = self._ids, None
        cands = _candidates(output)
        if not cands:
            raise ValueError(f"the model returned {_describe(output)}; expected the logits tensor (B, C) of its output "
                             "nn.Linear, or a tuple / list / dict / ModelOutput holding it")
        # a dict / ModelOutput with a "logits" entry: that entry is the logits (another entry may be another head's)
        want = cands[:1] if _logits_entry(output) is not None else cands
        if not self.sequence and feat.ndim != 2:
            pooled = self._pooled(want, z, feat, ids) if feat.ndim == 3 and z.ndim == 3 else None
            if pooled is None:
                raise ValueError(_no_head(self._model) or _two_heads(self._model) or
                                 f"the output layer {self.name!r} got input of shape {tuple(feat.shape)}; expected "
                                 f"(B, D) features, or (B, T, D) with the model returning the layer's output at one "
                                 f"position per row (a sequence classifier's pooled logits), but it returned "
                                 f"{', '.join(_describe(c) for c in want)}, none of which is (a head whose output at "
                                 "every position is the model's output is a language model's or token classifier's: "
                                 "value it with chg.sequence; if another nn.Linear is the output layer, name it: "
                                 "layer=<the output nn.Linear>)")
            return pooled
        hit = next((i for i, c in enumerate(want) if self._matches(c, z)), None)
        if hit is None:
            extra = (_no_head(self._model) or _two_heads(self._model) or self._other_entry(output, z, feat)
                     or self._activation(cands, z))
            if extra is not None:
                raise ValueError(extra)
            allowed = "its output (the logits)" if self.output_kind == "logits" else \
                "its output (the logits) or their sigmoid / softmax"
            note = _sums_to_one(want) if self.output_kind == "logits" else ""
            raise ValueError(f"the logits given ({', '.join(_describe(c) for c in want)}) are not the output of the "
                             f"hooked nn.Linear {self.name!r} ({_describe(z)}): the model must return {allowed}, with "
                             f"no temperature or other post-processing{note}; if another nn.Linear is the output "
                             f"layer, name it: {LAYER_FIX}")
        if not self.layer_given and isinstance(output, (tuple, list)):
            self._check_first(output, want, hit, z, feat)
        return z, feat

    def _check_first(self, output, want: list, hit: int, z: torch.Tensor, feat: torch.Tensor) -> None:
        """A tuple / list holding the hooked layer's output after its first tensor (not a scalar loss): an error when
        that first tensor — read as the logits — is another head's output on the same features (a model with
        several heads, the hooked one, last registered, not the classifier)."""
        first = next((i for i, c in enumerate(want) if c.ndim > 0), hit)
        if hit <= first:
            return
        other = self._head_giving(want[first], feat)
        if other is None:
            return
        at = next(i for i, v in enumerate(output) if v is want[hit])
        raise ValueError(f"the model returns a {type(output).__name__} of several heads' outputs: its first tensor "
                         f"({_describe(want[first])}), read as the logits, is the output of nn.Linear "
                         f"{_module_name(self._model, other)!r}, but the hooked nn.Linear {self.name!r} (the last "
                         f"registered in the model, taken as the output layer by default) gives element {at} "
                         f"({_describe(z)}), so the values would be that head's; name the output layer: {LAYER_FIX}")

    def _pooled(self, cands: list, z: torch.Tensor, feat: torch.Tensor, ids) -> Optional[tuple]:
        """``(logits, feat)`` (B, C) and (B, D) at one position per row when a candidate (B, C) is an exact copy of the
        per-position head's output ``z`` (B, T, C) at one position per row (the logits a sequence classifier pools;
        the candidate is returned; in a wider float dtype than ``z``: its exact upcast, as mixed precision returns
        it), None when none is. Equal logits at several positions whose features differ are
        told apart by the model's pooling rule (HuggingFace: each row's last non-pad token), else a clear error."""
        B, T, C = z.shape
        for c in cands:
            if c.device != z.device or c.shape != (B, C) or not c.is_floating_point():
                continue
            if c.dtype != z.dtype and torch.promote_types(z.dtype, c.dtype) != c.dtype:
                continue  # (logits narrower than the head's output are not its exact copy)
            # mixed precision: the head ran in bfloat16/float16 and the logits came back upcast (the Trainer's
            # accelerate does so) — the upcast is exact, so the comparison in the wider dtype still asks for a copy
            zd = z.detach() if c.dtype == z.dtype else z.detach().to(c.dtype)
            cd = c.detach().reshape(B, 1, C)
            hit = ((zd == cd) | (zd.isnan() & cd.isnan())).all(2)  # (B, T): the head's output at t is the row's logits
            count = hit.sum(1)
            lo, hi = (0, 0) if B == 0 else torch.stack(torch.aminmax(count)).tolist()
            if B and lo < 1:
                continue
            rows = torch.arange(B, device=z.device)
            pos = hit.to(torch.int8).argmax(1)  # the first position that matches
            if hi > 1:
                pos = self._tie(hit, pos, feat, ids)
            # the returned tensor itself (equal to z[rows, pos]): the training loss's graph goes through it, so a
            # hook on its gradient (the trainer callbacks' loss check) sees the loss trained on
            return c, feat[rows, pos]
        return None

    def _tie(self, hit: torch.Tensor, pos: torch.Tensor, feat: torch.Tensor, ids) -> torch.Tensor:
        """The pooled positions when a row's logits equal the head's output at several positions: any of them when
        their features are equal too, else the HuggingFace rule (the last non-pad token) when it is one of them."""
        B, T = hit.shape
        rows = torch.arange(B, device=hit.device)
        same = ((feat == feat[rows, pos][:, None, :]).all(2) | ~hit).all(1)  # (B,): the matches' features agree
        if bool(same.all()):
            return pos
        rule = _last_non_pad(self._owner, ids, B, T, hit.device)
        if rule is not None and bool(hit[rows, rule].all()):
            return rule
        i = int((~same).to(torch.int8).argmax())
        where = hit[i].nonzero().flatten().tolist()
        raise ValueError(f"the logits returned for row {i} equal the output of {self.name!r} at positions {where} "
                         "whose features differ, so the position the model pooled cannot be told (equal logits at "
                         "different positions: a head of zero weights, or logits of low precision); value the model "
                         "in float32 (no autocast), or apply its output layer to each row's pooled features only")

    def factors(self, output, targets: torch.Tensor) -> Factors:
        """Factors of the last forward pass (Theorem 1's l_i, e_i, h_i; see :func:`factors_from_logits`).

        Args:
            output: what the model returned (checked as in :meth:`read`). targets: (B,) the batch's labels.
        Returns:
            :class:`Factors` (detached).
        Raises:
            RuntimeError, ValueError: as :meth:`read` and :func:`factors_from_logits`.
        """
        z, feat = self.read(output)
        return factors_from_logits(z, targets, feat, self.bias)


def split_batch(batch) -> tuple:
    """The parts of a batch (the rule of the module docstring).

    Args:
        batch: ``(x, y)`` / ``(x, y, index)`` tuples or lists, or a dict with ``"labels"`` (or ``"label"``), an
            optional ``"index"`` and the model's keyword inputs.
    Returns:
        ``(inputs, targets, index)``: inputs a tensor or a dict of keyword inputs; ``index`` None if absent.
    Raises:
        ValueError: any other batch.
    """
    if isinstance(batch, Mapping):
        keys = [k for k in ("labels", "label") if k in batch]
        if not keys:
            raise ValueError(f"a dict batch needs its targets under 'labels' (or 'label'); it has {sorted(batch)}")
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "label", "index")}
        return inputs, batch[keys[0]], batch.get("index")
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return batch[0], batch[1], (batch[2] if len(batch) == 3 else None)
    raise ValueError(f"a batch must be (x, y), (x, y, index) or a dict with 'labels'; got {_describe(batch)}"
                     + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))


def carries_index(loader) -> bool:
    """Whether the third element of ``loader``'s ``(x, y, index)`` tuple batches is known to be each row's index
    (its position in the data set), as :func:`split_batch` returns it.

    Args:
        loader: a DataLoader, or any iterable of batches.
    Returns:
        True for an iterable that is not a DataLoader (no ``dataset``: a list of ``(x, y, index)`` batches, written
        so by hand), and for a DataLoader over a data set that marks its items so — class attribute
        ``carries_index = True``: :class:`chg.IndexedDataset` and the trainer callbacks' ``cb.index(...)``, also
        through ``torch.utils.data.Subset``; False for a DataLoader over any other data set, whose items' third
        element may be anything (a record id, a sample weight). Dict batches name their index (``"index"``) and do
        not need this.
    """
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        return True
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "carries_index", False) is True


def sequential_loader(loader) -> bool:
    """True only for a DataLoader that visits rows 0, 1, 2, ... in order (so rows can be numbered by arrival): a
    sequential sampler batched by the loader, or batches fetched whole (``batch_size=None``) from a
    ``BatchSampler`` over a sequential sampler. A ``batch_sampler`` of the user's (length bucketing, say) is not: the
    loader's ``sampler`` is then still the default sequential one, but the rows come in the batch sampler's order."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, SequentialSampler):
        return type(getattr(loader, "batch_sampler", None)) is BatchSampler
    return (type(sampler) is BatchSampler and isinstance(sampler.sampler, SequentialSampler)
            and getattr(loader, "batch_size", 0) is None)


def unknown_index(caller: str, loader) -> str:
    """Why a DataLoader's ``(x, y, third)`` batches cannot be valued: the third element is not known to be the rows'
    index (:func:`carries_index` is False), and the loader does not give the rows in order.

    Args:
        caller: the function the user called, which the message names. loader: the DataLoader.
    Returns:
        the message, saying to wrap the data set in :class:`chg.IndexedDataset` or to use a sequential loader.
    """
    name = type(loader.dataset).__name__
    return (f"{caller}: the loader's batches are (x, y, third element), but its data set ({name}) is not a "
            "chg.IndexedDataset, so the third element is not known to be each row's position in the data set (a "
            "record id or a sample weight there would put every value on a wrong row), and the loader does not give "
            "the rows in order (shuffled, or a sampler), so they cannot be numbered by arrival: wrap the data set, "
            "DataLoader(chg.IndexedDataset(dataset), ...) (its (x, y, ...) items become (x, y, row index)), or use "
            "a plain sequential DataLoader")


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def forward_batch(model: nn.Module, inputs, device):
    """The model on a batch's inputs moved to ``device``: ``model(**inputs)`` for a dict, else ``model(inputs)``.

    Args:
        model: the network. inputs: a tensor, or a dict / tuple of tensors (HuggingFace style).
        device: where to move the inputs (:func:`model_device`).
    Returns:
        what the model returns (logits, a tuple, a dict or a ``ModelOutput``).
    Raises:
        ValueError: the forward pass failed with an ``IndexError`` (an embedding indexed out of range), or with a
            ``RuntimeError`` whose cause is found: naming a token id at or above the model's vocabulary, or a sequence
            longer than its positions. Other errors of the model pass through unchanged.
    """
    inputs = _to(inputs, device)
    try:
        return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
    except (IndexError, RuntimeError) as exc:  # RuntimeError: BERT's position ids are expanded, not indexed
        message = _index_error(model, inputs, exc)
        if message is None:
            raise
        raise ValueError(message) from exc


def _index_error(model: nn.Module, inputs, exc: Exception) -> Optional[str]:
    """Why a forward pass indexed an embedding out of range, from the batch's token ids and the model's config
    (None for a RuntimeError with neither cause: it is not ours to explain)."""
    ids = inputs.get("input_ids") if isinstance(inputs, Mapping) else inputs
    config = getattr(model, "config", None)
    causes = []
    if isinstance(ids, torch.Tensor) and not ids.dtype.is_floating_point and ids.numel():
        vocab = getattr(config, "vocab_size", None)
        top = int(ids.max())
        if vocab is not None and top >= vocab:
            causes.append(f"a token id {top} ≥ the model's vocab_size {vocab} (a tokenizer of another model?)")
        positions = next((getattr(config, k) for k in ("n_positions", "max_position_embeddings")
                          if isinstance(getattr(config, k, None), int)), None)
        if positions is not None and ids.shape[-1] > positions:
            causes.append(f"sequences of {ids.shape[-1]} tokens > the model's {positions} positions (truncate: "
                          f"tokenizer(..., truncation=True, max_length={positions}))")
    if not causes and not isinstance(exc, IndexError):
        return None
    what = "; ".join(causes) if causes else "an index out of range inside the model"
    return f"the model's forward pass failed on this batch: {what} ({type(exc).__name__}: {exc})"


def model_device(model: nn.Module) -> torch.device:
    """Where batches are moved for ``model``.

    Args:
        model: an ``nn.Module`` with at least one parameter.
    Returns:
        the ``torch.device`` of its first parameter.
    """
    return next(model.parameters()).device


@torch.no_grad()  # as a decorator: grad mode is switched around each step of the generator, not while it waits
def iter_factors(model: nn.Module, loader, layer: Optional[nn.Linear] = None,
                 output: str = "logits") -> Iterator[tuple]:
    """For each batch of ``loader`` (see :func:`split_batch`): ``(factors, targets, index)`` from one forward pass,
    batches moved to the model's device, one tap for the whole loop. No grad; the model's mode is left as it is."""
    device = model_device(model)
    with LastLayerTap(model, layer, output) as tap:
        for batch in loader:
            inputs, targets, index = split_batch(batch)
            targets = _to(torch.as_tensor(targets), device)
            yield tap.factors(forward_batch(model, inputs, device), targets), targets, index


def compute_factors(model: nn.Module, inputs, targets: Optional[torch.Tensor] = None,
                    layer: Optional[nn.Linear] = None, output: str = "logits") -> Factors:
    """Factors of a batch, or of every batch of a loader, from no-grad forward passes of ``model``.

    Args:
        model: a classifier whose output layer is an ``nn.Linear`` (see :class:`LastLayerTap` for ``layer`` and
            ``output``, and the module docstring for what the model may return).
        inputs: a batch's inputs (a tensor, or a dict of keyword inputs) with ``targets`` (B,) integer labels; or,
            with ``targets`` None, an iterable of batches (a DataLoader; see :func:`split_batch`).
    Returns:
        :class:`Factors` of all rows, in order, on the model's device. The model's mode (train/eval) is left as it
        is: put it in eval mode for Algorithm 1's values at θ_k (:meth:`chg.EpochValuer.value_epoch` does).
    Raises:
        ValueError / RuntimeError: as :class:`LastLayerTap` and :func:`factors_from_logits` do.
    """
    if targets is None:
        if isinstance(inputs, torch.Tensor):
            raise ValueError("compute_factors: targets are missing (pass compute_factors(model, x, y), or a loader "
                             "of batches as the only data argument)")
        return Factors.cat([f for f, _, _ in iter_factors(model, inputs, layer, output)])
    return next(iter_factors(model, [(inputs, targets)], layer, output))[0]
