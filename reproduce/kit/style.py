"""The one plotting style: method colours and line styles, and how a figure is finished and written (PNG + PDF).

matplotlib runs on the Agg backend; files are written atomically to ``chg.experiments.results.figure_path``; the PDF
carries no
creation date, so the same result files render to the same bytes.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import chg.experiments.results as results  # noqa: E402

__all__ = ["plt", "method_style", "draw_panel", "finish_figure"]

_FIXED = {"chg": dict(color="black", lw=2.6, zorder=5), "chg_ride": dict(color="black", lw=1.6, ls="--", zorder=5),
          "random": dict(color="grey", lw=1.4, ls=":", zorder=4)}
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}


def method_style(method: str, k: int) -> dict:
    """CHG in black (bold), Random dotted grey, the k-th other method a colour of its own (tab20: 20 distinct)."""
    return _FIXED.get(method, dict(color=plt.get_cmap("tab20")(k % 20), lw=1.0, alpha=0.85))


def draw_panel(ax, lines: dict, methods, labels: dict, title: str, xlabel: str, ylabel: str) -> None:
    """One panel: a line ``lines[m] = (x, y)`` per method, in ``methods`` order and the one style; title, axis labels,
    grid."""
    for k, m in enumerate(methods):
        if m in lines:
            ax.plot(*lines[m], label=labels[m], **method_style(m, k))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def finish_figure(fig, scale: str, name: str, title: str, footer: str, legend_ax=None,
                  legend_loc: str = "best") -> None:
    """Legend (on ``legend_ax``), title, provenance footer, layout; ``<name>.png`` and ``<name>.pdf`` written
    atomically for ``scale``."""
    if legend_ax is not None:
        legend_ax.legend(fontsize=7, loc=legend_loc, ncol=2)
    fig.suptitle(title, fontsize=11)
    fig.text(0.01, 0.005, footer, fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    for ext in ("png", "pdf"):
        path = results.figure_path(scale, f"{name}.{ext}")
        results.atomic_write(path, lambda tmp, e=ext: fig.savefig(tmp, format=e, dpi=150, metadata=_METADATA[e]))
        print(f"wrote {path}")
    plt.close(fig)
