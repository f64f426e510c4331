"""Tables 2 and 3: the subset-training grid (methods × fractions × data sets × seeds), its presets and its render.

Every run is one :func:`chg.experiments.train.train` call and one record
``reproduce/results/<scale>/<table>/<run_id>.json``
(:func:`kit.grid.run_grid`: resumable, ``--shard i/k``, the already-done rule); a run killed midway resumes from its
checkpoint under ``reproduce/checkpoints/<scale>/<table>/``. The render step reads only the records.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import ClassVar

import chg.experiments.results as results
from chg.selection import budget
from chg.experiments.data import load_dataset
from chg.experiments.train import TrainConfig, resolve_device, train

from . import cli, grid, tables

__all__ = ["SelectionPreset", "DatasetSettings", "DATASET_SETTINGS", "presets", "runs", "executor", "render", "main"]

FRACTIONS = (0.05, 0.1, 0.3, 0.5, 0.7)
ALL_METHODS = ("full", "random", "adaptive_random", "glister", "gradmatch_pb", "chg", "chg_unweighted", "hardness",
               "gradient")
CNN_METHODS = ALL_METHODS[:6] + ("chg_ride",) + ALL_METHODS[6:]  # medium-cnn: Algorithm 2 as printed and ride-along
LABELS = {"full": "Full", "random": "Random", "adaptive_random": "AdaptiveRandom", "glister": "GLISTER",
          "gradmatch_pb": "GradMatch (PB)", "chg": "CHG Shapley", "chg_ride": "CHG Shapley, ride-along factors",
          "chg_unweighted": "CHG Shapley, weights 1 (ablation)",
          "hardness": "Hardness Shapley", "gradient": "Gradient Shapley"}
DATA_LABELS = {"digits": "digits (sklearn)", "breast_cancer": "breast cancer (sklearn)", "cifar10": "CIFAR10",
               "cifar100": "CIFAR100", "tinyimagenet": "Tiny ImageNet", "fashion_mnist": "Fashion-MNIST"}
SAME = "″"  # a cell equal to the one on its left (Full: one run on all data)


@dataclass(frozen=True)
class DatasetSettings:
    """What a data set fixes for every run on it: the model and the augmentation."""
    model: str
    width: int | None
    augment_pad: int
    augment_flip: bool


# Digits are not flipped (a mirrored digit is another symbol); 8×8 images are cropped with padding 1 (CIFAR's 4 px of
# 32 scaled down); tabular data is not augmented.
DATASET_SETTINGS = {
    "digits": DatasetSettings(model="smallcnn", width=16, augment_pad=1, augment_flip=False),
    "breast_cancer": DatasetSettings(model="mlp", width=64, augment_pad=0, augment_flip=False),
    "cifar10": DatasetSettings(model="resnet18", width=None, augment_pad=4, augment_flip=True),
    "cifar100": DatasetSettings(model="resnet18", width=None, augment_pad=4, augment_flip=True),
    "tinyimagenet": DatasetSettings(model="resnet18", width=None, augment_pad=4, augment_flip=True),
    # medium scale: an MLP (784-128-128-10, chg.experiments.models.ImageMLP) is what 2 CPU cores can train on 54,000
    # images in
    # the time budget; clothes stay clothes when mirrored, and a 2-pixel crop is CIFAR's 4 of 32 scaled to 28
    "fashion_mnist": DatasetSettings(model="image_mlp", width=None, augment_pad=2, augment_flip=True),
}


@dataclass(frozen=True)
class SelectionPreset:
    """A whole grid: its axes, and the training settings every run shares (``train``, a TrainConfig whose grid
    fields — data set, method, fraction, seed, and the data set's model and augmentation — are set per run)."""
    datasets: tuple[str, ...]
    methods: tuple[str, ...] = ALL_METHODS
    fractions: tuple[float, ...] = FRACTIONS
    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: str | None = None   # None: the data set's model (DATASET_SETTINGS); else this one on every data set
    width: int | None = None   # with ``model``: its width (None: the model's default)
    GRID_FIELDS: ClassVar[tuple] = ("train.dataset", "train.method", "train.fraction", "train.seed", "train.model",
                                    "train.width", "train.augment_pad", "train.augment_flip")


def presets(table: str) -> dict:
    """The named presets of Table 2 (clean labels) or Table 3 (30% label noise).

    smoke: every method on both quick data sets, a = 0.1, one seed, 2 epochs with a selection each epoch — seconds.
    quick: 2 CPU cores, minutes. 30 epochs with R = 5, so that Algorithm 2 re-selects 6 times (the paper's 300/20
    gives 15); batch 64 instead of 128 so that the 5% subsets (≈ 65 digits) still take 2 steps per epoch; optimizer
    as the paper preset; 3 seeds. medium: Fashion-MNIST (54,000-image pool, 6,000 validation, 10,000 test), the
    ImageMLP, 20 epochs with R = 5, batch 128, 5 seeds, on 2 CPU cores; GLISTER's greedy steps see a stratified
    1,000 of the 6,000 validation points (``selection_val_size``; with all 6,000 it alone would take ~4 h of the
    grid), the only setting in which a method differs from its quick-scale form. medium-cnn: the medium setting with
    the paper's model family — :class:`chg.experiments.models.StrideCNN` (three 3×3 stride-2 conv/BatchNorm/ReLU
    blocks of 16, 32,
    64 channels, global average pool, one Linear) — and Algorithm 2's ride-along variant (``chg_ride``) beside the
    printed one; 15 epochs with R = 5 (selections at epochs 0, 5, 10), 3 seeds. Measured before choosing (one thread,
    54,000 augmented images, batch 128, idle 2-core machine): a training epoch of StrideCNN takes 2.6 / 4.8 / 12.3
    CPU-s at width 8 / 16 / 32 and its eval-mode pass 0.5 / 1.9 / 4.4 s; a ResNet-18 of width 4 (32×32 input) takes
    ~56 CPU-s and width 8 ~95 — 12–20× width 16, more than the 2 cores can give Tables 2–3 (~90 runs per seed). Width
    16 and 15 epochs put one seed of both tables at roughly 1 h of the 2 cores. paper: the paper's setting
    (ResNet-18, R = 20, batch 128, SGD lr 0.05 with
    momentum 0.9, Nesterov, weight decay 5e-4, cosine — CORDS' defaults, on which the paper's selection code was
    built); 300 epochs as in the authors' released selection configs; one seed (the paper reports one number per
    cell). Table 3 at paper scale: CIFAR-10/100 and the methods of the paper's Table 3.
    """
    noise = {"table2": 0.0, "table3": 0.3}[table]
    cpu = dict(batch_size=64, noise_rate=noise, device="cpu", factor_batch_size=2048)
    smoke = SelectionPreset(datasets=("digits", "breast_cancer"), fractions=(0.1,), seeds=(0,),
                            train=TrainConfig(epochs=2, select_every=1, checkpoint_every=1, **cpu))
    quick = SelectionPreset(datasets=("digits", "breast_cancer"),
                            train=TrainConfig(epochs=30, select_every=5, checkpoint_every=5, **cpu))
    paper_sets = ("cifar10", "cifar100", "tinyimagenet") if table == "table2" else ("cifar10", "cifar100")
    paper_methods = ALL_METHODS if table == "table2" else ("full", "random", "adaptive_random", "glister",
                                                           "gradmatch_pb", "chg", "chg_unweighted")
    paper = SelectionPreset(datasets=paper_sets, methods=paper_methods, seeds=(0,),
                            train=TrainConfig(epochs=300, select_every=20, batch_size=128, checkpoint_every=10,
                                              noise_rate=noise, device="auto"))
    medium = SelectionPreset(datasets=("fashion_mnist",), seeds=(0, 1, 2, 3, 4),
                             train=TrainConfig(epochs=20, select_every=5, batch_size=128, checkpoint_every=5,
                                               noise_rate=noise, device="cpu", factor_batch_size=2048,
                                               selection_val_size=1000))
    medium_cnn = SelectionPreset(datasets=("fashion_mnist",), methods=CNN_METHODS, seeds=(0, 1, 2),
                                 model="stride_cnn", width=16,
                                 train=TrainConfig(epochs=15, select_every=5, batch_size=128, checkpoint_every=5,
                                                   noise_rate=noise, device="cpu", factor_batch_size=2048,
                                                   selection_val_size=1000))
    return {"smoke": smoke, "quick": quick, "medium": medium, "medium-cnn": medium_cnn, "paper": paper}


def run_config(preset: SelectionPreset, dataset: str, method: str, fraction: float, seed: int) -> TrainConfig:
    if dataset not in DATASET_SETTINGS:
        raise ValueError(f"no model/augmentation settings for data set {dataset!r}; known: {sorted(DATASET_SETTINGS)}")
    settings = dataclasses.asdict(DATASET_SETTINGS[dataset])
    if preset.model is not None:
        settings.update(model=preset.model, width=preset.width)
    return dataclasses.replace(preset.train, dataset=dataset, method=method, seed=seed,
                               fraction=1.0 if method == "full" else fraction, **settings)


def runs(preset: SelectionPreset) -> list:
    """Every run of the grid in a fixed order (Full once per data set and seed)."""
    out = []
    for dataset in preset.datasets:
        for seed in preset.seeds:
            for method in preset.methods:
                for fraction in ((1.0,) if method == "full" else preset.fractions):
                    cfg = run_config(preset, dataset, method, fraction, seed)
                    out.append(grid.Run(f"{dataset}-{method}-a{cfg.fraction:g}-s{seed}", seed,
                                        dataclasses.asdict(cfg), cfg))
    return out


def executor(table: str, scale: str, hook=None):
    """The function that trains one run (data sets cached between consecutive runs); ``hook(cfg, epoch)`` is passed
    to training (tests kill a run with it)."""
    cache: dict = {}

    def execute(run: grid.Run) -> grid.Outcome:
        cfg = run.task
        key = (cfg.dataset, cfg.seed, cfg.noise_rate, cfg.val_fraction)
        if key not in cache:
            cache.clear()
            cache[key] = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.noise_rate)
        ckpt = results.CHECKPOINT_DIR / scale / table / f"{run.run_id}.pt"
        t0 = time.perf_counter()
        metrics = train(cfg, cache[key], checkpoint=ckpt,
                        hook=None if hook is None else (lambda epoch: hook(cfg, epoch))).metrics
        wall = time.perf_counter() - t0
        # the selection itself (one index and weight per point) is summarised: the record stays small
        indices, weights = metrics.pop("final_indices"), metrics.pop("final_weights")
        metrics["final_weights_min_max"] = [min(weights), max(weights)] if weights else None
        metrics["final_indices_sha256"] = hashlib.sha256(json.dumps(sorted(indices)).encode()).hexdigest()
        return grid.Outcome(metrics, wall, resolve_device(cfg.device), cleanup=(ckpt,))
    return execute


