r"""CHG Shapley as an OpenDataVal ``DataEvaluator`` (stock opendataval 1.3.0, no fork).

Importing this module defines :class:`CHGShapley`; opendataval's ``DataEvaluator.__init_subclass__`` then registers
it under the name ``"chgshapley"`` in ``DataEvaluator.Evaluators``, the table that opendataval's CLI and job files
look evaluators up in. Use it like any built-in evaluator::

    import chg.opendataval                       # registers "chgshapley"
    from chg.opendataval import CHGShapley
    exper = ExperimentMediator.model_factory_setup("digits", ..., model_name="LogisticRegression",
                                                   train_kwargs={"epochs": 10, "batch_size": 32, "lr": 0.01})
    exper.compute_data_values([CHGShapley(), DataOob(num_models=100)])

opendataval's CLI builds its list of evaluator names when ``opendataval.__main__`` is imported, so run the CLI
through ``python -m chg.opendataval <opendataval CLI args>``, which imports this plugin first.

**What it computes.** Algorithm 1 (:mod:`chg.valuation`): one training run of a clone of ``pred_model``
(Adam, the ``batch_size`` / ``epochs`` / ``lr`` / ``sample_weight`` of ``train_kwargs``, defaults as
opendataval's ``TorchClassMixin.fit``); every epoch each training point gets its CHG Shapley value (eq. 3 on
:math:`x_i = l_i \nabla_{[W|b]} l_i` of the final ``nn.Linear``), and the data value is the average over epochs.
One model fit, no per-sample autograd.

**The double activation.** opendataval's ``LogisticRegression`` applies a sigmoid and ``ClassifierMLP`` a softmax
in ``forward``, and ``TorchClassMixin.fit`` then feeds those probabilities to ``F.cross_entropy`` (which applies
a softmax again; for 2 classes it uses ``binary_cross_entropy`` on the sigmoid). The plugin never uses the model's
output activation: a forward hook on the model's final ``nn.Linear`` takes its *output* as the logits, and with
``loss="logits"`` (default) the plugin trains with proper softmax cross-entropy on them, so the loss :math:`l_i`
and the error :math:`e_i = \mathrm{softmax}(z_i) - \mathrm{onehot}(y_i)` of Theorem 1 are those of the model that
is trained. ``loss="model"`` instead trains exactly as opendataval's ``fit`` does (double activation kept), while the
values still use softmax cross-entropy on the logits of that model. Either way the pred_model that opendataval's
experiments (point removal/addition) retrain is untouched.

Needs a torch ``pred_model`` whose last ``nn.Linear`` produces the class scores (all of opendataval's torch
classifiers); sklearn-wrapped models raise a ValueError. Classification only.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from opendataval.dataval.api import DataEvaluator, ModelMixin

from .lastlayer import factors_from_logits, find_last_linear
from .valuation import MODES, EpochValuer

__all__ = ["CHGShapley"]

LOSSES = ("logits", "model")


class _Rows(Dataset):
    """(x_i, y_i, w_i, i) from tensors or Datasets (opendataval passes either, possibly ``Subset``s)."""

    def __init__(self, x, y, w):
        self.x, self.y, self.w = x, y, w

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], (self.w[i] if self.w is not None else torch.tensor(1.0)), i


class _LogitTap:
    """Forward hook on the final nn.Linear: keeps its input (features, detached) and output (logits, with grad)."""

    def __init__(self, layer: nn.Linear):
        self.layer, self.feat, self.logits = layer, None, None

    def _hook(self, module, inputs, output):
        self.feat, self.logits = inputs[0].detach(), output

    def __enter__(self):
        self._h = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._h.remove()


class CHGShapley(DataEvaluator, ModelMixin):
    """CHG Shapley (Cai, 2024), Algorithm 1, as an OpenDataVal data evaluator.

    Parameters
    ----------
    epochs : int, optional
        Training epochs of the valuation run; default None = ``train_kwargs["epochs"]`` (opendataval default 1).
        Values are averaged over the epochs.
    mode : "pass" | "ride"
        "pass" (Algorithm 1 exactly): a no-grad pass over the training set at the start of each epoch gives the
        epoch's values. "ride": values from the training forward passes themselves (no extra pass; each batch at
        its own step's parameters).
    per_class : bool
        Value each class as its own game (α and statistics per class).
    alpha : "train" | "valid"
        α = mean of l_i g_i over the training set (the paper) or over opendataval's validation split.
    weighting : "chg" | "gradient" | "hardness";  gradient : "full" | "bias"
        As in :func:`chg.factored.shapley_from_factors`.
    loss : "logits" | "model"
        How the valuation run trains (see the module docstring on the double activation).
    random_state : RandomState, optional
    """

    def __init__(self, epochs: Optional[int] = None, mode: str = "pass", per_class: bool = False,
                 alpha: str = "train", weighting: str = "chg", gradient: str = "full", loss: str = "logits",
                 random_state=None):
        super().__init__(random_state)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if epochs is not None and int(epochs) < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        EpochValuer(1, weighting=weighting, gradient=gradient, alpha=alpha)  # validates the options
        self.epochs, self.mode, self.per_class, self.alpha = epochs, mode, per_class, alpha
        self.weighting, self.gradient, self.loss = weighting, gradient, loss
        self.model_fits = 0

    def input_data(self, x_train, y_train, x_valid, y_valid):
        self.x_train, self.y_train, self.x_valid, self.y_valid = x_train, y_train, x_valid, y_valid
        self.num_points = len(y_train)
        return self

    @staticmethod
    def _labels(y) -> torch.Tensor:
        """Integer class labels (n,) from opendataval's one-hot (n, C) labels or from integer labels."""
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
        if y.ndim == 2:
            return y.argmax(1)
        if y.ndim == 1 and not torch.is_floating_point(y):
            return y.long()
        raise ValueError(f"CHGShapley needs classification labels (one-hot (n, C) or integer (n,)), got "
                         f"{tuple(y.shape)} {y.dtype}")

    def train_data_values(self, *args, **kwargs):
        """Train the model once and value every point each epoch (Algorithm 1). The global torch RNG is seeded from
        opendataval's random_state for this run only (forked), so evaluators run after this one are unaffected."""
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            return self._train_data_values(*args, **kwargs)

    def _train_data_values(self, *args, batch_size: int = 32, epochs: int = 1, lr: float = 0.01,
                          sample_weight: Optional[torch.Tensor] = None, **kwargs):
        """One training run of a clone of ``pred_model``; every epoch values every training point (Algorithm 1)."""
        if not hasattr(self, "pred_model"):
            raise ValueError("CHGShapley: no pred_model; call setup()/train() with a torch classifier, or "
                             "input_model(model) before train_data_values")
        model = self.pred_model.clone()
        if not isinstance(model, nn.Module):
            raise ValueError(f"CHGShapley needs a torch nn.Module pred_model with a final nn.Linear, got "
                             f"{type(model).__name__} (sklearn-wrapped models have no last-layer gradient)")
        layer = find_last_linear(model)
        epochs = int(self.epochs if self.epochs is not None else epochs)
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        device = next(model.parameters()).device
        y = self._labels(self.y_train)
        rows = _Rows(self.x_train, y, None if sample_weight is None else torch.as_tensor(sample_weight).float())
        seed = int(self.random_state.randint(0, 2**31 - 1))
        torch.manual_seed(seed)
        train_loader = DataLoader(rows, batch_size=int(batch_size), shuffle=True,
                                  generator=torch.Generator().manual_seed(seed))
        eval_loader = DataLoader(rows, batch_size=1024, shuffle=False)
        valid_loader = None
        if self.alpha == "valid":
            yv = self._labels(self.y_valid)
            valid_loader = DataLoader(_Rows(self.x_valid, yv, None), batch_size=1024, shuffle=False)
        self.valuer = valuer = EpochValuer(self.num_points, weighting=self.weighting, gradient=self.gradient,
                                           per_class=self.per_class, alpha=self.alpha)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        num_classes = layer.out_features
        start = time.perf_counter()
        model.train()
        with _LogitTap(layer) as tap:
            for _ in range(epochs):
                if self.mode == "pass":
                    self._pass(model, tap, eval_loader, valid_loader, device)
                for xb, yb, wb, idx in train_loader:
                    xb, yb, wb = xb.to(device), yb.to(device), wb.to(device)
                    out = model(xb)
                    logits = tap.logits  # (B, C): the final nn.Linear's output, before any activation
                    if self.mode == "ride":
                        valuer.add(idx, factors_from_logits(logits, yb, tap.feat), yb)
                    if self.loss == "logits":
                        per = F.cross_entropy(logits, yb, reduction="none")
                    else:  # exactly opendataval's TorchClassMixin.fit criterion, on the activated output
                        onehot = F.one_hot(yb, num_classes).to(out.dtype)
                        crit = F.binary_cross_entropy if num_classes == 2 else F.cross_entropy
                        per = crit(out, onehot, reduction="none")
                        per = per.mean(1) if per.ndim == 2 else per
                    loss = (per * wb).mean() if sample_weight is not None else per.mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                if self.mode == "ride":
                    if valid_loader is not None:
                        self._pass(model, tap, None, valid_loader, device, end=False)
                    valuer.end_epoch()
        self.model_fits = 1
        self.train_time_s = time.perf_counter() - start
        self.trained_model = model
        return self

    @torch.no_grad()
    def _pass(self, model, tap, loader, valid_loader, device, end=True):
        """No-grad pass in eval mode: training factors (loader) and/or validation α rows, then end the epoch."""
        was = model.training
        model.eval()
        try:
            for ld, train in ((loader, True), (valid_loader, False)):
                if ld is None:
                    continue
                for xb, yb, _, idx in ld:
                    xb, yb = xb.to(device), yb.to(device)
                    model(xb)
                    f = factors_from_logits(tap.logits, yb, tap.feat)
                    self.valuer.add(idx, f, yb) if train else self.valuer.add_validation(f, yb)
        finally:
            model.train(was)
        if end:
            self.valuer.end_epoch()

    def evaluate_data_values(self) -> np.ndarray:
        """Average CHG Shapley value of each training point over the epochs (n,); higher = more valuable."""
        if not hasattr(self, "valuer"):
            raise ValueError("CHGShapley: call train_data_values (or train) before evaluate_data_values")
        values = self.valuer.values().numpy()
        if np.isnan(values).any():  # cannot happen with the plugin's own loaders; 0 would not be a neutral rank
            raise RuntimeError(f"CHGShapley: {int(np.isnan(values).sum())} training points were never valued")
        return values


if __name__ == "__main__":  # python -m chg.opendataval …: opendataval's CLI with "chgshapley" registered
    import chg.opendataval  # noqa: F401  (registers the canonical class before the CLI lists evaluators)
    from opendataval.__main__ import cli
    cli()
