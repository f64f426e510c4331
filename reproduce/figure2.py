"""Figure 2: discovering noisy data — fraction of corrupted points found vs fraction of data inspected.

    python reproduce/figure2.py [--scale smoke|quick|medium|paper] [--render-only] [--set ...] [--shard i/k]

Points are inspected in increasing order of value (opendataval's ``discover_corrupted_sample``, recomputed from the
stored data values on a fine grid by ``chg.detection.discovery_curve``). Rows: label noise, feature noise; columns:
data sets. Renders from Table 1's runs (computes any that are missing). Writes ``figures/[<scale>/]figure2.png`` and
``.pdf``.
"""
from __future__ import annotations

import numpy as np
from chg.detection import discovery_curve, noisy_mask
from kit import odv
from kit.odv_presets import LABELS, OdvPreset
from kit.odv_text import settings_line
from kit.style import draw_panel, finish_figure, plt

GRID = np.linspace(0.0, 1.0, 101)


def curves(recs: list):
    """{(dataset, noise): {method: mean discovery curve on GRID}}, and {(dataset, noise): corrupted share}."""
    acc, rates = {}, {}
    for r in recs:
        c = r["config"]
        values, noisy = np.asarray(r["values"]), np.asarray(r["noisy_indices"])
        rates[(c["dataset"], c["noise"])] = len(noisy) / len(values)
        acc.setdefault((c["dataset"], c["noise"]), {}).setdefault(c["method"], []).append(
            discovery_curve(values, noisy_mask(noisy, len(values)), GRID, higher_is="valuable"))
    return {k: {m: np.mean(v, 0) for m, v in by_m.items()} for k, by_m in acc.items()}, rates


def render(cfg: OdvPreset, scale: str) -> None:
    recs = odv.require_records(cfg, scale, "Figure 2")
    data, rates = curves(recs)
    ds = [d for d in cfg.datasets if any(k[0] == d for k in data)]
    noises = [z for z in cfg.noises if any(k[1] == z for k in data)]
    fig, axes = plt.subplots(len(noises), len(ds), figsize=(max(5.5 * len(ds), 9), 3.8 * len(noises) + 0.8),
                             squeeze=False)
    for i, z in enumerate(noises):
        for j, d in enumerate(ds):
            ax = axes[i][j]
            lines = {m: (GRID, y) for m, y in data.get((d, z), {}).items()}
            draw_panel(ax, lines, cfg.methods, LABELS, f"{d}: {z} noise",
                       "fraction of data inspected (lowest value first)", "fraction of corrupted points found")
            if (d, z) in rates:
                ax.plot(GRID, np.minimum(GRID / rates[(d, z)], 1.0), color="grey", lw=1, ls="-.", label="optimal")
    finish_figure(fig, scale, "figure2",
                  "Figure 2 (measured): discovering noisy data, CHG Shapley vs baselines (paper: CIFAR10-embeddings)",
                  settings_line(recs, scale, "of points corrupted") + "; made by reproduce/figure2.py from "
                  f"reproduce/results/{scale}/table1/", axes[0][-1], "lower right")


if __name__ == "__main__":
    odv.main(__doc__, render)
