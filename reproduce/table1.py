"""Table 1, measured: CHG Shapley vs the paper's baselines on OpenDataVal's four tasks.

    python reproduce/table1.py [--scale quick|paper] [--render-only] [--seeds 0 1 2] [--threads 2]

Compute step (skips runs already on disk): every (data set, noise ∈ {label, feature}, method, seed) run of
``odv_common`` → ``reproduce/results/table1/*.json``. Render step: ``figures/table1.md`` and ``figures/table1.tex``.

Tasks and scores (mean ± std over seeds, per data set):
* noisy label / noisy feature detection (opendataval's ``mix_labels`` / ``add_gauss_noise``): AUC of "low value ⇒
  corrupted" and the F1 of opendataval's 2-means split (``noisy_detection``);
* point removal: test accuracy of the model retrained after removing the highest-valued points first, averaged over
  removed fractions 0–50 % (lower = better values); label-noise runs;
* point addition: the same with the lowest-valued points removed first, i.e. data added in decreasing value
  (higher = better values); label-noise runs.
Each '-/+/++' is computed from these numbers against the Random evaluator (thresholds in ``THRESHOLDS``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import odv_common as oc  # noqa: E402

from chg.results import FIGURES_DIR  # noqa: E402

TASKS = ("label", "feature", "removal", "addition")
TASK_NAMES = {"label": "Noisy label detection", "feature": "Noisy feature detection", "removal": "Point removal",
              "addition": "Point addition"}
# Δ vs Random for '+' and '++' (AUC points for detection; test-accuracy points for removal/addition).
THRESHOLDS = {"label": (0.05, 0.25), "feature": (0.05, 0.25), "removal": (0.01, 0.05), "addition": (0.01, 0.03)}


def removal_scores(rec: dict, max_fraction: float) -> tuple:
    r = rec["metrics"]["removal"]
    keep = [i for i, f in enumerate(r["fraction_removed"]) if f <= max_fraction + 1e-12]
    return float(np.mean([r["high_first"][i] for i in keep])), float(np.mean([r["low_first"][i] for i in keep]))


def aggregate(cfg: oc.Config, runs: list) -> dict:
    """{dataset: {method: {metric: [per-seed values]}}}."""
    table: dict = {}
    for rec in runs:
        c, m = rec["config"], rec["metrics"]
        cell = table.setdefault(c["dataset"], {}).setdefault(c["method"], {})
        z = c["noise"]
        cell.setdefault(f"{z}_auc", []).append(m["auc"])
        cell.setdefault(f"{z}_f1", []).append(m["f1_kmeans"])
        cell.setdefault("wall_time_s", []).append(m["wall_time_s"])
        cell.setdefault("model_fits", []).append(m["model_fits"])
        cell.setdefault("seeds", set()).add(rec["seed"])
        if "removal" in m:
            high, low = removal_scores(rec, cfg.removal_max_fraction)
            cell.setdefault("removal", []).append(high)
            cell.setdefault("addition", []).append(low)
            cell.setdefault("removal_by_seed", {})[rec["seed"]] = high
            cell.setdefault("addition_by_seed", {})[rec["seed"]] = low
    return table


def deltas(task: str, cell: dict, rand: dict):
    """Per-seed improvements (positive = better). Detection: AUC − 0.5 (chance, exact — not the Random
    evaluator's noisy estimate). Removal/addition: accuracy paired by seed against the Random evaluator."""
    if task in ("label", "feature"):
        key = f"{task}_auc"
        return None if key not in cell else [a - 0.5 for a in cell[key]]
    key = f"{task}_by_seed"
    if key not in cell or key not in rand:
        return None
    seeds = sorted(set(cell[key]) & set(rand[key]))
    d = [cell[key][s] - rand[key][s] for s in seeds]
    return [-x for x in d] if task == "removal" else d


def symbol(task: str, cell: dict, rand: dict) -> str:
    """'++'/'+' when the mean improvement reaches the threshold AND exceeds two standard errors (so one lucky seed
    does not make a '+'); else '-'."""
    d = deltas(task, cell, rand)
    if not d:
        return "not run"
    mean = float(np.mean(d))
    se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    if mean <= 2 * se:
        return "-"
    lo, hi = THRESHOLDS[task]
    return "++" if mean >= hi else "+" if mean >= lo else "-"


def pm(values, digits=3) -> str:
    if not values:
        return "not run"
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}"


