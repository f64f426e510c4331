"""Documents of a language model: CHG Shapley of the texts a small GPT-2 trains on, beside the first baselines.

One run = one seed: :func:`chg.experiments.lm_documents.run_lm_documents` builds the documents (Python standard
library docstrings, some corrupted: shuffled words, Cyrillic script, exact duplicates), trains a byte-level GPT-2 from
a config once, and scores every training document with CHG Shapley (exact two-sweep values and ride-along), the
per-document loss, its trend over the epochs and an In-Run-style first-order value; its record
``reproduce/results/<scale>/lm_documents/<run_id>.json`` holds every method's metrics, the per-document scores and
kinds, ride-along's agreement with the exact values and the wall times (:func:`kit.grid.run_grid`: resumable,
``--shard i/k``). The render step reads only the records and writes ``figures/[<scale>/]lm_documents.md|tex|png|pdf``
with a verdict computed from the numbers.
"""
from __future__ import annotations

import dataclasses
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

import chg.experiments.results as results
from chg.experiments.lm_documents import KINDS, METHODS, LMDocConfig, run_lm_documents

from . import cli, grid, tables
from .style import finish_figure, plt

__all__ = ["LMPreset", "presets", "runs", "executor", "render", "main"]

EXPERIMENT = "lm_documents"
LABELS = {"chg_pass": "CHG Shapley (exact, two sweeps)", "chg_ride": "CHG Shapley (ride-along)",
          "loss": "Per-document loss", "loss_trend": "Loss trend (slope over epochs)",
          "in_run": "In-Run-style first-order value"}
SHORT = {"chg_pass": "CHG exact", "chg_ride": "CHG ride", "loss": "loss", "loss_trend": "loss trend",
         "in_run": "In-Run 1st order"}
BASELINES = ("loss", "loss_trend", "in_run")
TIME_KEY = {"chg_pass": "chg_pass", "chg_ride": "chg_ride", "in_run": "in_run"}


@dataclass(frozen=True)
class LMPreset:
    """The grid: seeds, and the settings every run shares (``run``, whose ``seed`` is set per run)."""
    seeds: tuple[int, ...]
    run: LMDocConfig = field(default_factory=LMDocConfig)
    GRID_FIELDS: ClassVar[tuple] = ("run.seed",)


def presets() -> dict:
    """The named presets.

    smoke: 60 documents (5 of each corrupted kind), 48 bytes, a 1-layer 16-wide GPT-2, 2 epochs, one seed — seconds
    after reading the corpus (what CI runs). quick: 600 training documents, 30 of each corrupted kind (15% in all),
    100 validation documents, 128 bytes, a 2-layer 64-wide GPT-2 (4 heads, dropout 0.1), 8 epochs of Adam (lr 1e-3,
    batch 16), seeds 0-2: a few CPU-minutes a run.
    """
    smoke = LMPreset((0,), LMDocConfig(docs=60, corrupt_each=5, valid_docs=12, seq_len=48, n_embd=16, n_layer=1,
                                       n_head=2, epochs=2, batch_size=8))
    quick = LMPreset((0, 1, 2), LMDocConfig())
    return {"smoke": smoke, "quick": quick}


def runs(preset: LMPreset) -> list:
    """One run per seed; its config holds every setting and the Python version (the corpus is that version's
    standard library)."""
    out = []
    for seed in preset.seeds:
        cfg = dataclasses.replace(preset.run, seed=seed)
        config = {**dataclasses.asdict(cfg), "python": platform.python_version()}
        out.append(grid.Run(f"gpt2-s{seed}", seed, config, cfg))
    return out


def executor():
    """The function that runs one seed and returns its record's metrics (scores and kinds included)."""
    def execute(run: grid.Run) -> grid.Outcome:
        t0, c0 = time.perf_counter(), time.process_time()
        out = run_lm_documents(run.task)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return grid.Outcome({**out, "cpu_s": cpu}, wall, "cpu")
    return execute


# ---- render ------------------------------------------------------------------------------------------------------

