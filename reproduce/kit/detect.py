"""The detection table: finding flipped labels with CHG Shapley beside the simple baselines, its presets and render.

One run = one (noise rate, seed): :func:`chg.experiments.detection.run_detection` trains the Tables 2–3 model of the
data set once
on the noisy pool and scores every pool point with every detector (CHG Shapley by Algorithm 1's separate pass and
ride-along, mean training loss, EL2N, cleanlab on K-fold out-of-sample probabilities, KNN Shapley on the trained
model's penultimate features); its record ``reproduce/results/<scale>/detection/<run_id>.json`` holds every
detector's metrics (ROC AUC, average precision, precision at k = number of flipped labels, 2-means F1) and wall times
(:func:`kit.grid.run_grid`: resumable, ``--shard i/k``, the already-done rule). The render step reads only the records
and writes ``figures/[<scale>/]detection.md|tex``: per noise rate one row per detector (mean ± std over seeds) and a
verdict computed from the numbers — in how many seeds (paired) each CHG variant beats each baseline on AUC and AP.
"""
from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

import chg.experiments.results as results
from chg.experiments.data import load_dataset
from chg.experiments.detection import DetectionConfig, run_detection
from chg.experiments.train import resolve_device

from . import cli, grid, tables
from .selection import DATA_LABELS, DATASET_SETTINGS

__all__ = ["DetectPreset", "presets", "runs", "executor", "method_times", "verdicts", "render", "main"]

EXPERIMENT = "detection"
CHG = ("chg_algorithm1", "chg_ride_along", "chg_algorithm1_skip", "chg_ride_skip")
BASELINES = ("mean_loss", "el2n", "cleanlab", "knn_shapley")
METHODS = CHG + BASELINES
LABELS = {"chg_algorithm1": "CHG Shapley (Algorithm 1, separate pass)", "chg_ride_along": "CHG Shapley (ride-along)",
          "chg_algorithm1_skip": "CHG Shapley (Algorithm 1, later half of the epochs)",
          "chg_ride_skip": "CHG Shapley (ride-along, later half of the epochs)",
          "mean_loss": "Mean training loss", "el2n": "EL2N", "cleanlab": "cleanlab (confident learning)",
          "knn_shapley": "KNN Shapley"}
SHORT = {"chg_algorithm1": "CHG (Alg. 1)", "chg_ride_along": "CHG (ride-along)",
         "chg_algorithm1_skip": "CHG (Alg. 1, skip)", "chg_ride_skip": "CHG (ride-along, skip)",
         "mean_loss": "mean loss",
         "el2n": "EL2N", "cleanlab": "cleanlab", "knn_shapley": "KNN Shapley"}
METRICS = (("roc_auc", "ROC AUC"), ("average_precision", "AP"), ("precision_at_k", "P@k"),
           ("f1_2means", "2-means F1"))
VERDICT_METRICS = (("roc_auc", "AUC"), ("average_precision", "AP"))


@dataclass(frozen=True)
class DetectPreset:
    """A whole detection grid: the data set, its axes (noise rates × seeds), the device, and the settings every run
    shares (``detection``, a :class:`chg.experiments.detection.DetectionConfig` whose ``seed`` is set per run)."""
    dataset: str
    noise_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    val_fraction: float = 0.1
    device: str = "cpu"
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    GRID_FIELDS: ClassVar[tuple] = ("detection.seed",)


def _model(dataset: str) -> dict:
    s = DATASET_SETTINGS[dataset]
    return {"model": s.model, "width": s.width}


