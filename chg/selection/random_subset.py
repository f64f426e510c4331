r"""Random and AdaptiveRandom: a uniform random subset of the pool, all weights 1 (Table 2's simplest baselines).

Draw :math:`k = \mathrm{round}(a\,n)` (:func:`chg.selection.budget`) distinct indices uniformly from the whole pool
of n points (without replacement, **not** class-balanced — as CORDS' ``RandomStrategy``,
``np.random.choice(N, k, replace=False)``).

* **Random** draws once, at the start of training, and keeps that subset (the trainer calls it once).
* **AdaptiveRandom** is the same draw, repeated every R epochs (the trainer calls it every R epochs; the generator's
  state has moved on, so the subset differs).

The two functions differ only by name, so the registry and the result files can tell the methods apart.

The budget rule :math:`k` and the input checks are the shared ones of :mod:`chg.selection.interface`.
"""
from __future__ import annotations

import torch

from .interface import Selection, SelectionInput, budget, make_selection, pool_size, register

__all__ = ["random_subset", "select_random", "select_adaptive_random"]


def random_subset(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct indices drawn uniformly from range(n), without replacement.

    Args:
        n: the pool size. k: how many. generator: the only source of randomness.
    Returns:
        (k,) int64, sorted, on the generator's device.
    Raises:
        ValueError: k outside [1, n].
    """
    if not 1 <= k <= n:
        raise ValueError(f"cannot draw k = {k} distinct points from a pool of n = {n}")
    perm = torch.randperm(n, generator=generator, device=generator.device)  # (n,)
    return perm[:k].sort().values


def _uniform(inp: SelectionInput) -> Selection:
    n = pool_size(inp)
    return make_selection(random_subset(n, budget(n, inp.fraction), inp.generator))


_DOC = """

    Args:
        inp: the pool (:class:`chg.selection.SelectionInput`): its labels, fraction and generator.
    Returns:
        :class:`Selection` of round(a·n) sorted int64 indices, weights 1.
    Raises:
        ValueError: an empty pool (see :func:`chg.selection.budget`).
    """


@register("random", needs_factors=False, adaptive=False)
def select_random(inp: SelectionInput) -> Selection:
    return _uniform(inp)


@register("adaptive_random", needs_factors=False, adaptive=True)
def select_adaptive_random(inp: SelectionInput) -> Selection:
    return _uniform(inp)


select_random.__doc__ = "Random: one uniform subset of round(a·n) points, drawn once at the start of training." + _DOC
select_adaptive_random.__doc__ = ("AdaptiveRandom: the same uniform draw as :func:`select_random`, re-drawn every R "
                                  "epochs by the trainer (the generator has moved on)." + _DOC)
