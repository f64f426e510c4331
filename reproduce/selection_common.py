"""Shared machinery of Tables 2 and 3: presets, the run grid (resumable, shardable), and the render step.

A *grid* is methods × fractions × data sets × seeds. Every run is one :func:`chg.train.train` call and one JSON file
(:func:`chg.results.save_run`) under ``reproduce/results/<table>/``; a run whose file exists is skipped (its stored
config must equal the current one, else a clear error), a run killed midway resumes from its checkpoint under
``reproduce/checkpoints/<table>/``. ``--shard i/k`` runs every k-th run starting at i (0-based), so k machines or
cluster jobs split a grid. The render step reads only the JSON files.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import chg.results as results
from chg.data import load_dataset
from chg.train import TrainConfig, resolve_device, train

FRACTIONS = (0.05, 0.1, 0.3, 0.5, 0.7)
ALL_METHODS = ("full", "random", "adaptive_random", "glister", "gradmatch_pb", "chg", "chg_unweighted", "hardness",
               "gradient")
LABELS = {"full": "Full", "random": "Random", "adaptive_random": "AdaptiveRandom", "glister": "GLISTER",
          "gradmatch_pb": "GradMatch (PB)", "chg": "CHG Shapley", "chg_unweighted": "CHG Shapley, weights 1 (ablation)",
          "hardness": "Hardness Shapley", "gradient": "Gradient Shapley"}
DATA_LABELS = {"digits": "digits (sklearn)", "breast_cancer": "breast cancer (sklearn)", "cifar10": "CIFAR10",
               "cifar100": "CIFAR100", "tinyimagenet": "Tiny ImageNet"}

# Per data set: model and augmentation. Digits are not flipped (a mirrored digit is another symbol); 8×8 images are
# cropped with padding 1 (CIFAR's 4 px of 32 scaled down); tabular data is not augmented.
DATASET_SETTINGS = {
    "digits": dict(model="smallcnn", width=16, augment_pad=1, augment_flip=False),
    "breast_cancer": dict(model="mlp", width=64, augment_pad=0, augment_flip=False),
    "cifar10": dict(model="resnet18", width=None, augment_pad=4, augment_flip=True),
    "cifar100": dict(model="resnet18", width=None, augment_pad=4, augment_flip=True),
    "tinyimagenet": dict(model="resnet18", width=None, augment_pad=4, augment_flip=True),
}


@dataclass
class Preset:
    """A whole grid: its axes and the training settings shared by every run (TrainConfig fields)."""
    datasets: tuple
    methods: tuple = ALL_METHODS
    fractions: tuple = FRACTIONS
    seeds: tuple = (0, 1, 2)
    train: dict = field(default_factory=dict)


def presets(table: str) -> dict:
    """The two named presets of Table 2 (clean) or Table 3 (30% label noise).

    quick: 2 CPU cores, minutes. 30 epochs with R = 5, so that Algorithm 2 re-selects 6 times (the paper's 200/20
    gives 10); batch 64 instead of 128 so that the 5% subsets (≈ 65 digits) still take 2 steps per epoch; optimizer
    as the paper preset; 3 seeds. paper: the paper's setting (ResNet-18, R = 20, batch 128, SGD lr 0.05 with
    momentum 0.9, Nesterov, weight decay 5e-4, cosine — CORDS' defaults, on which the paper's selection code was
    built); 200 epochs is our assumption (the paper does not give the number); one seed (the paper reports one
    number per cell and says nothing about seeds). Table 3 at paper scale: CIFAR-10/100 only, as in the paper.
    """
    noise = {"table2": 0.0, "table3": 0.3}[table]
    quick = Preset(datasets=("digits", "breast_cancer"),
                   train=dict(epochs=30, select_every=5, batch_size=64, checkpoint_every=5, noise_rate=noise,
                              device="cpu", factor_batch_size=2048))
    paper_sets = ("cifar10", "cifar100", "tinyimagenet") if table == "table2" else ("cifar10", "cifar100")
    paper_methods = ALL_METHODS if table == "table2" else ("full", "random", "adaptive_random", "glister",
                                                           "gradmatch_pb", "chg", "chg_unweighted")
    paper = Preset(datasets=paper_sets, methods=paper_methods, seeds=(0,),
                   train=dict(epochs=200, select_every=20, batch_size=128, checkpoint_every=10, noise_rate=noise,
                              device="auto"))
    return {"quick": quick, "paper": paper}


def run_config(preset: Preset, dataset: str, method: str, fraction: float, seed: int) -> TrainConfig:
    kw = {**DATASET_SETTINGS[dataset], **preset.train}
    return TrainConfig(dataset=dataset, method=method, fraction=1.0 if method == "full" else fraction, seed=seed, **kw)


def run_id(scale: str, cfg: TrainConfig) -> str:
    return f"{scale}-{cfg.dataset}-{cfg.method}-a{cfg.fraction:g}-s{cfg.seed}"


def grid(preset: Preset) -> list:
    """Every TrainConfig of the grid, in a fixed order (Full once per data set and seed)."""
    out = []
    for dataset in preset.datasets:
        for seed in preset.seeds:
            for method in preset.methods:
                for fraction in ((1.0,) if method == "full" else preset.fractions):
                    out.append(run_config(preset, dataset, method, fraction, seed))
    return out


def parse_shard(text: str | None) -> tuple:
    if text is None:
        return 0, 1
    try:
        i, k = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/k (e.g. 0/4), got {text!r}") from None
    if not (k >= 1 and 0 <= i < k):
        raise ValueError(f"--shard i/k needs 0 <= i < k, got {text!r}")
    return i, k


def run_grid(table: str, scale: str, preset: Preset, shard: tuple = (0, 1), hook=None, log=print) -> dict:
    """Run (or skip) every run of this shard; returns counts. ``hook(cfg, epoch)`` is passed to training (tests)."""
    i, k = shard
    configs = grid(preset)[i::k]
    done = skipped = 0
    cache: dict = {}
    t_start = time.perf_counter()
    for cfg in configs:
        rid = run_id(scale, cfg)
        path = results.run_path(table, rid)
        want = dataclasses.asdict(cfg)
        if path.is_file():
            import json
            have = json.loads(path.read_text())["config"]
            if have != want:
                raise ValueError(f"{path} holds a run with another configuration ({_diff(have, want)}); delete it "
                                 f"(or the whole reproduce/results/{table}) to rerun with the new settings")
            skipped += 1
            continue
        key = (cfg.dataset, cfg.seed, cfg.noise_rate, cfg.val_fraction)
        if key not in cache:
            cache.clear()
            cache[key] = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.noise_rate)
        ckpt = results.CHECKPOINT_DIR / table / f"{rid}.pt"
        t0 = time.perf_counter()
        metrics = train(cfg, cache[key], checkpoint=ckpt, hook=None if hook is None else
                        (lambda epoch, cfg=cfg: hook(cfg, epoch))).metrics
        wall = time.perf_counter() - t0
        results.save_run(table, rid, config=want, seed=cfg.seed, scale=scale, metrics=metrics, wall_time_s=wall,
                         device=resolve_device(cfg.device))
        for stale in [ckpt, *ckpt.parent.glob(ckpt.name + ".*.partial")]:  # incl. leftovers of a kill mid-write
            stale.unlink(missing_ok=True)
        done += 1
        log(f"[{table} {done + skipped}/{len(configs)}] {rid}: test {metrics['test_acc']:.2f}%  "
            f"train {metrics['train_s']:.1f}s select {metrics['select_s']:.2f}s  ({time.perf_counter() - t_start:.0f}s)")
    return {"ran": done, "skipped": skipped, "total": len(configs)}


def _diff(a: dict, b: dict) -> str:
    return ", ".join(f"{k}: {a.get(k)!r} stored vs {b.get(k)!r} now" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k))


# ---------------------------------------------------------------------------------------------------------------
# render

def _mean_std(xs: list) -> tuple:
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def collect(table: str, scale: str) -> dict:
    """{(dataset, method, fraction): list of run records} of one scale."""
    out: dict = {}
    for rec in results.load_runs(table):
        if rec.get("scale") != scale:
            continue
        c = rec["config"]
        out.setdefault((c["dataset"], c["method"], c["fraction"]), []).append(rec)
    return out


def _fmt(mean, std, digits=2):
    return "not run" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def render(table: str, scale: str, preset: Preset, paper_acc: dict, paper_time: dict | None, title: str,
           include_time: bool = True) -> str:
    """Markdown + LaTeX tables from the JSON files; writes figures/<table>.md|tex (quick scale) or
    figures/<table>_paper.md|tex, returns the Markdown."""
    runs = collect(table, scale)
    if not runs:
        raise SystemExit(f"no {scale}-scale results under {results.RESULTS_DIR / table}; run the compute step first")
    datasets = [d for d in preset.datasets if any(k[0] == d for k in runs)]
    methods = [m for m in preset.methods if any(k[1] == m for k in runs)]
    recs = [r for rs in runs.values() for r in rs]
    seeds = sorted({r["seed"] for r in recs})
    devices = sorted({r["device"] for r in recs})
    cfg0 = recs[0]["config"]
    md = [f"## {title} — {scale} scale", ""]
    md.append(f"Test accuracy (%) mean ± std over seeds {seeds} ({len(seeds)} seeds), and time: training + selection "
              f"seconds per run (mean). Settings: {cfg0['epochs']} epochs, selection every R = {cfg0['select_every']}"
              f" epochs, batch {cfg0['batch_size']}, SGD lr {cfg0['lr']} (momentum {cfg0['momentum']}, Nesterov, "
              f"weight decay {cfg0['weight_decay']}, cosine), {int(100 * cfg0['val_fraction'])}% of the training data"
              f" held out for validation, label noise {cfg0['noise_rate']:.0%} of the pool (validation/test clean). "
              f"Accuracy = the final model (after the last epoch) on the test set. Budgets: CHG / Hardness / Gradient "
              f"Shapley keep k_c = max(1, round(a·N_c)) per class (Algorithm 2); Random, AdaptiveRandom and GLISTER "
              f"round(a·n) of the whole pool; GradMatch-PB whole mini-batches, the last one cut to round(a·n) points in all. A 1-point last training batch is merged into the one before. Device: {'; '.join(devices)}. "
              f"Made by `python reproduce/{table}.py --scale {scale}` from reproduce/results/{table}/*.json "
              f"({len(recs)} runs" + (f", {sum(r['wall_time_s'] for r in recs) / 60:.1f} min of compute in all). "
                                      if include_time else "). ") +
              f"Time = wall seconds of the training epochs plus the selection steps; `sel. x%` = selection time "
              f"as a share of training time.")
    md.append("")
    tex_blocks = []
    for d in datasets:
        model = next(r["config"]["model"] for r in recs if r["config"]["dataset"] == d)
        n_pool = next(r["metrics"]["pool_size"] for r in recs if r["config"]["dataset"] == d)
        md.append(f"### {DATA_LABELS.get(d, d)} (model {model}, pool of {n_pool} training points)")
        md.append("")
        head = ["Method"] + [f"a = {a:g}" for a in preset.fractions]
        rows_acc, rows_time, rows_noisy, rows_size = [], [], [], []
        for m in methods:
            acc_cells, time_cells, over_cells = [], [], []
            for a in preset.fractions:
                rs = runs.get((d, m, 1.0 if m == "full" else a), [])
                acc = _mean_std([r["metrics"]["test_acc"] for r in rs])
                tim = _mean_std([r["metrics"]["train_s"] + r["metrics"]["select_s"] for r in rs])
                over = _mean_std([r["metrics"]["selection_overhead"] or 0.0 for r in rs])
                if m == "full" and a != preset.fractions[0]:  # one run on all data: shown once
                    acc_cells.append("″")
                    time_cells.append("″")
                    continue
                acc_cells.append(("(all data) " if m == "full" else "") + _fmt(*acc))
                time_cells.append("not run" if tim[0] is None else
                                  (f"{tim[0]:.2f} s (sel. {over[0]:.0%} of train)" if m != "full" else f"{tim[0]:.2f} s"))
            rows_acc.append([LABELS[m]] + acc_cells)
            rows_time.append([LABELS[m]] + time_cells)
            noisy_cells = []
            for a in preset.fractions:
                rs = runs.get((d, m, 1.0 if m == "full" else a), [])
                share = _mean_std([100 * r["metrics"]["subset_noisy_share"] for r in rs])
                noisy_cells.append("″" if m == "full" and a != preset.fractions[0] else _fmt(*share, digits=1))
            rows_noisy.append([LABELS[m]] + noisy_cells)
            size_cells = []
            for a in preset.fractions:
                rs = runs.get((d, m, 1.0 if m == "full" else a), [])
                size = _mean_std([r["metrics"]["subset_size"] for r in rs])
                size_cells.append("″" if m == "full" and a != preset.fractions[0] else
                                  ("not run" if size[0] is None else f"{size[0]:.0f}"))
            rows_size.append([LABELS[m]] + size_cells)
        md += _md_table(["**Accuracy (%)**"] + head[1:], rows_acc)
        md.append("")
        if include_time:
            md += _md_table(["**Time**"] + head[1:], rows_time)
            md.append("")
        md.append("Subset size (points trained on at the end; GradMatch-PB picks whole mini-batches and cuts the last "
                  "one, so it holds round(a·n) points like Random; CHG & co. round per class):")
        md.append("")
        md += _md_table(["**Subset size**"] + head[1:], rows_size)
        md.append("")
        has_noise = any(r["metrics"]["pool_noisy_share"] > 0 for r in recs if r["config"]["dataset"] == d)
        if has_noise:
            md.append("Mislabeled points in the final training subset (%, mean ± std; the pool has "
                      f"{100 * cfg0['noise_rate']:.0f}%):")
            md.append("")
            md += _md_table(["**Mislabeled (%)**"] + head[1:], rows_noisy)
            md.append("")
        tex_blocks.append(_tex_table(f"{DATA_LABELS.get(d, d)}, {scale} scale: test accuracy (\\%)", head, rows_acc))
        if has_noise:
            tex_blocks.append(_tex_table(f"{DATA_LABELS.get(d, d)}, {scale} scale: mislabeled share of the final "
                                         f"subset (\\%)", head, rows_noisy))
        if include_time:
            tex_blocks.append(_tex_table(f"{DATA_LABELS.get(d, d)}, {scale} scale: time", head, rows_time))
        pa = paper_acc.get(d)
        if pa is not None:
            md.append("Paper's numbers for this data set and our difference (ours − paper, accuracy points):")
            md.append("")
            rows = []
            for m in methods:
                if m not in pa:
                    continue
                cells = []
                for j, a in enumerate(preset.fractions):
                    p = pa[m][j]
                    rs = runs.get((d, m, 1.0 if m == "full" else a), [])
                    ours = _mean_std([r["metrics"]["test_acc"] for r in rs])[0]
                    cells.append("–" if p is None else (f"{p:.2f} (ours − paper: not run)" if ours is None
                                                        else f"{p:.2f} ({ours - p:+.2f})"))
                rows.append([LABELS[m] + " [paper]"] + cells)
            md += _md_table(head, rows)
            md.append("")
    # the paper's own tables, labelled as such (at quick scale they are on other data sets: no difference is shown)
    shown = {d for d in datasets if d in paper_acc}
    rest = [d for d in paper_acc if d not in shown]
    if rest:
        md.append("### The paper's numbers (ResNet-18, paper's data sets; not comparable with the quick-scale data)")
        md.append("")
        for d in rest:
            rows = [[LABELS[m] + " [paper]"] + ["–" if v is None else f"{v:.2f}" for v in vals]
                    for m, vals in paper_acc[d].items()]
            if paper_time and d in paper_time:
                rows += [[LABELS[m] + " [paper, time s]"] + ["–" if v is None else f"{v:.0f}" for v in vals]
                         for m, vals in paper_time[d].items()]
            md.append(f"**{DATA_LABELS.get(d, d)} (paper)**")
            md.append("")
            md += _md_table(["Method"] + [f"a = {a:g}" for a in FRACTIONS], rows)
            md.append("")
    text = "\n".join(md) + "\n"
    stem = table if scale == "quick" else f"{table}_{scale}"
    results.FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    results.atomic_write(results.FIGURES_DIR / f"{stem}.md", lambda tmp: Path(tmp).write_text(text))
    tex = (f"% {title}, {scale} scale; seeds {seeds}; made by reproduce/{table}.py from reproduce/results/{table}\n"
           "% needs \\usepackage{booktabs}\n"
           + "\n\n".join(tex_blocks) + "\n")
    results.atomic_write(results.FIGURES_DIR / f"{stem}.tex", lambda tmp: Path(tmp).write_text(tex))
    return text


def _md_table(head: list, rows: list) -> list:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _tex_escape(s: str) -> str:
    return (str(s).replace("\\", "\\textbackslash{}").replace("%", "\\%").replace("&", "\\&").replace("_", "\\_")
            .replace("±", "$\\pm$").replace("−", "$-$").replace("″", "''").replace("·", "$\\cdot$"))


def _tex_table(caption: str, head: list, rows: list) -> str:
    lines = ["\\begin{table}[h]\\centering\\small", f"\\caption{{{caption}}}",
             "\\begin{tabular}{l" + "r" * (len(head) - 1) + "}", "\\toprule",
             " & ".join(_tex_escape(h) for h in head) + " \\\\", "\\midrule"]
    lines += [" & ".join(_tex_escape(c) for c in r) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# command line

def _convert(text: str, like):
    if isinstance(like, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true/false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(like, int):
        return int(text)
    if isinstance(like, float):
        return float(text)
    if like is None and text.lower() != "none":
        try:
            return int(text)
        except ValueError:
            return text
    return None if text.lower() == "none" else text


def epoch_time(epochs: int, table: str) -> int:
    """ResNet-18 epoch time on synthetic CIFAR-shaped data (a measured figure, for the README)."""
    from chg.data import synthetic_bundle
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


def main(table: str, title: str, paper_acc: dict, paper_time: dict | None, argv=None) -> int:
    p = argparse.ArgumentParser(description=f"{title}: compute (resumable, shardable) and render.")
    p.add_argument("--scale", choices=("quick", "paper"), default=None,
                   help="quick: sklearn digits + breast cancer on CPU; paper: CIFAR/Tiny ImageNet, ResNet-18, CUDA "
                        "(default: chg.results.default_scale())")
    p.add_argument("--datasets", nargs="+"), p.add_argument("--methods", nargs="+")
    p.add_argument("--fractions", nargs="+", type=float), p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting (a chg.train.TrainConfig field), e.g. --set epochs=50")
    p.add_argument("--shard", default=None, help="i/k: run only every k-th run starting at i (0-based)")
    p.add_argument("--render-only", action="store_true", help="skip the compute step")
    p.add_argument("--no-render", action="store_true", help="skip the render step (e.g. in a shard job)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--epoch-time", type=int, default=None, metavar="EPOCHS",
                   help="instead of the grid: time ResNet-18 (full data, method 'full') for EPOCHS epochs on synthetic "
                        "CIFAR-shaped data (45,000 random 3×32×32 images) with the paper preset's settings; writes "
                        "reproduce/results/epoch_time/<device>.json")
    args = p.parse_args(argv)
    if args.epoch_time:
        return epoch_time(args.epoch_time, table)
    scale = args.scale or results.default_scale()
    preset = presets(table)[scale]
    for name in ("datasets", "methods", "fractions", "seeds"):
        if getattr(args, name):
            setattr(preset, name, tuple(getattr(args, name)))
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in fields or key in ("dataset", "method", "fraction", "seed"):
            raise SystemExit(f"--set {item}: unknown or grid-controlled setting {key!r}; "
                             f"settable: {sorted(set(fields) - {'dataset', 'method', 'fraction', 'seed'})}")
        preset.train[key] = _convert(value, preset.train.get(key, fields[key]))
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.render_only:
        t0 = time.perf_counter()
        try:
            counts = run_grid(table, scale, preset, parse_shard(args.shard))
        except FileNotFoundError as exc:  # paper-scale data missing: the message says how to get it
            raise SystemExit(f"{table}: {exc}") from None
        print(f"{table}: ran {counts['ran']}, skipped {counts['skipped']} (already done) of {counts['total']} in "
              f"{time.perf_counter() - t0:.0f}s")
    if not args.no_render:
        text = render(table, scale, preset, paper_acc, paper_time, title)
        stem = table if scale == "quick" else f"{table}_{scale}"
        print(f"wrote {results.FIGURES_DIR / stem}.md and .tex ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run reproduce/table2.py or reproduce/table3.py")
