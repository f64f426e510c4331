"""Table 1 and Figures 1–2: OpenDataVal runs of CHG Shapley and the paper's baselines — the grid, its records, and the
command line the three scripts share.

One run = (data set, noise kind, method, seed): opendataval builds the split and the noise from the seed, the
evaluator is trained through ``ExperimentMediator.compute_data_values`` (as the benchmark does), and the run's record
(``reproduce/results/<scale>/table1/<run_id>.json``) holds the data values, the noisy indices, the detection metrics,
the point-removal curves (label-noise runs only), the wall time and the number of model fits. Table 1 and Figures 1–2
are rendered from these records only; the grid (:func:`runs`) goes through :func:`kit.grid.run_grid` (resume,
``--shard``, the already-done rule), whichever of the three scripts runs it. Detection is scored by the one
:func:`chg.detection.detection_metrics` (the detection table's too), on the stored values (:func:`detection`).

The parts, one concern each: :mod:`kit.odv_presets` (methods, presets), :mod:`kit.odv_data` (data sets, embeddings,
fetcher), :mod:`kit.odv_run` (model, evaluator, one run), :mod:`kit.odv_text` (caption text); this module: the grid,
the records and the command line.

Presets (:data:`kit.odv_presets.PRESETS`): ``smoke`` (breast cancer, 40 training points, one seed, the cheapest
sampler settings — seconds per run), ``quick`` (scikit-learn's digits and breast_cancer, standardized; cheap sampler
settings for the costly evaluators; minutes on 2 CPU cores), ``medium`` (the authors' official notebook's protocol on
Fashion-MNIST embeddings, see below) and ``paper`` (opendataval's ``cifar10-embeddings``: ResNet-50 embeddings of
CIFAR-10, logistic regression; the opendataval defaults for every evaluator; needs the embeddings on disk or network +
GPU to make them). The paper does not state its split or training settings; the paper preset's (train/valid/test
1000/100/1000, 5 epochs) are our choice.

``medium``: the protocol of the authors' official notebook (1,000 train / 100 valid / 300 test, 10% label noise,
logistic regression, 10 epochs; batch 128 and lr 0.01 are our choice), five seeds, label noise only (the notebook's
task), on ``fashion_mnist_embeddings``: the penultimate features of a small network (chg.experiments.models.ImageMLP)
trained on Fashion-MNIST's 60,000 training images, computed for its 10,000 test images, from which every split is
drawn — the paper's "pretrained embeddings + logistic regression" setting on data that is offline
(:func:`kit.odv_data.make_embeddings`; made once under ``data/embeddings/``, about 20 s). Cost of one run (seed 0, CPU
seconds of one thread on a loaded 2-core machine, point-removal curves included): Random 3, KNN Shapley 4, CHG 5
(ride-along 4.5), LAVA 6, DVRL (50 RL epochs) 7, Influence Function 14, Data Banzhaf (100 models) 21, AME (50 models,
200 fits) 38, Data-OOB (100 models) 42 — about 143 CPU s per seed, 716 CPU s for the five seeds, i.e. ≈ 6 minutes on 2
idle cores as two shards (an estimate from the CPU seconds; on the loaded machine where the committed records were
made it took far longer). LOO (1,001 fits, ≈ 395 CPU s per run), Data Shapley, Beta Shapley and Data-OOB at 1,000
models are left out (:data:`kit.odv_presets.OMITTED` gives each reason, printed in the caption).
"""
from __future__ import annotations

import numpy as np
import torch

import chg.experiments.results as results
from chg.detection import detection_metrics, noisy_mask

from . import cli, config, grid, odv_data
from .odv_data import check_paper_data, embedding_facts
from .odv_presets import EMBED_DATASET, EXPERIMENT, GRID_AXES, METHOD_NOISES, NOISES, PRESETS, OdvPreset
from .odv_run import run_one

__all__ = ["settings", "runs", "executor", "records", "require_records", "detection", "parse_args", "ensure_runs",
           "main"]


# ---- the grid ----------------------------------------------------------------------------------------------------
def settings(cfg: OdvPreset) -> dict:
    """The preset's settings that change a run's result (not which runs exist), JSON-ready."""
    return config.settings(cfg, GRID_AXES)