def _pm(xs, digits=3, unit: str = "") -> str:
    return tables.pm(xs, digits, unit)


def _paired(records: list, a: str, b: str, key: str = "roc_auc") -> int:
    return sum(r["metrics"]["metrics"][a][key] > r["metrics"]["metrics"][b][key] for r in records)


def _verdict(records: list) -> str:
    n = len(records)
    mean = {m: np.mean([r["metrics"]["metrics"][m]["roc_auc"] for r in records]) for m in METHODS}
    best = max(METHODS, key=lambda m: mean[m])
    parts = [f"**Verdict ({n} seed{'s' if n > 1 else ''}).** Best mean ROC AUC over all corrupted documents: "
             f"{LABELS[best]} ({mean[best]:.3f}); per-document loss {mean['loss']:.3f}, In-Run-style value "
             f"{mean['in_run']:.3f}."]
    for chg_m in ("chg_pass", "chg_ride"):
        wins = ", ".join(f"{SHORT[b]} in {_paired(records, chg_m, b)}/{n}" for b in BASELINES)
        parts.append(f"{LABELS[chg_m]} (AUC {mean[chg_m]:.3f}) beats {wins} seeds (paired, AUC).")
    for kind in KINDS[1:]:
        key = f"roc_auc_{kind}"
        per = {m: np.mean([r["metrics"]["metrics"][m][key] for r in records]) for m in METHODS}
        top = max(METHODS, key=lambda m: per[m])
        if per[top] < 0.6:
            parts.append(f"{kind.capitalize()} documents: no method does much better than chance (best "
                         f"{SHORT[top]}, AUC {per[top]:.3f}; CHG exact {per['chg_pass']:.3f}).")
        else:
            parts.append(f"{kind.capitalize()} documents: best {SHORT[top]} (AUC {per[top]:.3f}); CHG exact "
                         f"{per['chg_pass']:.3f}, loss {per['loss']:.3f}, In-Run-style {per['in_run']:.3f}.")
    for m in METHODS:
        if mean[m] < 0.5:
            parts.append(f"{LABELS[m]} ranks below chance (AUC {mean[m]:.3f}): the opposite sign would score "
                         f"1 − AUC = {1 - mean[m]:.3f}.")
    agree = [r["metrics"]["agreement"]["averaged"]["spearman"] for r in records]
    parts.append(f"Ride-along vs exact values (averaged over epochs ≥ 1): Spearman {_pm(agree, 2)}.")
    return " ".join(parts)


