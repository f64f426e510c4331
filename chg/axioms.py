r"""The four Shapley axioms (paper §2) as reusable checkers, shared by ``tests/``, ``proofs/`` and the notebooks.

Each ``check_*`` returns ``None`` when the axiom holds and raises ``AssertionError`` with a message naming the
players and numbers when it does not. ``utility`` takes a sorted tuple of player indices (``()`` is the empty set),
as in :func:`chg.games.exact_shapley`. Comparisons are exact (``==``) when ``exact=True`` — use it with ``Fraction``
values and utilities — and otherwise ``|x − y| ≤ atol + rtol·|y|`` with the tolerances given explicitly.

- **Efficiency**: :math:`\sum_i \phi_i = U(N) - U(\emptyset)` (the paper writes U(N); it takes U(∅) = 0).
- **Symmetry**: if :math:`U(S\cup i) = U(S\cup j)` for all :math:`S\subseteq N\setminus\{i,j\}`, then φ_i = φ_j.
- **Dummy**: if :math:`U(S\cup i) = U(S)` for all :math:`S\subseteq N\setminus i`, then φ_i = 0.
- **Linearity**: :math:`\phi(a_1U_1 + a_2U_2) = a_1\phi(U_1) + a_2\phi(U_2)`.

Symmetry and Dummy are conditional: :func:`symmetric_pairs` and :func:`dummy_players` find the players to which they
apply (by enumerating all subsets), so a test can assert that its game really has some — a check over none is
vacuous. In the CHG game a player with :math:`x_j = 0` is *not* a dummy: adding it changes |S| and so the mean
(:math:`U(\{i, j\}) \ne U(\{i\})` in general); :func:`planted_chg_game` plants symmetric players (equal vectors) only.
"""
from __future__ import annotations

import random
from fractions import Fraction
from itertools import combinations
from typing import Callable, Sequence

__all__ = ["check_efficiency", "check_symmetry", "check_dummy", "check_linearity", "symmetric_pairs",
           "dummy_players", "planted_chg_game", "MAX_PLAYERS"]

MAX_PLAYERS = 16  # the conditional checks enumerate all subsets


def _close(x, y, exact: bool, rtol: float, atol: float) -> bool:
    if exact:
        return x == y
    return abs(float(x) - float(y)) <= atol + rtol * abs(float(y))


def _check_args(values, n: int, exact: bool, rtol: float, atol: float) -> None:
    if n < 1:
        raise ValueError(f"the player set is empty (n = {n})")
    if n > MAX_PLAYERS:
        raise ValueError(f"n = {n} players: enumerating 2^{n} subsets is too much (at most {MAX_PLAYERS})")
    if values is not None and len(values) != n:
        raise ValueError(f"got {len(values)} values for n = {n} players")
    if not exact and (rtol < 0 or atol < 0 or (rtol == 0 and atol == 0)):
        raise ValueError(f"with exact=False give tolerances rtol, atol >= 0, not both 0 (got {rtol}, {atol})")


def _others(n: int, *excluded: int):
    rest = [p for p in range(n) if p not in excluded]
    for size in range(len(rest) + 1):
        yield from combinations(rest, size)


def _with(subset: tuple, *players: int) -> tuple:
    return tuple(sorted(subset + players))


def check_efficiency(values: Sequence, utility: Callable[[tuple], object], n: int, *, exact: bool = True,
                     rtol: float = 0.0, atol: float = 0.0) -> None:
    r"""Efficiency: :math:`\sum_i \phi_i = U(N) - U(\emptyset)` (paper §2).

    Args:
        values: the n values φ_i (numbers or Fractions), player i at position i.
        utility: U, a function of a sorted tuple of player indices (``()`` the empty set).
        n: the number of players, 1 ≤ n ≤ :data:`MAX_PLAYERS`.
        exact, rtol, atol: exact comparison (``==``), or ``|x − y| ≤ atol + rtol·|y|`` (see the module docstring).
    Returns:
        None when the axiom holds.
    Raises:
        AssertionError: the axiom does not hold (the message names the players and numbers).
        ValueError: n outside [1, MAX_PLAYERS], ``len(values) != n``, or ``exact=False`` without a tolerance.
    """
    _check_args(values, n, exact, rtol, atol)
    total = sum(values, Fraction(0) if exact else 0.0)
    target = utility(tuple(range(n))) - utility(())
    if not _close(total, target, exact, rtol, atol):
        raise AssertionError(f"Efficiency fails: sum of values = {total} but U(N) - U(∅) = {target} "
                             f"(difference {total - target}; exact={exact}, rtol={rtol}, atol={atol})")