# ---- render: aggregate → rows → format -------------------------------------------------------------------------

def aggregate(records: list) -> dict:
    """{(dataset, method, fraction): {quantity: [one value per run]}} for the quantities the tables show."""
    out: dict = {}
    for rec in records:
        c, m = rec["config"], rec["metrics"]
        cell = out.setdefault((c["dataset"], c["method"], c["fraction"]), {})
        for name, value in (("acc", m["test_acc"]), ("time", m["train_s"] + m["select_s"]),
                            ("overhead", m["selection_overhead"] or 0.0), ("noisy", 100 * m["subset_noisy_share"]),
                            ("size", m["subset_size"]), ("pool", m["pool_size"])):
            cell.setdefault(name, []).append(value)
    return out


def _cells(agg: dict, dataset: str, method: str, fractions: tuple, fmt) -> list:
    """One row's cells: ``fmt(values_by_quantity)`` per fraction; Full (one run on all data) once, then ″."""
    if method == "full":
        return [fmt(agg.get((dataset, "full", 1.0), {}))] + [SAME] * (len(fractions) - 1)
    return [fmt(agg.get((dataset, method, a), {})) for a in fractions]


def _time(v: dict) -> str:
    if not v:
        return "not run"
    return f"{tables.mean_std(v['time'])[0]:.2f} s (sel. {tables.mean_std(v['overhead'])[0]:.0%} of train)"


