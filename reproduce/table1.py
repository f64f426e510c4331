"""Table 1, measured: CHG Shapley vs the paper's baselines on OpenDataVal's four tasks.

    python reproduce/table1.py [--scale smoke|quick|paper] [--set seeds=0,1,2] [--shard i/k] [--render-only]

Compute step (skips runs already on disk): every (data set, noise ∈ {label, feature}, method, seed) run of
``kit.odv`` → ``reproduce/results/<scale>/table1/*.json``. Render step: ``figures/[<scale>/]table1.md`` and ``.tex``.
Presets: ``kit.odv.PRESETS`` (``--show`` prints the resolved one).

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

import numpy as np
from kit import odv as oc
from kit import grid, tables

TASKS = ("label", "feature", "removal", "addition")
TASK_NAMES = {"label": "Noisy label detection", "feature": "Noisy feature detection", "removal": "Point removal",
              "addition": "Point addition"}
# Δ vs Random for '+' and '++' (AUC points for detection; test-accuracy points for removal/addition).
THRESHOLDS = {"label": (0.05, 0.25), "feature": (0.05, 0.25), "removal": (0.01, 0.05), "addition": (0.01, 0.03)}


def removal_scores(rec: dict, max_fraction: float) -> tuple:
    r = rec["metrics"]["removal"]
    keep = [i for i, f in enumerate(r["fraction_removed"]) if f <= max_fraction + 1e-12]
    return float(np.mean([r["high_first"][i] for i in keep])), float(np.mean([r["low_first"][i] for i in keep]))


def aggregate(cfg: oc.OdvPreset, runs: list) -> dict:
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
    return tables.pm(values, digits)


def caption(runs: list, scale: str, datasets: list) -> str:
    def c(key, default_text=None):
        v = grid.config_value(runs, key)
        return default_text if (v == "None" and default_text) else v
    seeds = sorted({r["seed"] for r in runs})
    th = "; ".join(f"{TASK_NAMES[k]}: '+' if Δ ≥ {lo}, '++' if Δ ≥ {hi}" for k, (lo, hi) in THRESHOLDS.items())
    return (
        f"**Table 1 (measured, {scale} scale).** Data: {', '.join(datasets)} (opendataval; the sklearn sets "
        f"standardized), split train/valid/test = {c('train_count')}/{c('valid_count')}/{c('test_count')}, "
        f"{float(c('noise_rate')):.0%} of training points corrupted (labels: opendataval `mix_labels`; features: "
        f"`add_gauss_noise`, σ = {c('feature_noise_sigma')}). Model: opendataval `{c('model')}`, Adam, "
        f"epochs = {c('epochs')}, batch = {c('batch_size')}, lr = {c('lr')}. Seeds: {seeds} (mean ± std over "
        f"seeds; each seed re-draws split and noise); {len(runs)} runs. Sampler settings: TMC permutations = "
        f"{c('tmc_mc_epochs', 'opendataval default (GrTMC)')}, Data Banzhaf models = "
        f"{c('banzhaf_models', 'default 1000')}, AME models = {c('ame_models', 'default 1000')}, Data-OOB "
        f"models = {c('oob_models', 'default 1000')}, DVRL RL epochs = {c('dvrl_rl_epochs', 'default 1000')}, "
        f"KNN k = {c('knn_k')}; 'Data-OOB (default models)' = Data-OOB with {c('oob_default_models')} bagged models "
        f"(opendataval's default is 1000), label noise only; CHG: Algorithm 1 via `chg.opendataval.CHGShapley` "
        f"(values averaged over the same {c('epochs')} epochs; 'ride-along' = values from the training forward "
        f"passes).\n\n"
        f"Scores: detection = AUC of 'low value ⇒ corrupted' and opendataval's 2-means F1; point removal = test "
        f"accuracy averaged over 0–{float(c('removal_max_fraction')):.0%} of the training set removed highest-value "
        f"first (lower is better); point addition = the same removing lowest-value first, i.e. keeping/adding data "
        f"in decreasing value (higher is better). Removal/addition use one retraining per point of the curve "
        f"(opendataval `remove_high_low`, step {float(c('removal_percentile')):.0%}) on the label-noise runs. "
        f"**Symbols**: Δ = per-seed improvement, for detection AUC − 0.5 (chance), for removal/addition the test "
        f"accuracy against the Random evaluator on the same data set and seed (sign so that positive = better); "
        f"{th}, each only if the mean Δ also exceeds two standard errors of the mean over seeds; else '-'. 'Ours' "
        f"lists the symbols label/feature/removal/addition. 'Paper' = the paper's Table 1 (CIFAR10-embeddings; for "
        f"the baselines abstracted from Jiang et al. 2023). Wall time = seconds of `DataEvaluator.train` (mean over "
        f"all runs of the method, label and feature noise; device: {'; '.join(sorted({r['device'] for r in runs}))}"
        f"); fits = calls of the model's `fit` during valuation (CHG: its one training run). Made by "
        f"`python reproduce/table1.py --scale {scale}` from `reproduce/results/{scale}/table1/*.json`.")


COLUMNS = (("label_auc", "Label AUC"), ("label_f1", "Label F1"), ("feature_auc", "Feature AUC"),
           ("feature_f1", "Feature F1"), ("removal", "Removal acc ↓"), ("addition", "Addition acc ↑"))


def rows(table: dict, methods: list, datasets: list) -> list:
    """One row per (method, data set): paper symbols, ours, the six scores, wall time, fits."""
    out = []
    for m in methods:
        for j, d in enumerate(datasets):
            c = table.get(d, {}).get(m)
            first = [oc.LABELS[m] if j == 0 else "″", d, oc.PAPER_SYMBOLS[m] if j == 0 else "″"]
            if c is None:
                out.append(first + ["not run"] * (len(COLUMNS) + 3))
                continue
            ours = " ".join("(baseline)" if m == "random" and t in ("removal", "addition") else
                            symbol(t, c, table[d].get("random", {})) for t in TASKS)
            out.append(first + [ours] + [pm(c.get(k, [])) for k, _ in COLUMNS]
                       + [pm(c["wall_time_s"], 2), f"{np.mean(c['model_fits']):.0f}"])
    return out


def render(cfg: oc.OdvPreset, scale: str) -> str:
    runs = oc.require_records(cfg, scale, "Table 1")
    table = aggregate(cfg, runs)
    datasets = [d for d in cfg.datasets if d in table]
    methods = [m for m in cfg.methods if any(m in table[d] for d in datasets)]
    head = ("Method", "Data", "Paper (L F R A)", "Ours (L F R A)") + tuple(h for _, h in COLUMNS) + (
        "Wall time (s)", "Model fits")
    blocks = [caption(runs, scale, datasets),
              tables.Table(head, tuple(rows(table, methods, datasets)), title=f"Table 1 (measured, {scale} scale)"),
              summary(datasets, table, runs)]
    return tables.write(scale, "table1", blocks, f"Table 1, measured, {scale} scale; made by reproduce/table1.py from "
                                                  f"reproduce/results/{scale}/table1/; the caption is in table1.md")


def summary(datasets: list, table: dict, runs: list) -> str:
    """The closing note: CHG vs Data-OOB and KNN Shapley on noisy labels; CHG's speed vs every method."""
    from opendataval.experiment.util import oned_twonn_clustering
    out = ["**Noisy-label detection, CHG vs Data-OOB and KNN Shapley** (AUC mean ± std; F1 mean ± std):", ""]
    for d in datasets:
        row = table.get(d, {})
        parts = [f"{oc.LABELS[m]} {pm(row[m].get('label_auc', []))}; {pm(row[m].get('label_f1', []))}"
                 for m in ("chg", "chg_ride", "dataoob", "dataoob_default", "knnshapley") if m in row]
        out.append(f"- {d}: " + " | ".join(parts))
    out += ["", "**Size of the 2-means 'low value' cluster** that the F1 scores (label noise, mean over seeds; the "
            "number of corrupted points is given first): a long tail of very low values makes 2-means split off "
            "only a few points, hence a low F1 beside a high AUC.", ""]
    for d in datasets:
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
    for d in datasets:
        row = table.get(d, {})
        if "chg" not in row:
            continue
        t_chg = np.mean(row["chg"]["wall_time_s"])
        parts = [f"{oc.LABELS[m]} {np.mean(row[m]['wall_time_s']) / t_chg:.3g}×" for m in row if m != "chg"]
        out.append(f"- {d} (CHG {t_chg:.3f} s): " + ", ".join(parts))
    return "\n".join(out)


if __name__ == "__main__":
    oc.main(__doc__, render)
