"""Figure 1: point removal — test accuracy vs fraction of training data removed, CHG Shapley vs the baselines.

    python reproduce/figure1.py [--scale smoke|quick|medium|paper] [--render-only] [--set ...] [--shard i/k]

Renders from Table 1's runs (``reproduce/results/<scale>/table1/``, label-noise runs; computes any that are
missing, so running table1.py first means nothing runs twice). Left column: highest-valued points removed first (a
good valuation makes accuracy drop fast); right column: lowest-valued first (accuracy should hold or rise). Mean over
seeds. Writes ``figures/[<scale>/]figure1.png`` and ``.pdf``.
"""
from __future__ import annotations

import numpy as np
from kit import odv
from kit.odv_presets import LABELS, OdvPreset
from kit.odv_text import settings_line
from kit.style import draw_panel, finish_figure, plt


def curves(recs: list) -> dict:
    """{dataset: {method: (fraction removed, mean high-first curve, mean low-first curve)}} over the records."""
    acc: dict = {}
    for r in recs:
        if r["config"]["noise"] == "label":
            acc.setdefault(r["config"]["dataset"], {}).setdefault(r["config"]["method"], []).append(
                r["metrics"]["removal"])
    out: dict = {}
    for d, by_m in acc.items():
        for m, rems in by_m.items():
            k = min(len(x["high_first"]) for x in rems)
            out.setdefault(d, {})[m] = (np.asarray(rems[0]["fraction_removed"][:k]),
                                        np.mean([x["high_first"][:k] for x in rems], 0),
                                        np.mean([x["low_first"][:k] for x in rems], 0))
    return out


def render(cfg: OdvPreset, scale: str) -> None:
    recs = odv.require_records(cfg, scale, "Figure 1")
    data = curves(recs)
    if not data:
        raise SystemExit(f"no label-noise runs of scale {scale} on disk for Figure 1")
    ds = [d for d in cfg.datasets if d in data]
    fig, axes = plt.subplots(len(ds), 2, figsize=(11, 3.6 * len(ds) + 0.8), squeeze=False)
    for i, d in enumerate(ds):
        for j, title in enumerate(("highest value removed first (lower is better)",
                                   "lowest value removed first (higher is better)")):
            lines = {m: (frac, ys[j]) for m, (frac, *ys) in data[d].items()}
            draw_panel(axes[i][j], lines, cfg.methods, LABELS, f"{d}: {title}", "fraction of training data removed",
                       "test accuracy")
    finish_figure(fig, scale, "figure1",
                  "Figure 1 (measured): point removal, CHG Shapley vs baselines (paper: CIFAR10-embeddings)",
                  settings_line(recs, scale, "labels flipped") + "; made by reproduce/figure1.py from "
                  f"reproduce/results/{scale}/table1/", axes[0][1], "lower left")


if __name__ == "__main__":
    odv.main(__doc__, render)