def _figure(scale: str, records: list) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    cols = ("all",) + KINDS[1:]
    width = 0.8 / len(METHODS)
    for k, m in enumerate(METHODS):
        key = lambda c: "roc_auc" if c == "all" else f"roc_auc_{c}"  # noqa: E731
        vals = [[r["metrics"]["metrics"][m][key(c)] for r in records] for c in cols]
        ax.bar(np.arange(len(cols)) + (k - (len(METHODS) - 1) / 2) * width, [np.mean(v) for v in vals], width,
               yerr=[np.std(v) for v in vals], label=SHORT[m],
               color="black" if m == "chg_pass" else "dimgrey" if m == "chg_ride" else plt.get_cmap("tab10")(k))
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(cols)), [f"{c} vs clean" if c != "all" else "all corrupted" for c in cols], fontsize=8)
    ax.set_ylabel("ROC AUC (suspicion vs corrupted)")
    ax.set_ylim(0, 1.3)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_title("(a) detection, mean ± std over seeds", fontsize=9)
    ax.legend(fontsize=7, ncol=3, loc="upper center")
    ax = axes[1]
    r0 = min(records, key=lambda r: r["seed"])
    kinds = np.asarray(r0["metrics"]["kinds"])
    value, loss = -np.asarray(r0["metrics"]["scores"]["chg_pass"]), np.asarray(r0["metrics"]["scores"]["loss"])
    for k, kind in enumerate(KINDS):
        sel = kinds == kind
        ax.scatter(loss[sel], value[sel], s=9 if kind == "clean" else 16, alpha=0.5 if kind == "clean" else 0.9,
                   label=kind, color=("lightgrey", "tab:red", "tab:blue", "tab:green")[k])
    ax.set_xlabel("per-document loss (mean over epochs)")
    ax.set_ylabel("CHG Shapley value (exact, mean over epochs)")
    ax.set_title(f"(b) seed {r0['seed']}: every training document", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    epochs = len(records[0]["metrics"]["agreement"]["per_epoch"])
    for key, style in (("spearman", "-o"), ("low_overlap", "--s"), ("high_overlap", ":^")):
        ys = np.array([[e[key] for e in r["metrics"]["agreement"]["per_epoch"]] for r in records])
        ax.errorbar(np.arange(1, epochs + 1), ys.mean(0), ys.std(0), fmt=style, ms=4, capsize=2,
                    label={"spearman": "Spearman", "low_overlap": "10% lowest: overlap",
                           "high_overlap": "10% highest: overlap"}[key])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel("ride-along vs exact values")
    ax.set_title("(c) ride-along against the exact values, per epoch", fontsize=9)
    ax.legend(fontsize=7)
    for a in axes:
        a.grid(alpha=0.3)
    finish_figure(fig, scale, EXPERIMENT, f"CHG Shapley of a language model's training documents ({scale} scale)",
                  f"Python {records[0]['config']['python']} standard-library docstrings; GPT-2 from config; seeds "
                  f"{sorted(r['seed'] for r in records)}; made by reproduce/lm_documents.py from "
                  f"reproduce/results/{scale}/{EXPERIMENT}/")


def render(scale: str, preset: LMPreset) -> str:
    """figures/[<scale>/]lm_documents.md|tex|png|pdf from the records of ``scale`` (the preset's seeds); returns the
    Markdown.

    Raises:
        SystemExit: no records of this scale (the compute step has not run).
    """
    records = [r for r in results.load_runs(EXPERIMENT, scale) if r["seed"] in preset.seeds]
    if not records:
        raise SystemExit(f"no {scale}-scale results under {results.RESULTS_DIR / scale / EXPERIMENT}; run the "
                         "compute step")
    c = records[0]["config"]
    seeds = sorted(r["seed"] for r in records)
    m0 = records[0]["metrics"]
    cpu, wall = sum(r["metrics"]["cpu_s"] for r in records), sum(r["wall_time_s"] for r in records)
    title = "Valuing a language model's training documents: CHG Shapley beside the first baselines"
    blocks = [tables.Heading(f"{title} — {scale} scale"),
              f"Corpus: the docstrings of Python {c['python']}'s standard library ({m0['corpus']['corpus_docs']} "
              f"distinct ASCII docstrings of ≥ {c['min_chars']} characters, whitespace collapsed; SHA-256 "
              f"{m0['corpus']['corpus_sha256'][:12]}…), read with `ast` — on every machine with Python, no download. "
              f"Each run draws {m0['n_train']} training documents — {c['corrupt_each']} with their words shuffled, "
              f"{c['corrupt_each']} transliterated into Cyrillic letters, {c['corrupt_each']} exact copies of another "
              f"training document (the copy is marked corrupted, its original clean) — and {m0['n_valid']} clean "
              f"validation documents. Model: GPT-2 from `GPT2Config` (byte-level, vocabulary 256, {c['seq_len']} "
              f"bytes per document, padding masked, {c['n_layer']} layers, width {c['n_embd']}, {c['n_head']} heads, "
              f"dropout {c['dropout']}, head tied to the embedding), Adam lr {c['lr']}, batch {c['batch_size']}, "
              f"{c['epochs']} epochs, loss = each document's mean token cross-entropy. Scores (suspicion: high = "
              f"corrupted): CHG Shapley exact (`SequenceValuer.value_epoch`: two no-grad sweeps at the start of each "
              f"epoch, eval mode; −value averaged over all epochs), CHG ride-along (the training forward passes "
              f"valued against the previous epoch's statistics; epochs ≥ 1), per-document training loss (mean over "
              f"epochs), its least-squares slope over the epochs, and an In-Run-style first-order value (Σ over "
              f"epochs of ⟨mean validation head gradient at the epoch's start, the document's head gradient in its "
              f"training step⟩, output layer only; −value). Metrics (scikit-learn) against the corrupted mask: ROC "
              f"AUC, average precision, precision at k = number corrupted; and ROC AUC of each kind against the "
              f"clean documents. Mean ± std over seeds {seeds}. Times: wall seconds per run on a shared 2-core "
              f"machine (the runs got {100 * cpu / wall:.0f}% of a core; compare within the table; "
              f"benchmarks/bench_sequence.py measures the cost properly). Made by `python reproduce/lm_documents.py "
              f"--scale {scale}` from reproduce/results/{scale}/{EXPERIMENT}/*.json ({len(records)} runs, "
              f"{wall / 60:.1f} min)."]
    head = ("Method", "ROC AUC", "AP", "P@k") + tuple(f"AUC {k}" for k in KINDS[1:]) + ("Time (s)",)
    rows = []
    for m in METHODS:
        mets = [r["metrics"]["metrics"][m] for r in records]
        cells = [_pm([x[key] for x in mets]) for key in ("roc_auc", "average_precision", "precision_at_k")]
        cells += [_pm([x[f"roc_auc_{k}"] for x in mets]) for k in KINDS[1:]]
        t = (_pm([r["metrics"]["times_s"][TIME_KEY[m]] for r in records], 1) if m in TIME_KEY
             else "0 (the training pass)")
        rows.append([LABELS[m]] + cells + [t])
    train_t = _pm([r["metrics"]["times_s"]["train"] for r in records], 1)
    blocks += [tables.Heading("Finding the corrupted documents", 3),
               tables.Table(head, tuple(rows), f"k = {m0['metrics']['loss']['k']} corrupted of {m0['n_train']}; "
                            f"training steps alone took {train_t} s a run; validation loss after the last epoch "
                            f"{_pm([r['metrics']['valid_loss'][-1] for r in records], 3, ' nats/byte')} (first epoch "
                            f"{_pm([r['metrics']['valid_loss'][0] for r in records], 3)}).",
                            f"{scale} scale: detection of corrupted documents")]
    ep_rows = []
    epochs = len(m0["agreement"]["per_epoch"])
    for k in range(epochs):
        es = [r["metrics"]["agreement"]["per_epoch"][k] for r in records]
        ep_rows.append([str(k + 1)] + [_pm([e[x] for e in es], 2) for x in ("spearman", "low_overlap",
                                                                             "high_overlap")])
    av = [r["metrics"]["agreement"]["averaged"] for r in records]
    ep_rows.append(["mean of epochs ≥ 1"] + [_pm([e[x] for e in av], 2) for x in ("spearman", "low_overlap",
                                                                                    "high_overlap")])
    blocks += [tables.Heading("Ride-along against the exact values", 3),
               tables.Table(("Epoch", "Spearman", "10% lowest: overlap", "10% highest: overlap"), tuple(ep_rows),
                            "Ride-along values an epoch's documents during its training steps (train mode, parameters "
                            "moving) against the previous epoch's statistics; the exact values are the two sweeps at "
                            "the start of the same epoch. Overlap: the share of the 10% lowest (highest) documents by "
                            "one that are among the 10% lowest (highest) by the other.",
                            f"{scale} scale: ride-along vs exact")]
    blocks.append(_verdict(records))
    _figure(scale, records)
    comment = f"{title}, {scale} scale; seeds {seeds}; made by reproduce/lm_documents.py from reproduce/results/"
    return tables.write(scale, EXPERIMENT, blocks, f"{comment}{scale}/{EXPERIMENT}")


def main(argv=None) -> int:
    """The command line of reproduce/lm_documents.py (kit.cli's options)."""
    all_presets = presets()
    p = cli.parser("Documents of a language model: compute (resumable, shardable) and render.", all_presets)
    args, preset = cli.parse(p, all_presets, argv)
    return grid.compute_and_render(EXPERIMENT, args, preset, runs(preset), executor(), render)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("a library: run reproduce/lm_documents.py")
