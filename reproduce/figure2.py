"""Figure 2: discovering noisy data — fraction of corrupted points found vs fraction of data inspected.

    python reproduce/figure2.py [--scale quick|paper] [--render-only]

Points are inspected in increasing order of value (opendataval's ``discover_corrupted_sample``, recomputed from the
stored data values on a fine grid). Rows: label noise, feature noise; columns: data sets. Renders from Table 1's
runs (computes any that are missing). Writes ``figures/figure2.png`` and ``figures/figure2.pdf``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import odv_common as oc  # noqa: E402
from figure1 import finish_figure, method_style, settings_line  # noqa: E402

GRID = np.linspace(0.0, 1.0, 101)


def curves(cfg: oc.Config):
    acc, seeds, rates = {}, set(), {}
    for r in oc.runs_for(cfg):
        c = r["config"]
        seeds.add(r["seed"])
        values, noisy = np.asarray(r["values"]), np.asarray(r["noisy_indices"])
        rates[(c["dataset"], c["noise"])] = len(noisy) / len(values)
        acc.setdefault((c["dataset"], c["noise"]), {}).setdefault(c["method"], []).append(
            oc.discovery_curve(values, noisy, GRID))
    return {k: {m: np.mean(v, 0) for m, v in by_m.items()} for k, by_m in acc.items()}, seeds, rates


def render(cfg: oc.Config) -> None:
    data, seeds, rates = curves(cfg)
    if not data:
        raise SystemExit(f"no table1 runs on disk for scale {cfg.scale}")
    ds = [d for d in cfg.datasets if any(k[0] == d for k in data)]
    noises = [z for z in cfg.noises if any(k[1] == z for k in data)]
    fig, axes = plt.subplots(len(noises), len(ds), figsize=(5.5 * len(ds), 3.8 * len(noises) + 0.8), squeeze=False)
    for i, z in enumerate(noises):
        for j, d in enumerate(ds):
            ax = axes[i][j]
            by_m = data.get((d, z), {})
            for k, m in enumerate(cfg.methods):
                if m in by_m:
                    ax.plot(GRID, by_m[m], label=oc.LABELS[m], **method_style(m, k))
            if (d, z) in rates:
                ax.plot(GRID, np.minimum(GRID / rates[(d, z)], 1.0), color="grey", lw=1, ls="-.", label="optimal")
            ax.set_title(f"{d}: {z} noise", fontsize=9)
            ax.set_xlabel("fraction of data inspected (lowest value first)")
            ax.set_ylabel("fraction of corrupted points found")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right", ncol=2)
    finish_figure(fig, "figure2",
                  "Figure 2 (measured): discovering noisy data, CHG Shapley vs baselines (paper: CIFAR10-embeddings)",
                  settings_line(cfg, seeds).replace("labels flipped", "of points corrupted")
                  + "; made by reproduce/figure2.py from reproduce/results/table1/")


def main(argv=None) -> None:
    args, cfg = oc.parse_args(__doc__.splitlines()[0], argv)
    oc.ensure_runs(args, cfg)
    render(cfg)


if __name__ == "__main__":
    main()
