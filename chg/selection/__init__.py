r"""Data selection: Algorithm 2 (CHG Shapley), its ablations and the baselines of Table 2, behind one interface.

Modules (each imports only :mod:`chg.selection.interface` from this package, so there is no import cycle):

- :mod:`~chg.selection.interface` — :class:`SelectionInput`, :class:`Selection`, :class:`Selector`, the budgets
  (:func:`budget`: k = round(a·n) for every method; :func:`class_budgets`: Algorithm 2's per-class shares of k),
  :func:`check_selection`, and the registry :data:`SELECTORS` (:func:`register`, :func:`get_selector`);
- :mod:`~chg.selection.algorithm2` — Algorithm 2 (``chg``, ``chg_unweighted``), the Hardness and Gradient Shapley
  ablations (``hardness``, ``gradient``), and the whole pool (``full``);
- :mod:`~chg.selection.random_subset` — ``random``, ``adaptive_random``;
- :mod:`~chg.selection.glister` — GLISTER-ONLINE (``glister``);
- :mod:`~chg.selection.gradmatch` — GradMatch per-batch (``gradmatch_pb``).

Importing this package imports every method module, so :data:`SELECTORS` is complete and a broken method fails at
import time, not in the middle of a training run.
"""
from .interface import (SELECTORS, Selection, SelectionInput, Selector, as_labels, budget, check_fraction,
                        check_selection, class_budgets, get_selector, make_selection, pool_size, register)
from .algorithm2 import (TIE_RTOL, algorithm2, minmax_weights, select_chg, select_chg_ride,
                         select_chg_unweighted, select_full,
                         select_gradient, select_hardness, top_k_per_class)
from .random_subset import random_subset, select_adaptive_random, select_random
from .glister import glister_greedy, select_glister
from .gradmatch import batch_gradients, gradmatch_pb, nonneg_omp, select_gradmatch_pb

__all__ = ["SelectionInput", "Selection", "Selector", "SELECTORS", "register", "get_selector", "check_fraction",
           "budget", "class_budgets", "check_selection", "make_selection", "pool_size", "as_labels", "TIE_RTOL",
           "top_k_per_class", "minmax_weights", "algorithm2", "select_full", "select_chg", "select_chg_ride",
           "select_chg_unweighted", "select_hardness", "select_gradient", "random_subset", "select_random",
           "select_adaptive_random",
           "glister_greedy", "select_glister", "batch_gradients", "nonneg_omp", "gradmatch_pb", "select_gradmatch_pb"]