def presets() -> dict:
    """The named presets of the detection table.

    smoke: digits (1,293-image pool), 30% noise, one seed, 4 epochs, 2 folds — seconds, no Fashion-MNIST needed.
    quick: digits at 10% and 30% noise, 3 seeds, 30 epochs (as Tables 2–3 quick), batch 64, 5 folds, KNN Shapley
    against all 145 validation points. medium: Fashion-MNIST, the whole 54,000-image pool at 10% and 30% noise,
    5 seeds, the Tables 2–3 medium model (``image_mlp``), 20 epochs, batch 128 (as Tables 2–3 medium, without their
    augmentation: every detector sees each point as it is), EL2N over the passes after epochs 1–3, cleanlab on 3-fold
    out-of-sample probabilities (cleanlab's default is 5; measured on the shared 2-core machine, a run with 3 folds
    costs 264–286 CPU-s, the 3 fold models ~90–100 s of it (wall seconds of seed 3, run on a nearly free core), so 5
    folds — twice the fold training — would bring the 10 runs to ~60 CPU-min, over the grid's budget of 25 minutes on
    2 cores; each fold model sees 2/3 of the pool instead of 4/5), KNN Shapley (k = 10) against a stratified 1,000 of
    the 6,000 validation points.
    medium-cnn: the medium grid with the paper's model family, the BatchNorm CNN of Tables 2–3 medium-cnn
    (``stride_cnn`` width 16: three stride-2 conv/BatchNorm/ReLU blocks, global pooling, one Linear) for 15 epochs as
    there, 5 seeds; measured before choosing (one thread, idle 2-core machine, the numbers of the Tables 2–3 preset):
    a training epoch 4.8 CPU-s with augmentation, its eval-mode pass 1.9 s, so a run (training with both CHG
    variants, 3 fold models on 2/3 of the pool each, KNN Shapley) is about 5 CPU-min and the 10 runs fit an hour
    of the 2 cores. This is where BatchNorm's eval-mode statistics can separate Algorithm 1's pass from ride-along.
    paper: the medium setting on a CUDA device (the paper has no detection table at this scale; the same grid, faster).
    Every scale: SGD lr 0.05, Nesterov momentum 0.9, weight decay 5e-4, cosine (chg.experiments.train's optimiser).
    """
    digits = _model("digits")
    fmnist = _model("fashion_mnist")
    smoke = DetectPreset("digits", (0.3,), (0,), detection=DetectionConfig(
        **digits, epochs=4, batch_size=64, el2n_epochs=2, folds=2, knn_val=100, factor_batch_size=2048))
    quick = DetectPreset("digits", (0.1, 0.3), (0, 1, 2), detection=DetectionConfig(
        **digits, epochs=30, batch_size=64, el2n_epochs=3, folds=5, knn_val=145, factor_batch_size=2048))
    medium = DetectPreset("fashion_mnist", (0.1, 0.3), (0, 1, 2, 3, 4), detection=DetectionConfig(
        **fmnist, epochs=20, batch_size=128, el2n_epochs=3, folds=3, knn_val=1000, factor_batch_size=2048))
    medium_cnn = DetectPreset("fashion_mnist", (0.1, 0.3), (0, 1, 2, 3, 4), detection=DetectionConfig(
        model="stride_cnn", width=16, epochs=15, batch_size=128, el2n_epochs=3, folds=3, knn_val=1000,
        factor_batch_size=2048))
    paper = dataclasses.replace(medium, device="auto")
    return {"smoke": smoke, "quick": quick, "medium": medium, "medium-cnn": medium_cnn, "paper": paper}


def runs(preset: DetectPreset) -> list:
    """Every run of the grid in a fixed order: seeds outer, noise rates inner (so that a grid stopped early has the
    same seeds at every rate, and with two rates ``--shard 0/2`` and ``1/2`` take one rate each).

    Raises:
        ValueError: a noise rate outside (0, 1) (detection needs flipped and clean labels).
    """
    out = []
    for rate in preset.noise_rates:
        if not 0 < rate < 1:
            raise ValueError(f"detection needs flipped and clean labels: noise rate in (0, 1), got {rate}")
    for seed in preset.seeds:
        for rate in preset.noise_rates:
            cfg = dataclasses.replace(preset.detection, seed=seed)
            config = {"dataset": preset.dataset, "noise_rate": rate, "val_fraction": preset.val_fraction,
                      "device": preset.device, **dataclasses.asdict(cfg)}
            out.append(grid.Run(f"{preset.dataset}-noise{rate:g}-s{seed}", seed, config,
                                (preset.dataset, rate, preset.val_fraction, preset.device, cfg)))
    return out


