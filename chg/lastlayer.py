r"""Per-sample loss, softmax error and penultimate features from any classifier whose last module is an nn.Linear.

One forward pass with a hook on the final ``nn.Linear`` gives everything Theorem 1 needs: the features :math:`h_i`
entering that layer, the logits :math:`z_i`, the cross-entropy loss :math:`l_i`, and :math:`e_i = \mathrm{softmax}(z_i)
- \mathrm{onehot}(y_i)`, so that :math:`\nabla_{[W|b]} l_i = e_i \otimes [h_i; 1]`. No per-sample autograd.

Use it around your own forward pass (the training step's) or let :func:`compute_factors` run a no-grad pass::

    with LastLayerTap(model) as tap:
        logits = model(x)
        f = tap.factors(logits, y)   # f.loss (B,), f.err (B, C), f.feat (B, D), all detached
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Factors", "find_last_linear", "LastLayerTap", "factors_from_logits", "compute_factors"]


@dataclass
class Factors:
    """Detached last-layer factors of a batch: loss (B,), err = softmax − onehot (B, C), feat (B, D)."""
    loss: torch.Tensor
    err: torch.Tensor
    feat: torch.Tensor

    def __getitem__(self, idx) -> "Factors":
        return Factors(self.loss[idx], self.err[idx], self.feat[idx])

    @staticmethod
    def cat(parts: list) -> "Factors":
        if not parts:
            raise ValueError("Factors.cat: no batches to concatenate")
        return Factors(*(torch.cat([getattr(p, k) for p in parts]) for k in ("loss", "err", "feat")))


def find_last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered in ``model`` (its output layer). Raises if there is none."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear module; CHG Shapley needs a final linear layer")
    return last


def factors_from_logits(logits: torch.Tensor, targets: torch.Tensor, feat: torch.Tensor) -> Factors:
    """Per-sample cross-entropy loss and softmax error from logits (B, C), integer targets (B,), features (B, D)."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer class labels, got dtype {targets.dtype} (soft labels are not "
                         "supported: e = softmax − onehot needs a class index)")
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets must be (B,) = ({logits.shape[0]},), got shape {tuple(targets.shape)}")
    if feat.shape[0] != logits.shape[0]:
        raise ValueError(f"features have {feat.shape[0]} rows but logits have {logits.shape[0]}")
    z = _upcast(logits.detach())
    targets = targets.long()  # gather takes int64 indices (uint8/int16/int32 labels are fine)
    if targets.numel():  # the range before gather (out of range is a device assert on CUDA); one device sync
        lo, hi = torch.stack(torch.aminmax(targets)).tolist()
        if lo < 0 or hi >= z.shape[1]:
            raise ValueError(f"targets must lie in [0, {z.shape[1]}), got range [{lo}, {hi}]")
    logp = torch.log_softmax(z.double(), dim=1)  # (B, C) in float64 (cheap: B×C), then rounded once at the end
    y = targets[:, None]
    loss = logp.gather(1, y).squeeze(1).neg_()  # (B,) cross-entropy
    if not (math.isfinite(loss.sum()) or bool(torch.isfinite(loss).all())):  # NaN/Inf logits: non-finite loss
        raise ValueError("logits contain NaN or Inf: the model diverged or its input is not finite")
    err = logp.exp_()  # (B, C) softmax
    err.scatter_(1, y, 0.0)
    err.scatter_(1, y, err.sum(1, keepdim=True).neg_())  # p_y − 1 = −Σ_{c≠y} p_c, without the cancellation of p_y − 1
    return Factors(loss.to(z.dtype), err.to(z.dtype), _upcast(feat.detach()))


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """Half precision (AMP) → float32; float32 and float64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class LastLayerTap:
    """Context manager: while open, records the input and output of the model's final ``nn.Linear``.

    ``layer`` defaults to the last ``nn.Linear`` registered in the model; pass it explicitly when the output layer is
    registered earlier. :meth:`factors` checks that the logits it is given are exactly what that layer produced in a
    single call since the last :meth:`factors` (so a head called twice, logits post-processed after the layer — e.g.
    a temperature — or ``nn.DataParallel`` replicas give a clear error instead of wrong values). With
    ``torch.compile``, open the tap before the first compiled call: hooks added later are not seen by the compiled code.
    """

    def __init__(self, model: nn.Module, layer: nn.Linear | None = None):
        self.layer = layer if layer is not None else find_last_linear(model)
        if self.layer.bias is None:
            raise ValueError("the final nn.Linear has no bias: CHG Shapley's factors use the [weight | bias] "
                             "gradient e ⊗ [h; 1]; give the output layer a bias")
        self.feat: torch.Tensor | None = None
        self.output: torch.Tensor | None = None
        self.calls = 0
        self._handle = None

    def _hook(self, module, inputs, output):
        h = inputs[0]
        if h.ndim != 2:
            raise ValueError(f"the final nn.Linear got input of shape {tuple(h.shape)}; expected (B, D) features")
        self.feat, self.output = h.detach(), output.detach()
        self.calls += 1

    def __enter__(self) -> "LastLayerTap":
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def factors(self, logits: torch.Tensor, targets: torch.Tensor) -> Factors:
        """Factors of the last forward pass; ``logits`` must be the hooked layer's output, unchanged."""
        if self.feat is None:
            raise RuntimeError("LastLayerTap.factors: no forward pass went through the hooked nn.Linear since the tap "
                               "opened (is it the model's output layer? with torch.compile, open the tap before the "
                               "first compiled call)")
        calls, self.calls = self.calls, 0
        if calls > 1:
            raise ValueError(f"the hooked nn.Linear ran {calls} times since the last factors() call (a head called "
                             "twice, or nn.DataParallel replicas); call factors() after each single forward pass")
        out = self.output
        same = logits.shape == out.shape and (logits.data_ptr() == out.data_ptr() or torch.equal(logits.detach(), out))
        if not same:
            raise ValueError(f"the logits given (shape {tuple(logits.shape)}) are not the output of the hooked "
                             f"nn.Linear (shape {tuple(out.shape)}): the output layer must be the model's last "
                             "operation (no temperature or other post-processing), or pass "
                             "LastLayerTap(model, layer=<the output nn.Linear>)")
        feat, self.feat, self.output = self.feat, None, None
        return factors_from_logits(logits, targets, feat)


@torch.no_grad()
def compute_factors(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Factors:
    """One no-grad forward pass of ``model`` on a batch; the model's mode (train/eval) is left as it is."""
    with LastLayerTap(model) as tap:
        logits = model(inputs)
        return tap.factors(logits, targets)