def runs(cfg: OdvPreset) -> list:
    """Every (data set, noise, method, seed) run of the preset, in a fixed order. A run on ``EMBED_DATASET``
    also has the embedder's settings (kit.odv_data.EMBEDDER) in its config, so that new embeddings mean new runs."""
    def extra(d):  # read at call time (tests patch odv_data.EMBEDDER)
        return {"embedder": dict(odv_data.EMBEDDER)} if d == EMBED_DATASET else {}
    return [grid.Run(f"{d}__{z}__{m}__s{s}", s, {**settings(cfg), "dataset": d, "noise": z, "method": m, **extra(d)},
                     (d, z, m))
            for d in cfg.datasets for z in cfg.noises for s in cfg.seeds for m in cfg.methods
            if z in METHOD_NOISES.get(m, NOISES)]


def executor(cfg: OdvPreset, device, download: bool = False):
    """The function that runs one grid run (:func:`kit.odv_run.run_one`) and returns its outcome; ``download``: let
    opendataval fetch missing data."""
    def execute(run: grid.Run) -> grid.Outcome:
        d, z, m = run.task
        out = run_one(cfg, d, z, m, run.seed, device, download=download)
        facts = {"embedding": embedding_facts()} if d == EMBED_DATASET else {}
        return grid.Outcome(out["metrics"], out["wall"], device,
                            extra={"values": out["values"], "noisy_indices": out["noisy_indices"],
                                   "n_train": out["n_train"], **facts})
    return execute


def records(cfg: OdvPreset, scale: str) -> list:
    """The records of this scale for the preset's runs, made with its current settings (rendering input)."""
    want = {r.run_id: grid.normalise(r.config) for r in runs(cfg)}
    return [r for r in results.load_runs(EXPERIMENT, scale) if want.get(r["run_id"]) == r["config"]]


def require_records(cfg: OdvPreset, scale: str, what: str) -> list:
    """:func:`records`, or SystemExit saying to run the compute step when there are none."""
    recs = records(cfg, scale)
    if not recs:
        raise SystemExit(f"no table1 runs of scale {scale} on disk for {what}; run without --render-only first")
    return recs


def detection(rec: dict) -> dict:
    """A record's detection metrics, by the one scorer :func:`chg.detection.detection_metrics` on its stored data
    values (higher = more valuable) against its noisy indices, OpenDataVal's 2-means F1 included. Bit for bit the
    metrics its run computed (records before the one scorer stored them as ``auc`` = ``roc_auc`` and ``f1_kmeans``
    = ``f1_2means_opendataval``; tests/test_reproduce_table1.py checks every committed record)."""
    values = np.asarray(rec["values"], dtype=np.float64)
    return detection_metrics(values, noisy_mask(rec["noisy_indices"], len(values)), higher_is="valuable",
                             opendataval=True)


# ---- command line shared by table1.py, figure1.py, figure2.py ----------------------------------------------------
def parse_args(description: str, argv=None):
    """kit.cli's options plus --download (paper scale) and --device; returns ``(args, preset)``."""
    p = cli.parser(description, PRESETS)
    p.add_argument("--download", action="store_true", help="paper scale: allow opendataval to download CIFAR-10")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return cli.parse(p, PRESETS, argv)


def ensure_runs(args, cfg: OdvPreset) -> None:
    """The compute step (unless --render-only): every run of this shard not yet on disk."""
    if args.render_only:
        return
    if args.scale == "paper":
        check_paper_data(args.download)
    try:
        counts = grid.run_grid(EXPERIMENT, args.scale, cfg, runs(cfg),
                               executor(cfg, args.device, download=args.scale == "paper" and args.download),
                               shard=args.shard, replace=args.replace)
    except grid.ConfigMismatch as exc:
        raise SystemExit(f"table1: {exc}") from None
    print(f"table1 runs: ran {counts['ran']}, skipped {counts['skipped']} (already done) of {counts['total']}")


def main(doc: str, render, argv=None) -> None:
    """table1.py / figure1.py / figure2.py: parse, compute what is missing (unless --render-only), render."""
    args, cfg = parse_args(doc.splitlines()[0], argv)
    ensure_runs(args, cfg)
    if not args.no_render:
        render(cfg, args.scale)