FORMATS = {
    "acc": ("Accuracy (%)", lambda v: tables.pm(v.get("acc", []))),
    "time": ("Time", _time),
    "size": ("Subset size", lambda v: f"{tables.mean_std(v['size'])[0]:.0f}" if v else "not run"),
    "noisy": ("Mislabeled (%)", lambda v: tables.pm(v.get("noisy", []), 1)),
}


def budget_note(records: list, methods: tuple) -> str:
    """How far each method's final subset is from round(a·n) points (:func:`chg.selection.budget`: the rule every
    selector follows), measured over every run (no typed-in claim)."""
    dev: dict = {}
    for rec in records:
        c, m = rec["config"], rec["metrics"]
        if c["method"] != "full":
            dev.setdefault(c["method"], []).append(m["subset_size"] - budget(m["pool_size"], c["fraction"]))
    parts = []
    for method in methods:
        d = dev.get(method)
        if d is None:
            continue
        spread = f"{min(d):+d}" if min(d) == max(d) else f"{min(d):+d} to {max(d):+d}"
        parts.append(f"{LABELS[method]} exactly round(a·n) in all {len(d)} runs" if not any(d) else
                     f"{LABELS[method]} {spread} points ({sum(1 for x in d if x)} of {len(d)} runs differ)")
    return ("Subset size = points trained on at the end (mean over seeds). Measured against round(a·n), n = the pool: "
            + "; ".join(parts) + ".")