def caption(cfg: oc.Config, table: dict) -> str:
    seeds = sorted({s for d in table.values() for c in d.values() for s in c["seeds"]})
    t = cfg.train_kwargs
    th = "; ".join(f"{TASK_NAMES[k]}: '+' if Δ ≥ {lo}, '++' if Δ ≥ {hi}" for k, (lo, hi) in THRESHOLDS.items())
    return (
        f"**Table 1 (measured, {cfg.scale} scale).** Data: {', '.join(cfg.datasets)} (opendataval; quick-scale "
        f"sets standardized), split train/valid/test = {cfg.train_count}/{cfg.valid_count}/{cfg.test_count}, "
        f"{cfg.noise_rate:.0%} of training points corrupted (labels: opendataval `mix_labels`; features: "
        f"`add_gauss_noise`, σ = {cfg.feature_noise_sigma}). Model: opendataval `{cfg.model}`, Adam, "
        f"epochs = {t['epochs']}, batch = {t['batch_size']}, lr = {t['lr']}. Seeds: {seeds} (mean ± std over "
        f"seeds; each seed re-draws split and noise). Sampler settings: TMC permutations = "
        f"{cfg.tmc_mc_epochs or 'opendataval default (GrTMC)'}, Data Banzhaf models = "
        f"{cfg.banzhaf_models or 'default 1000'}, AME models = {cfg.ame_models or 'default 1000'}, Data-OOB "
        f"models = {cfg.oob_models or 'default 1000'}, DVRL RL epochs = {cfg.dvrl_rl_epochs or 'default 1000'}, "
        f"KNN k = {cfg.knn_k}; 'Data-OOB (1000 models)' = Data-OOB at opendataval's default 1000 bagged models "
        f"(every scale); CHG: Algorithm 1 via `chg.opendataval.CHGShapley` (values averaged over the same "
        f"{t['epochs']} epochs; 'ride-along' = values from the training forward passes).\n\n"
        f"Scores: detection = AUC of 'low value ⇒ corrupted' and opendataval's 2-means F1; point removal = test "
        f"accuracy averaged over 0–{cfg.removal_max_fraction:.0%} of the training set removed highest-value first "
        f"(lower is better); point addition = the same removing lowest-value first, i.e. keeping/adding data in "
        f"decreasing value (higher is better). Removal/addition use one retraining per point of the curve "
        f"(opendataval `remove_high_low`, step {cfg.removal_percentile:.0%}) on the label-noise runs. "
        f"**Symbols**: Δ = per-seed improvement, for detection AUC − 0.5 (chance), for removal/addition the test "
        f"accuracy against the Random evaluator on the same data set and seed (sign so that positive = better); "
        f"{th}, each only if the mean Δ also exceeds two standard errors of the mean over seeds; else '-'. 'Ours' lists the "
        f"symbol per data set (in the order above). 'Paper' = the paper's Table 1 (CIFAR10-embeddings; for the "
        f"baselines abstracted from Jiang et al. 2023), label/feature/removal/addition. Wall time = seconds of "
        f"`DataEvaluator.train` (mean over all runs of the method, label and feature noise; shared 2-core CPU "
        f"unless the device says otherwise); fits = calls of the model's `fit` during valuation (CHG: its one "
        f"training run). Made by `python reproduce/table1.py --scale {cfg.scale}` from "
        f"`reproduce/results/table1/*.json`.")


def render(cfg: oc.Config) -> str:
    runs = oc.runs_for(cfg)
    table = aggregate(cfg, runs)
    lines = [caption(cfg, table), ""]
    head = ("| Method | Paper (L F R A) | Ours (L F R A) | Label AUC | Label F1 | Feature AUC | Feature F1 | "
            "Removal acc ↓ | Addition acc ↑ | Wall time (s) | Model fits |")
    lines += [head, "|" + "---|" * 11]
    for m in cfg.methods:
        cells = [table.get(d, {}).get(m) for d in cfg.datasets]
        if all(c is None for c in cells):
            lines.append(f"| {oc.LABELS[m]} | {oc.PAPER_SYMBOLS[m]} | not run |" + " not run |" * 8)
            continue
        ours = []
        for t in TASKS:
            ours.append("/".join(("(baseline)" if m == "random" and t in ("removal", "addition") else
                                  symbol(t, c, table[d].get("random", {}))) if c else "not run"
                                 for d, c in zip(cfg.datasets, cells)))
        per = []
        for key, digits in (("label_auc", 3), ("label_f1", 3), ("feature_auc", 3), ("feature_f1", 3),
                            ("removal", 3), ("addition", 3)):
            per.append("<br>".join(pm(c.get(key, []) if c else [], digits) for c in cells))
        wall = "<br>".join(pm(c["wall_time_s"], 2) if c else "not run" for c in cells)
        fits = "<br>".join(f"{np.mean(c['model_fits']):.0f}" if c else "not run" for c in cells)
        lines.append(f"| {oc.LABELS[m]} | {oc.PAPER_SYMBOLS[m]} | {' '.join(ours)} | " + " | ".join(per)
                     + f" | {wall} | {fits} |")
    lines += ["", f"Cells with two lines: {' (top), '.join(cfg.datasets)} (bottom).", "", summary(cfg, table, runs)]
    return "\n".join(lines) + "\n"


