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
output activation: the hook on the model's final ``nn.Linear`` (:class:`chg.lastlayer.LastLayerTap`, with
``output="probabilities"``: the model's output is checked to be the sigmoid or softmax of that layer's output, so
an extra ``nn.Linear`` registered after the output layer, or the output layer run twice, is a clear error) takes its
*output* as the logits, and with
``loss="logits"`` (default) the plugin trains with proper softmax cross-entropy on them, so the loss :math:`l_i`
and the error :math:`e_i = \mathrm{softmax}(z_i) - \mathrm{onehot}(y_i)` of Theorem 1 are those of the model that
is trained. ``loss="model"`` instead trains exactly as opendataval's ``fit`` does (double activation kept), while the
values still use softmax cross-entropy on the logits of that model. Either way the pred_model that opendataval's
experiments (point removal/addition) retrain is untouched.

Needs a torch ``pred_model`` whose last ``nn.Linear`` produces the class scores, with or without bias (all of
opendataval's torch classifiers); sklearn-wrapped models raise a ValueError. Classification only.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from opendataval.dataval.api import DataEvaluator, ModelMixin

from .factored import Options
from .lastlayer import as_targets, per_sample_loss
from .loop import MODES, ValueDataConfig, train_and_value
from .renames import OPTIONS_REMOVED, renamed
from .valuation import EpochValuer, count
from .values import Values

__all__ = ["CHGShapley"]

LOSSES = ("logits", "model")


class _Rows(Dataset):
    """(x_i, y_i) from tensors or Datasets (opendataval passes either, possibly ``Subset``s)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@renamed("0.3.0", options=OPTIONS_REMOVED)
@renamed("0.2.0", weighting="utility")
class CHGShapley(DataEvaluator, ModelMixin):
    """CHG Shapley (Cai, 2024), Algorithm 1, as an OpenDataVal data evaluator.

    Args:
        epochs: training epochs of the valuation run (int ≥ 1); default None = ``train_kwargs["epochs"]``
            (opendataval's default 1). Values are averaged over the epochs.
        mode: "pass" (Algorithm 1 exactly): a no-grad pass over the training set at the start of each epoch gives
            the epoch's values. "ride": values from the training forward passes themselves (no extra pass; each batch
            at its own step's parameters).
        per_class: value each class as its own game (α and statistics per class).
        alpha: "train" | "valid": α = mean of l_i g_i over the training set (the paper) or over opendataval's
            validation split.
        utility: "chg" | "gradient" | "hardness" (``weighting`` before 0.2.0); gradient: "full" | "bias"; as in
            :class:`chg.Options`.
        loss: "logits" | "model": how the valuation run trains (see the module docstring on the double activation).
        random_state: a NumPy ``RandomState`` (opendataval's), seeding the run.
    Raises:
        TypeError: an option of the wrong type. ValueError: an unknown mode, loss or option, or epochs below 1.

    After training, :attr:`values` is the run's :class:`chg.Values` (every epoch's values, suspects, plots, save);
    :meth:`evaluate_data_values` gives OpenDataVal its (n,) NumPy array, the same numbers.

    The run is :func:`chg.loop.train_and_value`, the loop of :func:`chg.value_data`: the same hook, checks and
    valuer as the core (``output="probabilities"``: the model may return its logits' sigmoid or softmax).
    """

    def __init__(self, epochs: Optional[int] = None, mode: str = "pass", per_class: bool = False,
                 alpha: str = "train", utility: str = "chg", gradient: str = "full", loss: str = "logits",
                 random_state=None):
        super().__init__(random_state)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if epochs is not None:
            epochs = count(epochs, "CHGShapley: epochs", 1)
        self.options = Options(utility=utility, gradient=gradient, alpha=alpha, per_class=per_class)
        self.epochs, self.mode, self.loss = epochs, mode, loss
        self.utility, self.gradient = self.options.utility, self.options.gradient
        self.per_class, self.alpha = self.options.per_class, self.options.alpha
        self.model_fits = 0

    def input_data(self, x_train, y_train, x_valid, y_valid):
        """Store the data (opendataval's ``DataEvaluator`` API).

        Args:
            x_train, x_valid: (n, d) / (n_V, d) tensors or Datasets of inputs. y_train, y_valid: one-hot (n, C) or
                integer (n,) labels.
        Returns:
            ``self``.
        """
        self.x_train, self.y_train, self.x_valid, self.y_valid = x_train, y_train, x_valid, y_valid
        self.num_points = len(y_train)
        return self

    @staticmethod
    def _labels(y) -> torch.Tensor:
        """Integer class labels (n,) from opendataval's one-hot (n, C ≥ 2) labels, or from integer labels (n,) or
        (n, 1) (a column).

        Raises:
            ValueError: a 2-D array that is not one-hot (each row one 1, the rest 0), floating labels of one
                column, or any other shape.
        """
        given = tuple(getattr(y, "shape", np.shape(y)))
        if not isinstance(y, torch.Tensor):
            y = np.array(y)  # (a copy: pandas is read-only)
            if y.dtype.kind in "OUS":  # text labels, or missing ones: named, with what to do
                try:
                    y = as_targets(y.reshape(-1)).reshape(y.shape)
                except ValueError as e:
                    raise ValueError(f"CHGShapley: labels: {str(e).replace('targets', 'the labels', 1)}") from None
            y = torch.as_tensor(y)
        if y.dtype == torch.bool:  # one-hot as True/False, or a column of 0/1 labels
            y = y.to(torch.uint8)
        if y.ndim == 2 and y.shape[1] == 1:  # a column of labels, not a one-hot of one class
            y = y[:, 0]
        elif y.ndim == 2:
            hot = (y == 1).sum(1)
            if not bool(((y == 0) | (y == 1)).all()) or not bool((hot == 1).all()):
                bad = int(torch.nonzero(~(((y == 0) | (y == 1)).all(1)) | (hot != 1))[0])
                raise ValueError(f"CHGShapley: labels of shape {tuple(y.shape)} are read as one-hot (one 1 per "
                                 f"row, the rest 0), but row {bad} is {y[bad].tolist()}: pass one-hot rows or "
                                 "integer class labels (n,)")
            return y.argmax(1)
        if y.ndim == 1 and not torch.is_floating_point(y) and not y.is_complex():
            return y.long()
        raise ValueError(f"CHGShapley needs classification labels (one-hot (n, C) or integer (n,) or (n, 1)), got "
                         f"{given} {y.dtype}")

    def train_data_values(self, *args, **kwargs):
        """Train the model once and value every point each epoch (Algorithm 1). The global torch RNG is seeded from
        opendataval's random_state for this run only (forked), so evaluators run after this one are unaffected.

        Args:
            *args, **kwargs: opendataval's ``train_kwargs``: ``batch_size`` (32), ``epochs`` (1; ``self.epochs``
                wins), ``lr`` (0.01), ``sample_weight`` ((n,) per-sample weights of the training loss, or None).
        Returns:
            ``self``, with ``valuer`` (the :class:`chg.EpochValuer`) and ``model_fits`` = 1.
        Raises:
            ValueError: no torch ``pred_model``, epochs below 1, a ``sample_weight`` of the wrong length, labels
                that are not classes (and as :func:`chg.valuation.train_and_value`).
        """
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
        epochs = int(self.epochs if self.epochs is not None else epochs)
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        y = self._labels(self.y_train)
        valid = _Rows(self.x_valid, self._labels(self.y_valid)) if self.alpha == "valid" else None
        weights = None
        if sample_weight is not None:
            weights = torch.as_tensor(np.asarray(sample_weight) if not isinstance(sample_weight, torch.Tensor)
                                      else sample_weight).reshape(-1).float()
            if weights.shape[0] != self.num_points:
                raise ValueError(f"sample_weight has {weights.shape[0]} entries for {self.num_points} points")
        seed = int(self.random_state.randint(0, 2**31 - 1))
        torch.manual_seed(seed)
        cfg = ValueDataConfig(epochs=epochs, batch_size=int(batch_size), lr=lr, optimizer="adam", mode=self.mode,
                              eval_batch_size=1024, seed=seed)
        self.valuer = EpochValuer(self.num_points, **dataclasses.asdict(self.options))
        rows = TensorDataset(self.x_train, y) if isinstance(self.x_train, torch.Tensor) else _Rows(self.x_train, y)
        train_and_value(model, rows, valid, cfg, self.valuer, output="probabilities", loss_fn=self._loss_fn(weights))
        self.model_fits = 1
        return self

    def _loss_fn(self, weights: Optional[torch.Tensor]):
        """The training loss: softmax cross-entropy on the logits (``loss="logits"``), or exactly opendataval's
        ``TorchClassMixin.fit`` criterion on the model's activated output (``loss="model"``); sample weights as
        opendataval applies them (the weighted per-sample losses, averaged)."""
        def loss_fn(out, logits, y, idx):
            if self.loss == "logits":
                per = per_sample_loss(logits, y)
            else:
                num_classes = logits.shape[1]
                onehot = F.one_hot(y, num_classes).to(out.dtype)
                crit = F.binary_cross_entropy if num_classes == 2 else F.cross_entropy
                per = crit(out, onehot, reduction="none")
                per = per.mean(1) if per.ndim == 2 else per
            if weights is None:
                return per.mean()
            return (per * weights[idx].to(per.device, per.dtype)).mean()
        return loss_fn

    @property
    def values(self) -> Values:
        """The valuation run's :class:`chg.Values` (per-epoch history, suspects, plot, save).

        Raises:
            ValueError: read before ``train_data_values``.
        """
        if not hasattr(self, "valuer"):
            raise ValueError("CHGShapley: call train_data_values (or train) before evaluate_data_values / values")
        return self.valuer.values(mode=self.mode)

    def evaluate_data_values(self) -> np.ndarray:
        """Average CHG Shapley value of each training point over the epochs; higher = more valuable.

        Returns:
            (n,) float64 NumPy array.
        Raises:
            ValueError: called before ``train_data_values``.
            RuntimeError: a training point was never valued (cannot happen with the plugin's own loaders).
        """
        values = self.values.numpy()
        if np.isnan(values).any():  # cannot happen with the plugin's own loaders; 0 would not be a neutral rank
            raise RuntimeError(f"CHGShapley: {int(np.isnan(values).sum())} training points were never valued")
        return values


if __name__ == "__main__":  # python -m chg.opendataval …: opendataval's CLI with "chgshapley" registered
    import chg.opendataval  # noqa: F401  (registers the canonical class before the CLI lists evaluators)
    from opendataval.__main__ import cli
    cli()