def _settings_text(records: list) -> str:
    def one(key):
        return grid.config_value(records, key)
    return (f"{one('epochs')} epochs, selection every R = {one('select_every')} epochs, batch {one('batch_size')}, "
            f"SGD lr {one('lr')} (momentum {one('momentum')}, Nesterov {one('nesterov')}, weight decay "
            f"{one('weight_decay')}, cosine), {one('val_fraction')} of the training data held out for validation, "
            f"label noise {one('noise_rate')} of the pool (validation/test clean), training-time augmentation "
            f"{_augment_text(records)}")


def _augment_text(records: list) -> str:
    """The augmentation every run trained with, per data set, from the records (e.g. "random crop (pad 2) and
    horizontal flip (Fashion-MNIST)"); "none" when no run augments."""
    kinds = {}
    for r in records:
        c = r["config"]
        pad, flip = c.get("augment_pad", 0), c.get("augment_flip", False)
        what = " and ".join(([f"random crop (pad {pad})"] if pad else []) + (["horizontal flip"] if flip else []))
        kinds.setdefault(what or "none", set()).add(DATA_LABELS.get(c["dataset"], c["dataset"]))
    if set(kinds) == {"none"}:
        return "none"
    return "; ".join(f"{k} ({', '.join(sorted(v))})" for k, v in sorted(kinds.items()))


def _commits_text(records: list) -> str:
    """The code commit(s) the records were made at, with how many runs each (a grid resumed across commits says so)."""
    count: dict = {}
    for r in records:
        count[r.get("git_commit", "unknown")] = count.get(r.get("git_commit", "unknown"), 0) + 1
    if len(count) == 1:
        return f"at commit {next(iter(count))[:10]}"
    return ("at " + ", ".join(f"{c[:10]} ({k} runs)" for c, k in sorted(count.items(), key=lambda x: -x[1]))
            + " (a grid resumed across commits)")