def symmetric_pairs(utility: Callable[[tuple], object], n: int, *, exact: bool = True, rtol: float = 0.0,
                    atol: float = 0.0) -> list:
    """All pairs (i, j), i < j, with U(S ∪ i) = U(S ∪ j) for every S ⊆ N ∖ {i, j} (the premise of Symmetry).

    Args:
        utility, n, exact, rtol, atol: as in :func:`check_efficiency`.
    Returns:
        list of (i, j) tuples of ints, i < j, in lexicographic order.
    Raises:
        ValueError: as :func:`check_efficiency`.
    """
    _check_args(None, n, exact, rtol, atol)
    cache = {}

    def u(s):
        if s not in cache:
            cache[s] = utility(s)
        return cache[s]
    return [(i, j) for i, j in combinations(range(n), 2)
            if all(_close(u(_with(s, i)), u(_with(s, j)), exact, rtol, atol) for s in _others(n, i, j))]


def dummy_players(utility: Callable[[tuple], object], n: int, *, exact: bool = True, rtol: float = 0.0,
                  atol: float = 0.0) -> list:
    """All players i with U(S ∪ i) = U(S) for every S ⊆ N ∖ i (the premise of Dummy).

    Args:
        utility, n, exact, rtol, atol: as in :func:`check_efficiency`.
    Returns:
        list of player indices (ints), ascending.
    Raises:
        ValueError: as :func:`check_efficiency`.
    """
    _check_args(None, n, exact, rtol, atol)
    return [i for i in range(n)
            if all(_close(utility(_with(s, i)), utility(s), exact, rtol, atol) for s in _others(n, i))]


def check_symmetry(values: Sequence, utility: Callable[[tuple], object], n: int, *, pairs=None, exact: bool = True,
                   rtol: float = 0.0, atol: float = 0.0) -> None:
    """Symmetry: φ_i = φ_j for every symmetric pair of the game.

    Args:
        values, utility, n, exact, rtol, atol: as in :func:`check_efficiency`.
        pairs: the pairs (i, j) to check; each is first verified to be symmetric in ``utility`` (a premise that does
            not hold is an error, not a pass). Default: every symmetric pair found by :func:`symmetric_pairs`.
    Returns:
        None when the axiom holds.
    Raises:
        AssertionError: a pair that is not symmetric, or symmetric players with different values.
        ValueError: as :func:`check_efficiency`.
    """
    _check_args(values, n, exact, rtol, atol)
    found = symmetric_pairs(utility, n, exact=exact, rtol=rtol, atol=atol)
    if pairs is None:
        pairs = found
    for i, j in pairs:
        if (min(i, j), max(i, j)) not in found:
            raise AssertionError(f"Symmetry premise fails: players {i} and {j} are not symmetric in this game")
        if not _close(values[i], values[j], exact, rtol, atol):
            raise AssertionError(f"Symmetry fails: players {i} and {j} are symmetric but φ_{i} = {values[i]} "
                                 f"!= φ_{j} = {values[j]} (exact={exact}, rtol={rtol}, atol={atol})")


