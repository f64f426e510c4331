"""torch.distributed helpers: the few collectives that multi-process valuation needs.

Everything Theorem 1 needs from the whole data set is a sum (group size, Σx_i, Σ‖x_i‖²), so a multi-process run
all-reduces those statistics (:meth:`chg.factored.GroupStats.all_reduce`), values each rank's own rows locally, and
shares the values. Collectives run on the device of the data (NCCL needs CUDA tensors; gloo works on CPU).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "one_process", "group_ids", "all_gather_values", "lowest_rank",
           "collective_device", "every_rank"]


def is_distributed() -> bool:
    """Whether this process is one of several ranks of an initialised default process group (e.g. ``torchrun``).

    Returns:
        bool: True inside a group of more than one rank.
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def one_process(what: str) -> None:
    """Refuse a single-process helper (:func:`chg.value_data` and the loops behind it) inside a process group of
    several ranks: each rank would train its own copy of the model on every row, and the all-reduced values would be
    those of the lowest rank's model alone — the others' training silently ignored.

    Args:
        what: the helper's name, for the message.
    Raises:
        RuntimeError: ``torch.distributed`` is initialised with more than one process (``torchrun``,
            ``mp.spawn``, ...), naming what to use instead.
    """
    if is_distributed():
        raise RuntimeError(
            f"{what} is a single-process helper, but torch.distributed is initialised with {dist.get_world_size()} "
            f"processes (this is rank {dist.get_rank()}; torchrun?): every rank would train its own copy of the "
            "model on every row, and the values would be those of the lowest rank's model alone. Under torchrun, "
            "write the loop with chg.EpochValuer and a DistributedSampler (each rank adds its shard, end_epoch "
            "all-reduces; docs/torchrun.md), or run it in one process (python, not torchrun)")


def group_ids(groups: torch.Tensor, per_class: bool, ddp: bool, device) -> list:
    """The groups to value, identical on every rank under ``ddp``.

    Args:
        groups: (m,) int64 group labels of this rank's rows. per_class: each label its own group (else one group, 0).
        ddp: take part in an all-reduce (every rank must call this). device: where the collective runs.
    Returns:
        list of int: [0] without ``per_class``; the labels present (one rank) or 0..max label over all ranks (ddp).
    """
    if not per_class:
        return [0]
    if not ddp:
        return torch.unique(groups).tolist()
    top = torch.tensor([int(groups.max()) if groups.numel() else -1], dtype=torch.int64, device=device)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    return list(range(int(top.item()) + 1))


def all_gather_values(values: torch.Tensor, device) -> torch.Tensor:
    """Combine per-rank value vectors; rows valued on several ranks (padded samplers) are averaged. A collective:
    every rank must call it.

    Args:
        values: (n,) float64, this rank's values, NaN where it did not value a row. device: where the all-reduce runs
            (CUDA for NCCL).
    Returns:
        (n,) float64 CPU tensor, NaN where no rank valued a row.
    """
    seen = ~torch.isnan(values)
    buf = torch.stack([torch.where(seen, values, torch.zeros_like(values)), seen.to(torch.float64)]).to(device)
    dist.all_reduce(buf)
    total, count = buf[0].cpu(), buf[1].cpu()
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def lowest_rank(seen: torch.Tensor) -> tuple:
    """Which rank owns each row: the lowest rank that has it (rows that ``DistributedSampler`` pads onto several
    ranks are one player, on one rank). A collective: every rank must call it.

    Args:
        seen: (n,) bool, this rank has the row (on the device the backend needs).
    Returns:
        ``(owner, rank, world)``: (n,) int64 the owning rank of every row (``world`` where no rank has it), this
        process's rank, the number of ranks.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    owner = torch.where(seen, rank, world).to(torch.int64)
    dist.all_reduce(owner, op=dist.ReduceOp.MIN)
    return owner, rank, world


def collective_device() -> torch.device:
    """Where a collective's tensors go when a rank has no data to say it: the current CUDA device under NCCL (which
    takes CUDA tensors only), else the CPU.

    Returns:
        a ``torch.device``.
    """
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def every_rank(row: list) -> torch.Tensor:
    """Each rank's few integers, known to every rank (an all-reduce of a (world, k) table in which each rank fills
    its own row): what ranks must agree on before a collective that one of them could not join (an empty shard, an
    error in its rows). A collective: every rank must call it, with rows of one length.

    Args:
        row: this rank's k integers.
    Returns:
        (world, k) int64 CPU tensor, row r the integers of rank r.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    table = torch.zeros(world, len(row), dtype=torch.int64, device=collective_device())
    table[rank] = torch.tensor([int(v) for v in row], dtype=torch.int64)
    dist.all_reduce(table)
    return table.cpu()
