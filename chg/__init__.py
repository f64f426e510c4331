"""CHG Shapley: closed-form data values of the CHG utility during one training run (Cai, 2024).

Core entry points: :func:`chg_shapley` (Theorem 1 on dense vectors), :func:`shapley_from_factors` (the same values
from last-layer factors, no per-sample gradients), :func:`exact_shapley` (the enumeration oracle);
:func:`compute_factors` / :class:`LastLayerTap` (the one path from a model and its batches to those factors) and
:func:`value_data` / :class:`EpochValuer` (Algorithm 1 during training).

Every route returns a :class:`Values`. Settings are keywords everywhere (0.3.0 removed ``options=`` and
``config=``); version 0.2.0 gave the keywords the field's names (``utility``, ``loss``); an old keyword is a
``TypeError`` naming the new one (:mod:`chg.renames`; CHANGELOG.md lists them). The paper's harness is
:mod:`chg.experiments`, which the library never imports.
"""
from .factored import (GroupStats, Options, epoch_values, factored_shapley, group_stats, shapley_from_factors,
                       values_from_factors)
from .games import exact_shapley
from .lastlayer import Factors, LastLayerTap, compute_factors, find_last_linear, loss_and_error, per_sample_loss
from .shapley import chg_shapley, chg_shapley_exact, coefficients, hardness_shapley
from .loop import train_and_value, value_data
from .valuation import EpochValuer, IndexedDataset, separate_pass
from .values import Values
from . import report  # noqa: F401  chg.report: save, rank, plot values, list suspects
from . import sequence  # noqa: F401  chg.sequence: language models and token classifiers

__version__ = "0.3.0"
__all__ = ["chg_shapley", "chg_shapley_exact", "coefficients", "hardness_shapley", "exact_shapley",
           "shapley_from_factors", "Options",
           "factored_shapley", "group_stats", "values_from_factors", "GroupStats", "Factors",
           "LastLayerTap", "compute_factors", "find_last_linear", "per_sample_loss", "EpochValuer", "IndexedDataset",
           "value_data", "Values", "epoch_values", "loss_and_error", "separate_pass", "train_and_value"]