def summary(cfg: oc.Config, table: dict, runs: list) -> str:
    """The closing note: CHG vs Data-OOB and KNN Shapley on noisy labels; CHG's speed vs every method."""
    from opendataval.experiment.util import oned_twonn_clustering
    out = ["**Noisy-label detection, CHG vs Data-OOB and KNN Shapley** (AUC mean ± std; F1 mean ± std):", ""]
    for d in cfg.datasets:
        row = table.get(d, {})
        parts = [f"{oc.LABELS[m]} {pm(row[m].get('label_auc', []))}; {pm(row[m].get('label_f1', []))}"
                 for m in ("chg", "chg_ride", "dataoob", "dataoob_default", "knnshapley") if m in row]
        out.append(f"- {d}: " + " | ".join(parts))
    out += ["", "**Size of the 2-means 'low value' cluster** that the F1 scores (label noise, mean over seeds; the "
            "number of corrupted points is given first): a long tail of very low values makes 2-means split off "
            "only a few points, hence a low F1 beside a high AUC.", ""]
    for d in cfg.datasets:
        sizes, n_noisy = {}, set()
        for rec in runs:
            c = rec["config"]
            if c["dataset"] == d and c["noise"] == "label" and c["method"] in ("chg", "chg_ride", "dataoob",
                                                                              "knnshapley"):
                lo, _ = oned_twonn_clustering(np.asarray(rec["values"]))
                sizes.setdefault(c["method"], []).append(len(lo))
                n_noisy.add(len(rec["noisy_indices"]))
        if sizes:
            out.append(f"- {d}: corrupted {sorted(n_noisy)}; " + ", ".join(
                f"{oc.LABELS[m]} {np.mean(v):.1f}" for m, v in sizes.items()))
    out += ["", "**Wall time of CHG Shapley (Alg. 1) relative to each method** (mean time of the method / mean "
            "time of CHG, over both noise kinds and all seeds):", ""]
    for d in cfg.datasets:
        row = table.get(d, {})
        if "chg" not in row:
            continue
        t_chg = np.mean(row["chg"]["wall_time_s"])
        parts = [f"{oc.LABELS[m]} {np.mean(row[m]['wall_time_s']) / t_chg:.3g}×" for m in cfg.methods
                 if m in row and m != "chg"]
        out.append(f"- {d} (CHG {t_chg:.3f} s): " + ", ".join(parts))
    return "\n".join(out)


def render_latex(cfg: oc.Config) -> str:
    table = aggregate(cfg, oc.runs_for(cfg))
    lines = [f"% Table 1, measured, {cfg.scale} scale; made by reproduce/table1.py from reproduce/results/table1/. "
             "See table1.md for the full caption.",
             "\\begin{tabular}{l l l l " + "c " * 8 + "}", "\\toprule",
             "Method & Data & Ours (L F R A) & Paper & Label AUC & Label F1 & Feat.\\ AUC & Feat.\\ F1 & "
             "Removal acc & Addition acc & Time (s) & Fits \\\\", "\\midrule"]
    for m in cfg.methods:
        for j, d in enumerate(cfg.datasets):
            c = table.get(d, {}).get(m)
            name = oc.LABELS[m] if j == 0 else ""
            paper = oc.PAPER_SYMBOLS[m] if j == 0 else ""
            if c is None:
                lines.append(f"{name} & {d} & \\multicolumn{{10}}{{c}}{{not run}} \\\\")
                continue
            ours = " ".join(symbol(t, c, table[d].get("random", {})) for t in TASKS)
            nums = " & ".join(pm(c.get(k, [])).replace("±", "$\\pm$") for k in
                              ("label_auc", "label_f1", "feature_auc", "feature_f1", "removal", "addition"))
            lines.append(f"{name} & {d.replace('_', chr(92) + '_')} & {ours} & {paper} & {nums} & "
                         f"{np.mean(c['wall_time_s']):.2f} & {np.mean(c['model_fits']):.0f} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args, cfg = oc.parse_args(__doc__.splitlines()[0], argv)
    oc.ensure_runs(args, cfg)
    if not oc.runs_for(cfg):
        raise SystemExit(f"no table1 runs on disk for scale {cfg.scale}; run without --render-only first")
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    from chg.results import atomic_write
    for name, text in (("table1.md", render(cfg)), ("table1.tex", render_latex(cfg))):
        atomic_write(FIGURES_DIR / name, lambda tmp, t=text: Path(tmp).write_text(t))
        print(f"wrote {FIGURES_DIR / name}")


if __name__ == "__main__":
    main()