def executor():
    """The function that runs one (noise rate, seed): data, one :func:`run_detection`, the record's metrics (the
    per-point scores are not stored — 54,000 × 6 numbers per run — but every metric of them and their SHA-256)."""
    def execute(run: grid.Run) -> grid.Outcome:
        dataset, rate, val_fraction, device, cfg = run.task
        try:
            data = load_dataset(dataset, cfg.seed, val_fraction, rate)
        except FileNotFoundError as exc:  # the message says how to get the data
            raise SystemExit(f"detection: {exc}") from None
        dev = resolve_device(device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = run_detection(data, cfg, str(dev))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        digests = {k: hashlib.sha256(np.ascontiguousarray(v, dtype=np.float64).tobytes()).hexdigest()
                   for k, v in out["scores"].items()}
        metrics = {"detectors": out["metrics"], "times_s": out["times_s"], "test_acc": out["test_acc"],
                   "scores_sha256": digests,
                   "cleanlab_flagged": out.get("cleanlab_flagged"),
                   "cleanlab_find_label_issues_f1": out.get("cleanlab_find_label_issues_f1"),
                   "pool_size": len(data.train), "flipped": int(data.noisy.sum()), "val_size": len(data.val),
                   "test_size": len(data.test), "cpu_s": cpu}
        return grid.Outcome(metrics, wall, dev)
    return execute


# ---- render: aggregate → rows → format -------------------------------------------------------------------------

def method_times(times: dict) -> dict:
    """Wall seconds each detector needs in one run, from ``run_detection``'s ``times_s``: the one training run
    (its epochs with ride-along values and losses) plus the detector's own step — Algorithm 1: every separate pass;
    EL2N: the passes it uses (after epochs 1..el2n_epochs); KNN Shapley: the embedding pass and the valuation.
    cleanlab needs not the training run but its K fold models (K-fold training) and its own step."""
    train = times["train_with_values"]
    return {"chg_ride_along": train, "chg_ride_skip": train, "mean_loss": train,
            "chg_algorithm1": train + times["separate_pass"], "chg_algorithm1_skip": train + times["separate_pass"],
            "el2n": train + times["el2n_passes"], "knn_shapley": train + times["knn_shapley"],
            "cleanlab": times["kfold_training"] + times["cleanlab"]}


def _by_rate(records: list) -> dict:
    out: dict = {}
    for rec in records:
        out.setdefault(rec["config"]["noise_rate"], []).append(rec)
    return {rate: sorted(recs, key=lambda r: r["seed"]) for rate, recs in sorted(out.items())}


def verdicts(records: list) -> list:
    """One verdict per (CHG variant, baseline, metric of :data:`VERDICT_METRICS`) over the records of one noise rate,
    paired by seed: ``(chg, baseline, metric, wins, n, mean_chg, mean_baseline)`` — ``wins`` = seeds in which the CHG
    variant's value is strictly higher (a tie is not a win)."""
    out = []
    for c in CHG:
        for b in BASELINES:
            pairs = [(r["metrics"]["detectors"][c], r["metrics"]["detectors"][b]) for r in records
                     if c in r["metrics"]["detectors"] and b in r["metrics"]["detectors"]]
            if not pairs:
                continue
            for key, _ in VERDICT_METRICS:
                xs, ys = [p[0][key] for p in pairs], [p[1][key] for p in pairs]
                out.append((c, b, key, sum(x > y for x, y in zip(xs, ys)), len(pairs),
                            tables.mean_std(xs)[0], tables.mean_std(ys)[0]))
    return out


def _word(wins: int, n: int) -> str:
    """"beats" (every seed), "does not beat" (none), "beats in w of n seeds"; one seed is no verdict."""
    if n < 2:
        return "no verdict from one seed:"
    return "beats" if wins == n else "does not beat" if wins == 0 else f"beats in {wins} of {n} seeds"


def _verdict_text(rate: float, vs: list) -> str:
    """One line per (CHG variant, baseline): per metric of :data:`VERDICT_METRICS`, beats / does not beat / beats in
    w of n seeds, with the seeds won and the means."""
    names = dict(VERDICT_METRICS)
    lines = [f"**Verdict at {rate:.0%} noise** (paired over seeds; a seed counts as a win when CHG's value is "
             "strictly higher; means over seeds):"]
    for c in CHG:
        for b in BASELINES:
            cells = [v for v in vs if v[0] == c and v[1] == b]
            if cells:
                lines.append(f"- {SHORT[c]} vs {SHORT[b]}: " + "; ".join(
                    (f"{names[k]} {_word(w, n)} {mc:.4f} vs {mb:.4f}" if n < 2 else
                     f"{names[k]} {_word(w, n)} ({w}/{n} seeds, {mc:.4f} vs {mb:.4f})")
                    for _, _, k, w, n, mc, mb in cells) + ".")
    return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _fmt(xs: list, digits: int = 3) -> str:
    return tables.pm(xs, digits)


def _settings_text(records: list) -> str:
    def one(key):
        return grid.config_value(records, key)
    knn = f"KNN Shapley (k = {one('knn_k')}) on the trained model's penultimate features against " \
          f"{one('knn_val')} stratified clean validation points" if one("knn_val") != "0" else "KNN Shapley not run"
    folds = (f"cleanlab's find_label_issues / label-quality ranking on {one('folds')}-fold out-of-sample "
             f"probabilities ({one('folds')} fresh models, same settings, each trained on the other folds"
             + ("; cleanlab's own cross-validation, estimate_cv_predicted_probabilities, defaults to 5 folds; "
                "fewer here to fit the time budget" if one("folds") != "5" else "")
             + ")"
             if one("folds") != "0" else "cleanlab not run")
    skip = "" if not any("chg_ride_skip" in r["metrics"]["detectors"] for r in records) else \
        ("; each also on the later half of the epochs alone (the first epochs // 2 = "
         f"{'/'.join(str(int(e) // 2) for e in one('epochs').split('/'))} left out: skip_epochs)")
    return (f"model {one('model')}" + (f" (width {one('width')})" if one("width") != "None" else "")
            + f", {one('epochs')} epochs, batch {one('batch_size')}, SGD lr {one('lr')} (Nesterov momentum "
            f"{one('momentum')}, weight decay {one('weight_decay')}, cosine), no augmentation; CHG (Algorithm 1): "
            f"the sum of the values of a no-grad pass over the pool before each epoch; CHG (ride-along): the values "
            f"of the training forward passes{skip}; mean loss: the per-sample training losses averaged over the "
            f"epochs; "
            f"EL2N: the passes after epochs 1–{one('el2n_epochs')} of this one run (Paul et al. average 10 runs); "
            f"{folds}; {knn}")


def render(scale: str, preset: DetectPreset) -> str:
    """figures/[<scale>/]detection.md|tex from the records of ``scale`` (only the preset's data set, noise rates and
    seeds); returns the Markdown.

    Raises:
        SystemExit: no records of this scale (the compute step has not run).
    """
    records = [r for r in results.load_runs(EXPERIMENT, scale)
               if r["config"]["dataset"] == preset.dataset and r["config"]["noise_rate"] in preset.noise_rates
               and r["seed"] in preset.seeds]
    if not records:
        raise SystemExit(f"no {scale}-scale results under {results.RESULTS_DIR / scale / EXPERIMENT}; run the "
                         "compute step")
    seeds = sorted({r["seed"] for r in records})
    cpu, wall = sum(r["metrics"]["cpu_s"] for r in records), sum(r["wall_time_s"] for r in records)
    devices = sorted({r["device"] for r in records})
    data = DATA_LABELS.get(preset.dataset, preset.dataset)
    pools = sorted({r["metrics"]["pool_size"] for r in records})
    title = "Finding flipped labels: CHG Shapley beside the simple baselines"
    blocks = [tables.Heading(f"{title} — {scale} scale"),
              f"{data}, a pool of {'/'.join(map(str, pools))} training points with a share of the labels flipped to "
              f"another class drawn uniformly (validation and test clean); each run trains the model once on the "
              f"noisy pool and scores every pool point with every detector (higher suspicion = more likely flipped; "
              f"chg.experiments.detection.run_detection). Settings: {_settings_text(records)}. Metrics (scikit-learn) "
              f"against the "
              f"flipped-label mask: ROC AUC, average precision (AP), precision at k = the number of flipped labels "
              f"(P@k), F1 of the 2-means split of the scores (OpenDataVal's protocol); mean ± std over seeds {seeds} "
              f"({_n(len(seeds), 'seed')}). Time = wall seconds a detector needs in one run: the training run (its "
              f"epochs with ride-along values and per-sample losses; shared by every detector but cleanlab) plus the "
              f"detector's own step (Algorithm 1: every separate pass; EL2N: the passes it uses; KNN Shapley: the "
              f"embedding pass and the valuation); cleanlab: its K fold models and its own step; Time / training: "
              f"that over the training run's time, per run. Device: {'; '.join(devices)}; the runs got "
              f"{100 * cpu / wall:.0f}% of a core on average (CPU over wall seconds): times taken on a shared "
              f"machine, compare them within a table. Made by "
              f"`python reproduce/detection.py --scale {scale}` from reproduce/results/{scale}/{EXPERIMENT}/*.json "
              f"({len(records)} runs, {wall / 60:.1f} min of compute in all, {cpu / 60:.1f} CPU-min)."]
    head = ("Detector",) + tuple(name for _, name in METRICS) + ("Time (s)", "Time / training")
    for rate, recs in _by_rate(records).items():
        flipped = sorted({r["metrics"]["flipped"] for r in recs})
        rows = []
        for m in METHODS:
            have = [r for r in recs if m in r["metrics"]["detectors"]]
            if not have:
                continue
            cells = [_fmt([r["metrics"]["detectors"][m][key] for r in have]) for key, _ in METRICS]
            secs = [method_times(r["metrics"]["times_s"])[m] for r in have]
            ratio = [t / r["metrics"]["times_s"]["train_with_values"] for t, r in zip(secs, have)]
            rows.append([LABELS[m]] + cells + [tables.pm(secs, 1), tables.pm(ratio, 2, "×")])
        acc = tables.pm([r["metrics"]["test_acc"] for r in recs], 2, "%")
        caption = (f"{rate:.0%} of the labels flipped (k = {'/'.join(map(str, flipped))}), {_n(len(recs), 'seed')}; "
                   f"test accuracy of the model trained on the noisy pool: {acc}.")
        blocks.append(tables.Heading(f"{rate:.0%} label noise", 3))
        blocks.append(tables.Table(head, tuple(rows), caption, f"{data}, {scale} scale, {rate:.0%} noise: detection"))
        issues = [r for r in recs if r["metrics"].get("cleanlab_flagged") is not None]
        if issues:
            blocks.append(f"cleanlab's `find_label_issues` (its default filter) flags "
                          f"{tables.pm([r['metrics']['cleanlab_flagged'] for r in issues], 0, ' points')} (k = "
                          f"{'/'.join(map(str, flipped))} are flipped), F1 of that set "
                          f"{_fmt([r['metrics']['cleanlab_find_label_issues_f1'] for r in issues])}.")
        blocks.append(_verdict_text(rate, verdicts(recs)))
    comment = f"{title}, {scale} scale; seeds {seeds}; made by reproduce/detection.py from reproduce/results/{scale}/"
    return tables.write(scale, EXPERIMENT, blocks, comment + EXPERIMENT)


# ---- command line ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    """The command line of reproduce/detection.py (kit.cli's options)."""
    all_presets = presets()
    p = cli.parser("Detection table (flipped labels): compute (resumable, shardable) and render.", all_presets)
    args, preset = cli.parse(p, all_presets, argv)
    try:
        grid_runs = runs(preset)
    except ValueError as exc:
        p.error(str(exc))
    return grid.compute_and_render(EXPERIMENT, args, preset, grid_runs, executor(), render)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("a library: run reproduce/detection.py")