def render(table: str, scale: str, preset: SelectionPreset, title: str, include_time: bool = True) -> str:
    """figures/[<scale>/]<table>.md|tex from the records of ``scale`` (only the preset's axes); returns the Markdown.

    Raises:
        SystemExit: no records of this scale (the compute step has not run).
    """
    records = [r for r in results.load_runs(table, scale)
               if r["config"]["dataset"] in preset.datasets and r["config"]["method"] in preset.methods
               and r["seed"] in preset.seeds and (r["config"]["method"] == "full"
                                                  or r["config"]["fraction"] in preset.fractions)]
    if not records:
        raise SystemExit(f"no {scale}-scale results under {results.RESULTS_DIR / scale / table}; run the compute step")
    agg = aggregate(records)
    paper_acc = tables.paper_numbers(f"{table} accuracy", keys=2, width=len(FRACTIONS))
    paper_time = tables.paper_numbers(f"{table} time", keys=2, width=len(FRACTIONS))
    datasets = [d for d in preset.datasets if any(k[0] == d for k in agg)]
    methods = [m for m in preset.methods if any(k[1] == m for k in agg)]
    seeds = sorted({r["seed"] for r in records})
    devices = sorted({r["device"] for r in records})
    compute = (f", {sum(r['wall_time_s'] for r in records) / 60:.1f} min of compute in all" if include_time else "")
    blocks = [tables.Heading(f"{title} — {scale} scale"),
              f"Test accuracy (%) of the final model (after the last epoch), mean ± std over seeds {seeds} "
              f"({len(seeds)} seeds). Settings: {_settings_text(records)}. Budgets: every method is asked for "
              f"round(a·n) points (chg.selection.budget); Algorithm 2 (CHG / Hardness / Gradient Shapley) shares them "
              f"over the classes by largest remainder (one per class where the budget allows it); GradMatch-PB takes "
              f"whole mini-batches and fills a short last one; the subset sizes measured are stated under each table. "
              f"Device: {'; '.join(devices)}. Made by "
              f"`python reproduce/{table}.py --scale {scale}` from reproduce/results/{scale}/{table}/*.json "
              f"({len(records)} runs{compute}), {_commits_text(records)}."
              + (" Time = wall seconds of the training epochs plus the selection steps; `sel. x%` = selection time "
                 "as a share of training time." if include_time else "")]
    head = tuple(f"a = {a:g}" for a in preset.fractions)
    shown = ["acc"] + (["time"] if include_time else []) + ["size"]
    for d in datasets:
        recs_d = [r for r in records if r["config"]["dataset"] == d]
        model = recs_d[0]["config"]["model"]
        pools = sorted({r["metrics"]["pool_size"] for r in recs_d})
        noisy = any(r["metrics"]["pool_noisy_share"] > 0 for r in recs_d)
        blocks.append(tables.Heading(f"{DATA_LABELS.get(d, d)} (model {model}, pool of "
                                     f"{'/'.join(map(str, pools))} training points)", 3))
        for q in shown + (["noisy"] if noisy else []):
            name, fmt = FORMATS[q]
            caption = {"size": budget_note(recs_d, tuple(methods)),
                       "noisy": "Mislabeled points in the final training subset (%, mean ± std; the pool has "
                                f"{100 * recs_d[0]['metrics']['pool_noisy_share']:.0f}%):"}.get(q, "")
            rows = [[LABELS[m]] + _cells(agg, d, m, preset.fractions, fmt) for m in methods]
            if q == "acc":
                rows = [[r[0], "(all data) " + r[1]] + r[2:] if r[0] == LABELS["full"] else r for r in rows]
            blocks.append(tables.Table((f"**{name}**",) + head, tuple(rows), caption,
                                       f"{DATA_LABELS.get(d, d)}, {scale} scale: {name.lower()}"))
        blocks.append(verdict(table, recs_d, d, preset.fractions))
        if d in paper_acc:
            blocks.append(_paper_diff(paper_acc[d], agg, d, methods, preset.fractions))
    rest = [d for d in paper_acc if d not in datasets]
    if rest:
        blocks.append(tables.Heading("The paper's numbers (ResNet-18, paper's data sets; not comparable with the "
                                     f"{scale}-scale data)", 3))
        for d in rest:
            rows = [[LABELS[m] + " [paper]"] + ["–" if v is None else f"{v:.2f}" for v in vals]
                    for m, vals in paper_acc[d].items()]
            rows += [[LABELS[m] + " [paper, time s]"] + ["–" if v is None else f"{v:.0f}" for v in vals]
                     for m, vals in paper_time.get(d, {}).items()]
            blocks.append(tables.Table(("Method",) + tuple(f"a = {a:g}" for a in FRACTIONS), tuple(rows),
                                       f"**{DATA_LABELS.get(d, d)} (paper)**"))
    return tables.write(scale, table, blocks, f"{title}, {scale} scale; seeds {seeds}; made by reproduce/{table}.py "
                                             f"from reproduce/results/{scale}/{table}")


