"""Table 1, measured: CHG Shapley vs the paper's baselines on OpenDataVal's four tasks.

    python reproduce/table1.py [--scale smoke|quick|medium|paper] [--set seeds=0,1,2] [--shard i/k] [--render-only]

Compute step (skips runs already on disk): every (data set, noise ∈ {label, feature}, method, seed) run of
``kit.odv`` → ``reproduce/results/<scale>/table1/*.json``. Render step: ``figures/[<scale>/]table1.md`` and ``.tex``.
Presets: ``kit.odv_presets.PRESETS`` (``--show`` prints the resolved one).

Tasks and scores (mean ± std over seeds, per data set):
* noisy label / noisy feature detection (opendataval's ``mix_labels`` / ``add_gauss_noise``): AUC of "low value ⇒
  corrupted" and the F1 of opendataval's 2-means split (``noisy_detection``), both by the one scorer
  ``chg.detection.detection_metrics`` on the records' data values (``kit.odv.detection``);
* point removal: test accuracy of the model retrained after removing the highest-valued points first, averaged over
  removed fractions 0–50 % (lower = better values); label-noise runs;
* point addition: the same with the lowest-valued points removed first, i.e. data added in decreasing value
  (higher = better values); label-noise runs.
Each '-/+/++' is computed from these numbers against the Random evaluator (thresholds in ``THRESHOLDS``); below the
table, a verdict per symbol of CHG's row (:func:`verdicts`), and at medium scale the authors' notebook's published F1
(CIFAR-10 embeddings, reproduce/paper_numbers.txt) beside ours (:func:`notebook_block`).
"""
from __future__ import annotations

import numpy as np
from kit import grid, odv, tables
from kit.odv_presets import EMBED_DATASET, LABELS, NOISES, OMITTED, PAPER_SYMBOLS, PRESETS, TIMING_NOTES, OdvPreset
from kit.odv_text import data_text, notebook_f1

TASKS = ("label", "feature", "removal", "addition")
TASK_NAMES = {"label": "Noisy label detection", "feature": "Noisy feature detection", "removal": "Point removal",
              "addition": "Point addition"}
# Δ vs Random for '+' and '++' (AUC points for detection; test-accuracy points for removal/addition).
THRESHOLDS = {"label": (0.05, 0.25), "feature": (0.05, 0.25), "removal": (0.01, 0.05), "addition": (0.01, 0.03)}


def removal_scores(rec: dict, max_fraction: float) -> tuple:
    r = rec["metrics"]["removal"]
    keep = [i for i, f in enumerate(r["fraction_removed"]) if f <= max_fraction + 1e-12]
    return float(np.mean([r["high_first"][i] for i in keep])), float(np.mean([r["low_first"][i] for i in keep]))


def aggregate(cfg: OdvPreset, runs: list) -> dict:
    """{dataset: {method: {metric: [per-seed values]}}}; detection metrics by :func:`kit.odv.detection` (the one
    scorer, chg.detection.detection_metrics, on each record's data values): AUC = ``roc_auc``, F1 = OpenDataVal's
    2-means F1, and the size of its flagged cluster (``{noise}_flagged``) beside the number corrupted."""
    table: dict = {}
    for rec in runs:
        c, m = rec["config"], rec["metrics"]
        cell = table.setdefault(c["dataset"], {}).setdefault(c["method"], {})
        z = c["noise"]
        det = odv.detection(rec)
        auc, f1 = det["roc_auc"], det["f1_2means_opendataval"]
        cell.setdefault(f"{z}_auc", []).append(auc)
        cell.setdefault(f"{z}_f1", []).append(f1)
        cell.setdefault(f"{z}_auc_by_seed", {})[rec["seed"]] = auc
        cell.setdefault(f"{z}_f1_by_seed", {})[rec["seed"]] = f1
        cell.setdefault(f"{z}_flagged", []).append(det["flagged_2means_opendataval"])
        cell.setdefault(f"{z}_corrupted", []).append(det["k"])
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


NO_SE = "n/a (1 seed)"  # a symbol or comparison that needs a standard error, over one seed


def symbol(task: str, cell: dict, rand: dict) -> str:
    """'++'/'+' when the mean improvement reaches the threshold AND exceeds two standard errors (so one lucky seed
    does not make a '+'); else '-'. One seed has no standard error: NO_SE, no symbol."""
    d = deltas(task, cell, rand)
    if not d:
        return "not run"
    if len(d) < 2:
        return NO_SE
    mean = float(np.mean(d))
    se = float(np.std(d, ddof=1) / np.sqrt(len(d)))
    if mean <= 2 * se:
        return "-"
    lo, hi = THRESHOLDS[task]
    return "++" if mean >= hi else "+" if mean >= lo else "-"


