"""The data-selection baselines of Table 2, each a plain function ``select_xxx(inp) -> Selection``.

``inp`` is a :class:`chg.selection.SelectionInput` (duck-typed: ``factors``, ``labels``, ``fraction``, ``generator``,
``val_factors``, ``val_labels``, ``batch_size``). Budget k = round(a·n) over the whole pool for all of them.

* :func:`select_random` / :func:`select_adaptive_random` — uniform subset (drawn once / re-drawn every R epochs).
* :func:`select_glister` — GLISTER-ONLINE greedy Taylor selection on last-layer gradients (needs a validation set).
* :func:`select_gradmatch_pb` — GradMatch per-batch: non-negative OMP on mini-batch gradients, weighted batches.

Hardness and Gradient Shapley are the CHG machinery with another weighting (:func:`chg.shapley_from_factors`).
"""
from .glister import glister_greedy, select_glister
from .gradmatch import batch_gradients, gradmatch_pb, nonneg_omp, select_gradmatch_pb
from .random_subset import budget, random_subset, select_adaptive_random, select_random

__all__ = ["budget", "random_subset", "select_random", "select_adaptive_random", "glister_greedy", "select_glister",
           "batch_gradients", "nonneg_omp", "gradmatch_pb", "select_gradmatch_pb"]
