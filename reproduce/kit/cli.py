"""The command line every reproduce script shares.

    --scale smoke|quick|medium|paper   which preset (the scales the script defines; default: paper with CUDA, else
                                       quick)
    --set KEY=VALUE                    override one preset field, parsed by its type (repeatable; kit.config)
    --show                             print the resolved preset and exit
    --shard i/k                        run only runs i, i+k, i+2k, ... of the grid (0-based)
    --replace                          redo runs whose stored config differs from the current one (else: an error)
    --render-only / --no-render        skip the compute step / the render step
    --threads N                        torch CPU threads
"""
from __future__ import annotations

import argparse
import sys

import chg.experiments.results as results

from .config import apply_sets, describe
from .grid import parse_shard

__all__ = ["parser", "parse"]


def parser(description: str, presets: dict) -> argparse.ArgumentParser:
    """The shared parser; a script may add its own options before :func:`parse`."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=tuple(presets), default=None,
                   help="named preset (default: 'paper' with CUDA if defined, else 'quick')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, e.g. --set seeds=0,1 --set train.epochs=50 (see --show)")
    p.add_argument("--show", action="store_true", help="print the resolved preset and exit")
    p.add_argument("--shard", default=None, metavar="i/k", help="run only every k-th run starting at i (0-based)")
    p.add_argument("--replace", action="store_true",
                   help="redo (and overwrite) runs stored with another configuration; without it that is an error")
    p.add_argument("--render-only", action="store_true", help="skip the compute step: render from the result files")
    p.add_argument("--no-render", action="store_true", help="skip the render step (e.g. in a shard job)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def parse(p: argparse.ArgumentParser, presets: dict, argv=None):
    """``(args, preset)``: the parsed arguments and the scale's preset with every ``--set`` applied; ``args.shard``
    is parsed to ``(i, k)``. Exits with a usage error naming the cause on a bad ``--set`` or ``--shard``."""
    args = p.parse_args(argv)
    if args.scale is None:
        default = results.default_scale()
        args.scale = default if default in presets else "quick"
    try:
        preset = apply_sets(presets[args.scale], args.set)
        args.shard = parse_shard(args.shard)
    except ValueError as exc:
        p.error(str(exc))
    if args.show:
        print(f"scale {args.scale}:\n{describe(preset)}")
        sys.exit(0)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    return args, preset