BASELINES = ("random", "adaptive_random", "glister", "gradmatch_pb")  # the other selection methods (not ablations)
CLAIMS = {"table2": ("small", "the paper (Table 2): CHG Shapley is particularly strong when the selection ratio is "
                              "small — read here as: the best of the selection methods at a ≤ 0.1"),
          "table3": ("all", "the paper (Table 3): under 30% label noise CHG Shapley is superior to the other methods "
                            "— read here as: the best of the selection methods at every fraction")}


def verdict(table: str, records: list, dataset: str, fractions: tuple) -> str:
    """The paper's claim for ``table`` checked on the records of one data set, as a paragraph computed from the
    numbers: per fraction, CHG Shapley's accuracy against the best other selection method's by mean (Random,
    AdaptiveRandom, GLISTER, GradMatch-PB), paired by seed: the claim holds at a fraction when the mean paired
    difference exceeds two standard errors (over the seeds both ran), does not hold when it is below minus two, and
    is a tie (not shown either way) in between — the rule of Table 1's verdicts. One paired seed: no verdict."""
    import statistics
    which, claim = CLAIMS[table]
    acc: dict = {}
    for rec in records:
        c = rec["config"]
        if c["dataset"] == dataset:
            acc.setdefault((c["method"], c["fraction"]), {})[rec["seed"]] = rec["metrics"]["test_acc"]
    checked = [a for a in fractions if which == "all" or a <= 0.1]
    parts, outcome = [], []
    for a in checked:
        chg = acc.get(("chg", a))
        others = {m: acc[(m, a)] for m in BASELINES if (m, a) in acc}
        if not chg or not others:
            continue
        mean = {m: sum(v.values()) / len(v) for m, v in {"chg": chg, **others}.items()}
        best = max(others, key=mean.get)
        seeds = sorted(set(chg) & set(others[best]))
        diff = [chg[s] - others[best][s] for s in seeds]
        wins = sum(d > 0 for d in diff)
        if len(diff) < 2:
            word, se = "one paired seed: no verdict", None
        else:
            d, se = statistics.fmean(diff), statistics.stdev(diff) / len(diff) ** 0.5
            word = "holds" if d > 2 * se else "does not hold" if d < -2 * se else "tie (within two standard errors)"
        outcome.append(word)
        paired = (f"paired {statistics.fmean(diff):+.2f} ± {se:.2f} s.e." if se is not None
                  else f"paired {diff[0]:+.2f}" if diff else "no paired seed")
        parts.append(f"a = {a:g}: CHG {mean['chg']:.2f} vs best other {LABELS[best]} {mean[best]:.2f} "
                     f"({paired}; CHG higher in {wins} of {len(seeds)} seeds) — {word}")
    if not parts:
        return f"Verdict on {claim}: not checkable from these records (CHG or the baselines not run)."
    held = sum(w == "holds" for w in outcome)
    failed = sum(w == "does not hold" for w in outcome)
    unchecked = sum(w.endswith("no verdict") for w in outcome)  # one paired seed: no standard error
    ties = len(outcome) - held - failed - unchecked
    overall = ("holds" if held == len(outcome) else "does not hold" if failed == len(outcome)
               else "no verdict (one paired seed at every fraction)" if unchecked == len(outcome)
               else f"holds at {held} of {len(outcome)} fractions" + (f", a tie at {ties}" if ties else "")
               + (f", does not hold at {failed}" if failed else "")
               + (f", no verdict at {unchecked} (one paired seed)" if unchecked else ""))
    return (f"**Verdict** on {claim}: **{overall}** on {DATA_LABELS.get(dataset, dataset)}. " + "; ".join(parts)
            + ". (Rule: CHG's accuracy minus the best other method's (by mean), paired by seed; the claim holds at a "
              "fraction when the mean difference exceeds two standard errors, does not hold below minus two, and is "
              "a tie — not shown either way — in between; as in Table 1's verdicts.)")