def pm(values, digits=3) -> str:
    return tables.pm(values, digits)


def scale_notes(cfg: OdvPreset, runs: list) -> str:
    """The caption's sentences on what this scale runs differently: its data (the embeddings), its noise kinds, and
    each method of the quick preset it leaves out, with the reason (kit.odv_presets.OMITTED)."""
    out = []
    data = data_text(runs)
    if data:
        out.append(f"Data: {data}.")
    noises = sorted({r["config"]["noise"] for r in runs})
    if tuple(noises) != tuple(sorted(NOISES)):
        out.append(f"Noise kinds run: {', '.join(noises)} only (the feature columns read 'not run').")
    done = {r["run_id"] for r in runs}
    missing: dict = {}
    for r in odv.runs(cfg):
        if r.run_id not in done:
            missing.setdefault(r.config["method"], []).append(r.seed)
    if missing:
        out.append(f"**Incomplete grid**: {sum(map(len, missing.values()))} of {len(odv.runs(cfg))} runs of this "
                   "preset are not in the records yet (the same command resumes the grid): " + "; ".join(
                       f"{LABELS[m]} seeds {seeds}" for m, seeds in missing.items())
                   + ". Means over fewer seeds than the caption lists are over the seeds recorded.")
    scale = {r["scale"] for r in runs}
    out += [f"Timing: {TIMING_NOTES[z]}." for z in sorted(scale) if z in TIMING_NOTES]
    left_out = [m for m in PRESETS["quick"].methods if m not in cfg.methods]
    if left_out:
        why = {m: OMITTED.get(m, "not in this preset") for m in left_out}
        if "dataoob_default" in why:
            why["dataoob_default"] += oob_models_effect()
        out.append("Left out at this scale (every other method of the quick preset is run): " + "; ".join(
            f"{LABELS[m]}: {why[m]}" for m in left_out) + ".")
    return " ".join(out)


def oob_models_effect() -> str:
    """What 1,000 instead of 100 bagged models changed at quick scale, from the committed quick records: the largest
    difference of the mean label-noise AUC and F1 between the two Data-OOB rows over the data sets ("" without
    records of both)."""
    quick = [r for r in odv.records(PRESETS["quick"], "quick") if r["config"]["noise"] == "label"]
    table = aggregate(PRESETS["quick"], quick) if quick else {}
    diffs = {"AUC": [], "F1": []}
    for cells in table.values():
        if "dataoob" in cells and "dataoob_default" in cells:
            for key, name in (("label_auc", "AUC"), ("label_f1", "F1")):
                diffs[name].append(abs(np.mean(cells["dataoob_default"][key]) - np.mean(cells["dataoob"][key])))
    if not diffs["AUC"]:
        return ""
    return (f" (at quick scale, from its records, 1,000 instead of 100 models moved the mean label-noise AUC by at "
            f"most {max(diffs['AUC']):.3f} and the F1 by at most {max(diffs['F1']):.3f} over {len(diffs['AUC'])} data "
            f"sets)")


