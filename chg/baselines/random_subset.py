r"""Random and AdaptiveRandom: a uniform random subset of the pool, all weights 1 (Table 2's simplest baselines).

Draw :math:`k = \max(1, \lfloor a n + \tfrac12 \rceil)` distinct indices uniformly from the whole pool of n points
(without replacement, **not** class-balanced — as CORDS' ``RandomStrategy``, ``np.random.choice(N, k, replace=False)``).

* **Random** draws once, at the start of training, and keeps that subset (the trainer calls it once).
* **AdaptiveRandom** is the same draw, repeated every R epochs (the trainer calls it every R epochs; the generator's
  state has moved on, so the subset differs).

The two functions differ only by name, so the registry and the result files can tell the methods apart.

This module also holds the budget rule and the input checks that every baseline shares.
"""
from __future__ import annotations

import math
import numbers

import torch

__all__ = ["budget", "pool_size", "random_subset", "select_random", "select_adaptive_random"]


def budget(n: int, fraction: float) -> int:
    r"""Subset size :math:`k = \mathrm{round}(a\,n)` (half up), at least 1 and at most n.

    Raises ValueError for an empty pool or a fraction outside (0, 1].
    """
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if n < 1:
        raise ValueError(f"the candidate pool is empty (n = {n}): nothing to select from")
    return min(n, max(1, math.floor(fraction * n + 0.5)))


def pool_size(inp) -> int:
    """Number of pool points, from ``inp.labels`` (checked against ``inp.factors`` when present)."""
    labels = inp.labels
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D tensor of pool labels, got {_describe(labels)}")
    n = labels.shape[0]
    factors = getattr(inp, "factors", None)
    if factors is not None and factors.err.shape[0] != n:
        raise ValueError(f"factors have {factors.err.shape[0]} rows but labels have {n}: they must describe the "
                         f"same pool")
    return n


def _describe(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def make_selection(indices: torch.Tensor, weights: torch.Tensor | None = None):
    """The shared :class:`chg.selection.Selection` record: int64 indices (k,), float32 weights (k,) (default ones)."""
    from chg.selection import Selection  # imported late: chg.selection imports this package
    indices = indices.to(torch.int64)
    if weights is None:
        weights = torch.ones(indices.shape[0], dtype=torch.float32, device=indices.device)
    return Selection(indices=indices, weights=weights.to(torch.float32))


def random_subset(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct indices drawn uniformly from range(n), sorted; (k,) int64 on the generator's device."""
    if not 1 <= k <= n:
        raise ValueError(f"cannot draw k = {k} distinct points from a pool of n = {n}")
    perm = torch.randperm(n, generator=generator, device=generator.device)  # (n,)
    return perm[:k].sort().values


def select_random(inp):
    """Random: one uniform subset of round(a·n) points, drawn once at the start of training; weights 1."""
    n = pool_size(inp)
    return make_selection(random_subset(n, budget(n, inp.fraction), inp.generator))


def select_adaptive_random(inp):
    """AdaptiveRandom: the same uniform draw as :func:`select_random`, re-drawn every R epochs by the trainer."""
    n = pool_size(inp)
    return make_selection(random_subset(n, budget(n, inp.fraction), inp.generator))
