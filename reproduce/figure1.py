"""Figure 1: point removal — test accuracy vs fraction of training data removed, CHG Shapley vs the baselines.

    python reproduce/figure1.py [--scale quick|paper] [--render-only]

Renders from Table 1's runs (``reproduce/results/table1/``, label-noise runs; computes any that are missing, so
running table1.py first means nothing runs twice). Left column: highest-valued points removed first (a good
valuation makes accuracy drop fast); right column: lowest-valued first (accuracy should hold or rise). Mean over
seeds. Writes ``figures/figure1.png`` and ``figures/figure1.pdf``.
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

from chg.results import FIGURES_DIR, atomic_write  # noqa: E402

STYLE = {"chg": dict(color="black", lw=2.6, zorder=5), "chg_ride": dict(color="black", lw=1.6, ls="--", zorder=5),
         "random": dict(color="grey", lw=1.4, ls=":", zorder=4)}


def method_style(method: str, k: int) -> dict:
    """CHG in black (bold), Random dotted grey, the k-th other method a colour of its own (tab20: 20 distinct)."""
    return STYLE.get(method, dict(color=plt.get_cmap("tab20")(k % 20), lw=1.0, alpha=0.85))


def finish_figure(fig, name: str, title: str, footer: str) -> None:
    """Title, provenance footer, layout; PNG + PDF written atomically to figures/."""
    fig.suptitle(title, fontsize=11)
    fig.text(0.01, 0.005, footer, fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        atomic_write(FIGURES_DIR / f"{name}.{ext}", lambda tmp, e=ext: fig.savefig(tmp, format=e, dpi=150))
        print(f"wrote {FIGURES_DIR / f'{name}.{ext}'}")
    plt.close(fig)


def settings_line(cfg: oc.Config, seeds) -> str:
    t = cfg.train_kwargs
    return (f"{cfg.scale} scale; data {', '.join(cfg.datasets)}; train/valid/test {cfg.train_count}/"
            f"{cfg.valid_count}/{cfg.test_count}; {cfg.noise_rate:.0%} labels flipped; opendataval {cfg.model} "
            f"(Adam, {t['epochs']} epochs, batch {t['batch_size']}, lr {t['lr']}); mean over seeds {sorted(seeds)}; "
            f"sampler settings as in figures/table1.md")


def curves(cfg: oc.Config):
    """{dataset: {method: (fraction, mean high-first curve, mean low-first curve)}}, seeds used."""
    acc, seeds = {}, set()
    for r in oc.runs_for(cfg):
        if r["config"]["noise"] != "label":
            continue
        seeds.add(r["seed"])
        rem = r["metrics"]["removal"]
        acc.setdefault(r["config"]["dataset"], {}).setdefault(r["config"]["method"], []).append(rem)
    out = {}
    for d, by_m in acc.items():
        for m, rems in by_m.items():
            k = min(len(x["high_first"]) for x in rems)
            out.setdefault(d, {})[m] = (np.asarray(rems[0]["fraction_removed"][:k]),
                                        np.mean([x["high_first"][:k] for x in rems], 0),
                                        np.mean([x["low_first"][:k] for x in rems], 0))
    return out, seeds


def render(cfg: oc.Config) -> None:
    data, seeds = curves(cfg)
    if not data:
        raise SystemExit(f"no label-noise runs on disk for scale {cfg.scale}")
    ds = [d for d in cfg.datasets if d in data]
    fig, axes = plt.subplots(len(ds), 2, figsize=(11, 3.6 * len(ds) + 0.8), squeeze=False)
    for i, d in enumerate(ds):
        for j, (title, col) in enumerate((("highest value removed first (lower is better)", 1),
                                          ("lowest value removed first (higher is better)", 2))):
            ax = axes[i][j]
            for k, m in enumerate(cfg.methods):
                if m not in data[d]:
                    continue
                frac, *ys = data[d][m]
                ax.plot(frac, ys[col - 1], label=oc.LABELS[m], **method_style(m, k))
            ax.set_title(f"{d}: {title}", fontsize=9)
            ax.set_xlabel("fraction of training data removed")
            ax.set_ylabel("test accuracy")
            ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=7, loc="lower left", ncol=2)
    finish_figure(fig, "figure1",
                  "Figure 1 (measured): point removal, CHG Shapley vs baselines (paper: CIFAR10-embeddings)",
                  settings_line(cfg, seeds) + "; made by reproduce/figure1.py from reproduce/results/table1/")


def main(argv=None) -> None:
    args, cfg = oc.parse_args(__doc__.splitlines()[0], argv)
    oc.ensure_runs(args, cfg)
    render(cfg)


if __name__ == "__main__":
    main()