def _paper_diff(pa: dict, agg: dict, d: str, methods: list, fractions: tuple) -> tables.Table:
    rows = []
    for m in methods:
        if m not in pa:
            continue
        cells = []
        for j, a in enumerate(fractions):
            p = pa[m][FRACTIONS.index(a)] if a in FRACTIONS else None
            ours = tables.mean_std(agg.get((d, m, 1.0 if m == "full" else a), {}).get("acc", []))[0]
            cells.append("–" if p is None else (f"{p:.2f} (ours − paper: not run)" if ours is None
                                                else f"{p:.2f} ({ours - p:+.2f})"))
        rows.append([LABELS[m] + " [paper]"] + cells)
    return tables.Table(("Method",) + tuple(f"a = {a:g}" for a in fractions), tuple(rows),
                        "Paper's numbers for this data set and our difference (ours − paper, accuracy points):")


# ---- command line ----------------------------------------------------------------------------------------------

def epoch_time(epochs: int, table: str) -> int:
    """ResNet-18 epoch time on synthetic CIFAR-shaped data (a measured figure, for the README)."""
    from chg.experiments.data import synthetic_bundle
    cfg = run_config(presets(table)["paper"], "cifar10", "full", 1.0, 0)
    cfg = dataclasses.replace(cfg, epochs=epochs, checkpoint_every=max(1, epochs))
    t0 = time.perf_counter()
    m = train(cfg, synthetic_bundle()).metrics
    device = resolve_device(cfg.device)
    name = results.device_name(device).replace("/", "_").replace(" ", "_").replace(":", "_")
    results.save_run("epoch_time", name, config=dataclasses.asdict(cfg), seed=0, scale="synthetic",
                     metrics={"epoch_s_mean": m["epoch_s_mean"], "train_s": m["train_s"], "epochs": epochs},
                     wall_time_s=time.perf_counter() - t0, device=device)
    print(f"ResNet-18, 45,000 synthetic 3×32×32 images, batch {cfg.batch_size}, amp={cfg.amp and device.type == 'cuda'}"
          f", channels_last={cfg.channels_last and device.type == 'cuda'} on {results.device_name(device)}: "
          f"{m['epoch_s_mean']:.2f} s per epoch (mean of {epochs})")
    return 0


def main(table: str, title: str, argv=None) -> int:
    """The command line of reproduce/table2.py and table3.py (kit.cli's options, plus --epoch-time)."""
    all_presets = presets(table)
    p = cli.parser(f"{title}: compute (resumable, shardable) and render.", all_presets)
    p.add_argument("--epoch-time", type=int, default=None, metavar="EPOCHS",
                   help="instead of the grid: time ResNet-18 (full data) for EPOCHS epochs on synthetic CIFAR-shaped "
                        "data with the paper preset's settings; writes reproduce/results/synthetic/epoch_time/")
    args, preset = cli.parse(p, all_presets, argv)
    if args.epoch_time:
        return epoch_time(args.epoch_time, table)
    if not args.render_only:
        t0 = time.perf_counter()
        try:
            counts = grid.run_grid(table, args.scale, preset, runs(preset), executor(table, args.scale),
                                   shard=args.shard, replace=args.replace)
        except FileNotFoundError as exc:  # paper-scale data missing: the message says how to get it
            raise SystemExit(f"{table}: {exc}") from None
        except grid.ConfigMismatch as exc:
            raise SystemExit(f"{table}: {exc}") from None
        print(f"{table}: ran {counts['ran']}, skipped {counts['skipped']} (already done) of {counts['total']} in "
              f"{time.perf_counter() - t0:.0f}s")
    if not args.no_render:
        render(table, args.scale, preset, title)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("a library: run reproduce/table2.py or reproduce/table3.py")