def check_dummy(values: Sequence, utility: Callable[[tuple], object], n: int, *, players=None, exact: bool = True,
                rtol: float = 0.0, atol: float = 0.0) -> None:
    """Dummy: φ_i = 0 for every dummy player (``players``, verified to be dummies; default all found).

    With ``exact=False`` the comparison with 0 uses ``atol`` only (a relative tolerance to 0 means nothing); finding
    the dummies uses both tolerances.

    Args:
        values, utility, n, exact, rtol, atol: as in :func:`check_efficiency`.
        players: the players to check (verified to be dummies); default every dummy found by :func:`dummy_players`.
    Returns:
        None when the axiom holds.
    Raises:
        AssertionError: a player that is not a dummy, or a dummy with a nonzero value.
        ValueError: as :func:`check_efficiency`.
    """
    _check_args(values, n, exact, rtol, atol)
    found = dummy_players(utility, n, exact=exact, rtol=rtol, atol=atol)
    if players is None:
        players = found
    for i in players:
        if i not in found:
            raise AssertionError(f"Dummy premise fails: player {i} is not a dummy in this game")
        if not _close(values[i], 0, exact, 0.0, atol if not exact else 0.0):
            raise AssertionError(f"Dummy fails: player {i} is a dummy but φ_{i} = {values[i]} "
                                 f"(exact={exact}, atol={atol})")


def check_linearity(shapley_fn: Callable, u1: Callable[[tuple], object], u2: Callable[[tuple], object], a1, a2,
                    n: int, *, exact: bool = True, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Linearity: ``shapley_fn(a1·u1 + a2·u2, n) == a1·shapley_fn(u1, n) + a2·shapley_fn(u2, n)`` player by player.

    Args:
        shapley_fn: ``shapley_fn(utility, n)`` returns the n values of a game (e.g. :func:`chg.games.exact_shapley`,
            or a closed form wrapped to take a utility).
        u1, u2: the two utilities; a1, a2: their coefficients (numbers or Fractions).
        n, exact, rtol, atol: as in :func:`check_efficiency`.
    Returns:
        None when the axiom holds.
    Raises:
        AssertionError: a player whose value of the combined game differs (the message names it and the numbers).
        ValueError: as :func:`check_efficiency`.
    """
    _check_args(None, n, exact, rtol, atol)
    combined = shapley_fn(lambda s: a1 * u1(s) + a2 * u2(s), n)
    v1, v2 = shapley_fn(u1, n), shapley_fn(u2, n)
    for i in range(n):
        want = a1 * v1[i] + a2 * v2[i]
        if not _close(combined[i], want, exact, rtol, atol):
            raise AssertionError(f"Linearity fails at player {i}: φ(a1·U1 + a2·U2) = {combined[i]} but "
                                 f"a1·φ(U1) + a2·φ(U2) = {want} (a1={a1}, a2={a2}; exact={exact}, rtol={rtol}, "
                                 f"atol={atol})")


def planted_chg_game(n: int, d: int = 2, *, copies: Sequence[int] = (0, 1), seed: int = 0) -> tuple:
    """Random Fraction vectors ``x`` (n × d) and target ``alpha`` for the CHG game, with ``x[i] = x[copies[0]]``
    for every i in ``copies`` — those players are symmetric by construction.

    Args:
        n: players (≥ 1); d: vector length (≥ 1); copies: player indices given equal vectors; seed: the RNG seed.
    Returns:
        ``(x, alpha)``: a list of n lists of d Fractions, and a list of d Fractions.
    Raises:
        ValueError: n or d below 1, or a copy index outside [0, n).
    """
    if n < 1 or d < 1:
        raise ValueError(f"planted_chg_game: need n >= 1 and d >= 1, got n = {n}, d = {d}")
    if any(not 0 <= c < n for c in copies):
        raise ValueError(f"planted_chg_game: copies {list(copies)} must be player indices in [0, {n})")
    rng = random.Random(seed)
    x = [[Fraction(rng.randint(-6, 6), rng.randint(1, 4)) for _ in range(d)] for _ in range(n)]
    for c in copies:
        x[c] = list(x[copies[0]])
    alpha = [Fraction(rng.randint(-6, 6), rng.randint(1, 4)) for _ in range(d)]
    return x, alpha