def caption(runs: list, scale: str, datasets: list) -> str:
    def c(key, default_text=None):
        v = grid.config_value(runs, key)
        return default_text if (v == "None" and default_text) else v
    seeds = sorted({r["seed"] for r in runs})
    th = "; ".join(f"{TASK_NAMES[k]}: '+' if Δ ≥ {lo}, '++' if Δ ≥ {hi}" for k, (lo, hi) in THRESHOLDS.items())
    return (
        f"**Table 1 (measured, {scale} scale).** Data: {', '.join(datasets)} (opendataval; the sklearn sets "
        f"standardized), split train/valid/test = {c('train_count')}/{c('valid_count')}/{c('test_count')}, "
        f"{float(c('noise_rate')):.0%} of training points corrupted (labels: opendataval `mix_labels`, which also "
        f"flips the same share of the validation labels; features: "
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
        f"{th}, each only if the mean Δ also exceeds two standard errors of the mean over seeds; else '-' "
        f"('{NO_SE}': one seed has no standard error, so no symbol). 'Ours' "
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
            first = [LABELS[m] if j == 0 else "″", d, PAPER_SYMBOLS[m] if j == 0 else "″"]
            if c is None:
                out.append(first + ["not run"] * (len(COLUMNS) + 3))
                continue
            ours = " ".join("(baseline)" if m == "random" and t in ("removal", "addition") else
                            symbol(t, c, table[d].get("random", {})) for t in TASKS)
            out.append(first + [ours] + [pm(c.get(k, [])) for k, _ in COLUMNS]
                       + [pm(c["wall_time_s"], 2), f"{np.mean(c['model_fits']):.0f}"])
    return out


def paired(task_key: str, a: dict, b: dict) -> tuple:
    """(mean, standard error, n) of the per-seed differences a − b of ``task_key`` (e.g. ``label_auc``) over the
    seeds both cells have; (None, None, 0) when they share none."""
    xa, xb = a.get(f"{task_key}_by_seed", {}), b.get(f"{task_key}_by_seed", {})
    d = [xa[s] - xb[s] for s in sorted(set(xa) & set(xb))]
    if not d:
        return None, None, 0
    return float(np.mean(d)), (float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0), len(d)


def versus(task_key: str, cell: dict, rival: dict) -> str:
    """'higher (+m ± se)' / 'lower (...)' / 'tie (...)': the paired per-seed difference cell − rival of ``task_key``,
    beyond two standard errors or not; NO_SE with the difference over one common seed."""
    mean, se, n = paired(task_key, cell, rival)
    if mean is None:
        return "no common seed"
    if n < 2:
        return f"{NO_SE}: {mean:+.3f}"
    word = "higher" if mean > 2 * se else "lower" if mean < -2 * se else "tie"
    return f"{word} ({mean:+.3f} ± {se:.3f}, n = {n})"


RIVALS = ("dataoob", "dataoob_default", "knnshapley", "random")  # what CHG's detection scores are set against
RANK = {"-": 0, "+": 1, "++": 2}


def verdicts(datasets: list, table: dict) -> str:
    """One sentence per symbol of the paper's Table 1 row for CHG Shapley (Alg. 1), computed from the records: the
    measured symbol against the paper's, with CHG's scores and its paired differences to Data-OOB, KNN Shapley and
    Random (detection), or its accuracy against Random's (removal/addition)."""
    paper = dict(zip(TASKS, PAPER_SYMBOLS["chg"].split()))
    out = [f"**Verdicts: the paper's Table 1 symbols for CHG Shapley (Alg. 1)** ({PAPER_SYMBOLS['chg']} = noisy "
           "label, noisy feature, point removal, point addition), measured here with the rule of the caption; "
           "'holds' = the measured symbol is at least the paper's. 'vs X': CHG's score minus X's, paired by seed "
           "(mean ± standard error over the seeds both ran); higher/lower = beyond two standard errors, else tie.",
           ""]
    for d in datasets:
        row = table.get(d, {})
        cell = row.get("chg")
        if cell is None:
            continue
        rand = row.get("random", {})
        for t in TASKS:
            ours = symbol(t, cell, rand)
            head = f"- {d}, {TASK_NAMES[t].lower()}: paper '{paper[t]}', measured '{ours}'"
            if ours == "not run":
                out.append(f"{head}: not run at this scale, so no verdict.")
                continue
            if ours == NO_SE:
                out.append(f"{head}: one seed gives no standard error, so no symbol and no verdict (run more "
                           "seeds).")
                continue
            holds = ("no claim in the paper (NA)" if paper[t] not in RANK else
                     "holds" if RANK[ours] >= RANK[paper[t]] else "does NOT hold")
            if t in ("label", "feature"):
                rivals = [r for r in RIVALS if f"{t}_auc_by_seed" in row.get(r, {})]
                vs = "; ".join(f"vs {LABELS[r]}: AUC {versus(f'{t}_auc', cell, row[r])}, F1 "
                               f"{versus(f'{t}_f1', cell, row[r])}" for r in rivals)
                out.append(f"{head} → {holds}. CHG AUC {pm(cell[f'{t}_auc'])}, F1 {pm(cell[f'{t}_f1'])}; {vs}.")
            else:
                key = "removal" if t == "removal" else "addition"
                better = "lower" if t == "removal" else "higher"
                out.append(f"{head} → {holds}. CHG test accuracy {pm(cell.get(key, []))} vs Random "
                           f"{pm(rand.get(key, []))} ({better} is better).")
    return "\n".join(out)


def notebook_block(table: dict, datasets: list) -> list:
    """The authors' notebook's noisy-label F1 (CIFAR-10 embeddings) beside ours on the Fashion-MNIST embeddings,
    one row per method of either; [] unless the embeddings are among the data sets."""
    nb = notebook_f1()
    if EMBED_DATASET not in datasets or not nb:
        return []
    row = table[EMBED_DATASET]
    labels = {**LABELS, "influence_subsample": "InfluenceSubsample (not run here)"}
    methods = sorted(nb, key=lambda m: -nb[m]) + [m for m in row if m not in nb]
    body = tuple((labels[m], pm(row[m]["label_f1"]) if m in row else "not run",
                  pm(row[m]["label_auc"]) if m in row else "not run", f"{nb[m]:.3f}" if m in nb else "—")
                 for m in methods)
    common = [m for m in nb if m in row]
    ours_order = sorted(common, key=lambda m: -np.mean(row[m]["label_f1"]))
    text = (f"**Noisy-label F1 beside the authors' notebook.** Ours: {EMBED_DATASET}, mean ± std over seeds. "
            "Theirs: '[authors' notebook, CIFAR-10 embeddings]' = the F1 published in the authors' official notebook "
            "for CIFAR-10 ResNet-50 embeddings (reproduce/paper_numbers.txt, [table1 notebook f1]), under the same "
            "protocol (1,000 train / 100 valid / 300 test, 10% label noise, logistic regression, 10 epochs) but on "
            "other data and one run of theirs: NOT comparable number for number, only as an order. Their order of "
            f"the methods both ran: {' > '.join(labels[m] for m in common)}; ours by mean F1: "
            f"{' > '.join(labels[m] for m in ours_order)}.")
    head = ("Method", f"Ours: label F1 ({EMBED_DATASET})", "Ours: label AUC",
            "[authors' notebook, CIFAR-10 embeddings] F1")
    return [text, tables.Table(head, body, title="Noisy-label F1: ours vs the authors' notebook (other data)")]


def render(cfg: OdvPreset, scale: str) -> str:
    runs = odv.require_records(cfg, scale, "Table 1")
    table = aggregate(cfg, runs)
    datasets = [d for d in cfg.datasets if d in table]
    methods = [m for m in cfg.methods if any(m in table[d] for d in datasets)]
    head = ("Method", "Data", "Paper (L F R A)", "Ours (L F R A)") + tuple(h for _, h in COLUMNS) + (
        "Wall time (s)", "Model fits")
    notes = scale_notes(cfg, runs)
    blocks = [caption(runs, scale, datasets) + (f"\n\n{notes}" if notes else ""),
              tables.Table(head, tuple(rows(table, methods, datasets)), title=f"Table 1 (measured, {scale} scale)"),
              *notebook_block(table, datasets), verdicts(datasets, table), summary(datasets, table, runs)]
    return tables.write(scale, "table1", blocks, f"Table 1, measured, {scale} scale; made by reproduce/table1.py from "
                                                  f"reproduce/results/{scale}/table1/; the caption is in table1.md")


def summary(datasets: list, table: dict, runs: list) -> str:
    """The closing note: CHG vs Data-OOB and KNN Shapley on noisy labels; CHG's speed vs every method."""
    out = ["**Noisy-label detection, CHG vs Data-OOB and KNN Shapley** (AUC mean ± std; F1 mean ± std):", ""]
    for d in datasets:
        row = table.get(d, {})
        parts = [f"{LABELS[m]} {pm(row[m].get('label_auc', []))}; {pm(row[m].get('label_f1', []))}"
                 for m in ("chg", "chg_ride", "dataoob", "dataoob_default", "knnshapley") if m in row]
        out.append(f"- {d}: " + " | ".join(parts))
    out += ["", "**Size of the 2-means 'low value' cluster** that the F1 scores (label noise, mean over seeds; the "
            "number of corrupted points is given first): a long tail of very low values makes 2-means split off "
            "only a few points, hence a low F1 beside a high AUC.", ""]
    for d in datasets:
        row = table.get(d, {})
        methods = [m for m in dict.fromkeys(r["config"]["method"] for r in runs  # in the records' order
                                            if r["config"]["dataset"] == d and r["config"]["noise"] == "label")
                   if m in ("chg", "chg_ride", "dataoob", "knnshapley")]
        sizes = {m: row[m]["label_flagged"] for m in methods}
        n_noisy = {k for m in methods for k in row[m]["label_corrupted"]}
        if sizes:
            out.append(f"- {d}: corrupted {sorted(n_noisy)}; " + ", ".join(
                f"{LABELS[m]} {np.mean(v):.1f}" for m, v in sizes.items()))
    out += ["", "**Wall time of CHG Shapley (Alg. 1) relative to each method** (mean time of the method / mean "
            "time of CHG, over both noise kinds and all seeds):", ""]
    for d in datasets:
        row = table.get(d, {})
        if "chg" not in row:
            continue
        t_chg = np.mean(row["chg"]["wall_time_s"])
        parts = [f"{LABELS[m]} {np.mean(row[m]['wall_time_s']) / t_chg:.3g}×" for m in row if m != "chg"]
        out.append(f"- {d} (CHG {t_chg:.3f} s): " + ", ".join(parts))
    return "\n".join(out)


if __name__ == "__main__":
    odv.main(__doc__, render)
