"""Is "value < 0" a useful default for flagging mislabeled rows? Measured, written to
benchmarks/results/thresholds.{json,md}.

For each data set, 20% of the training labels are flipped to another class (chg.experiments.data.add_label_noise) and
every row
is valued with Algorithm 1 exactly as ``chg value`` does it: features standardised (scikit-learn StandardScaler on
the flattened inputs), logistic regression (one nn.Linear) or an MLP (chg.experiments.models.MLP, 64 hidden),
chg.value_data
with its defaults (10 epochs, batch 64, Adam lr 0.01, separate pass). Rules compared against the flipped rows:

- ``value < 0`` (chg.report.suspects' default): how many rows it flags, precision, recall;
- the k lowest values with k = the true number of flipped rows (an oracle k: precision = recall);
- the k lowest with k = 10% of the rows (a guess a user might make);
- AUC of -value for "flipped" (threshold-free).

Data: scikit-learn's breast cancer (409-row pool after the 10% validation hold-out and the fixed 20% test split of
chg.experiments.data) and digits (1,293 rows), and Fashion-MNIST (10,000 training images drawn at random per seed from
/usr/share/datasets/fashion-mnist; skipped with a note when the files are missing). Seeds 0, 1, 2.

Usage: python benchmarks/bench_thresholds.py [--quick] [--out DIR]   (quick: breast cancer, 1 seed, 2 epochs)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a source checkout without installing

import chg  # noqa: E402
from chg.experiments.data import add_label_noise, load_dataset, read_idx  # noqa: E402
from chg.experiments.models import MLP  # noqa: E402
from chg.report import suspects  # noqa: E402
from chg.experiments.results import provenance, write_json_atomic, write_text_atomic  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
NOISE = 0.2


def _fashion(seed: int, n: int = 10_000):
    """n random Fashion-MNIST training images (flattened, float) with 20% of their labels flipped."""
    x = read_idx(FASHION / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255.0
    y = read_idx(FASHION / "train-labels-idx1-ubyte.gz").astype(np.int64)
    pick = np.random.default_rng(seed).choice(len(y), n, replace=False)
    y_noisy, flipped = add_label_noise(torch.from_numpy(y[pick]), 10, NOISE, torch.Generator().manual_seed(seed))
    return x[pick], y_noisy.numpy(), flipped.numpy(), 10


def _sklearn(name: str, seed: int):
    b = load_dataset(name, seed, val_fraction=0.1, noise_rate=NOISE)
    flipped = b.noisy_mask if hasattr(b, "noisy_mask") else b.noisy  # (n,) bool: which labels were changed
    return b.train.x.reshape(len(b.train), -1).numpy(), b.train.y.numpy(), flipped.numpy(), b.num_classes


def _rules(values: np.ndarray, flipped: np.ndarray) -> dict:
    n, m = values.size, int(flipped.sum())

    def pr(sel):
        hit = int(flipped[sel].sum())
        return {"flagged": int(sel.size), "precision": hit / sel.size if sel.size else float("nan"),
                "recall": hit / m}
    return {"rows": n, "flipped": m, "auc": float(roc_auc_score(flipped, -values)),
            "below0": pr(suspects(values)), "k_true": pr(suspects(values, k=m, threshold=None)),
            "k_10pct": pr(suspects(values, k=round(0.1 * n), threshold=None))}


def run_one(data: str, model: str, seed: int, epochs: int) -> dict:
    x, y, flipped, C = _fashion(seed) if data == "fashion_mnist" else _sklearn(data, seed)
    x = torch.from_numpy(StandardScaler().fit_transform(x).astype(np.float32))
    torch.manual_seed(seed)
    net = nn.Linear(x.shape[1], C) if model == "logreg" else MLP(x.shape[1], C, 64)
    t0 = time.perf_counter()
    values = chg.value_data(net, torch.utils.data.TensorDataset(x, torch.from_numpy(y)), epochs=epochs, seed=seed)
    out = {"data": data, "model": model, "seed": seed, "epochs": epochs, "seconds": time.perf_counter() - t0}
    out.update(_rules(values.numpy(), flipped.astype(bool)))
    return out


def _mean_std(xs) -> str:
    xs = [x for x in xs if x == x]
    if not xs:
        return "—"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"


def render(runs: list, meta: dict) -> str:
    lines = ["# Is `value < 0` a useful threshold? (benchmarks/bench_thresholds.py)", "",
             f"{meta['noise']:.0%} of training labels flipped to another class; rows valued as `chg value` does "
             f"(standardised features, chg.value_data defaults: {meta['epochs']} epochs, batch 64, Adam lr 0.01, "
             f"separate pass); seeds {meta['seeds']}; mean ± std over seeds. "
             "Precision/recall are against the flipped rows; `k = #flipped` uses the true count (an oracle).", "",
             "| data | model | rows | AUC | value < 0: flagged | precision | recall "
             "| k = #flipped: precision = recall | k = 10%: precision | recall | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["data"], r["model"]) for r in runs}, key=lambda k: (k[0] != "breast_cancer", k))
    for data, model in keys:
        rs = [r for r in runs if r["data"] == data and r["model"] == model]
        frac = _mean_std([r["below0"]["flagged"] / r["rows"] for r in rs])
        lines.append(f"| {data} | {model} | {rs[0]['rows']} | {_mean_std([r['auc'] for r in rs])} "
                     f"| {frac} of rows | {_mean_std([r['below0']['precision'] for r in rs])} "
                     f"| {_mean_std([r['below0']['recall'] for r in rs])} "
                     f"| {_mean_std([r['k_true']['precision'] for r in rs])} "
                     f"| {_mean_std([r['k_10pct']['precision'] for r in rs])} "
                     f"| {_mean_std([r['k_10pct']['recall'] for r in rs])} | {_mean_std([r['seconds'] for r in rs])} |")
    if meta.get("skipped"):
        lines += ["", "Not run: " + "; ".join(meta["skipped"])]
    lines += ["", f"Device: {meta['device']}; {meta['when']}; total {meta['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="breast cancer, logreg, 1 seed, 2 epochs (CI smoke run)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    datasets = ["breast_cancer"] if args.quick else ["breast_cancer", "digits", "fashion_mnist"]
    models = ["logreg"] if args.quick else ["logreg", "mlp"]
    seeds, epochs = ([0], 2) if args.quick else ([0, 1, 2], 10)
    skipped = []
    if "fashion_mnist" in datasets and not (FASHION / "train-images-idx3-ubyte.gz").exists():
        datasets.remove("fashion_mnist")
        skipped.append(f"fashion_mnist ({FASHION} missing; Debian package dataset-fashion-mnist)")
    chg.value_data(nn.Linear(4, 2), torch.utils.data.TensorDataset(torch.randn(8, 4), torch.arange(8) % 2),
                   epochs=1)  # warm-up: torch's one-time start-up cost (seconds) is not charged to the first run
    t0 = time.time()
    runs = []
    for data in datasets:
        for model in models:
            for seed in seeds:
                r = run_one(data, model, seed, epochs)
                print(f"{data} {model} seed {seed}: AUC {r['auc']:.3f}, value<0 flags {r['below0']['flagged']} "
                      f"(precision {r['below0']['precision']:.2f}, recall {r['below0']['recall']:.2f}), "
                      f"{r['seconds']:.1f} s", flush=True)
                runs.append(r)
    meta = {"noise": NOISE, "epochs": epochs, "seeds": seeds, "quick": args.quick, "skipped": skipped,
            "wall_s": time.time() - t0, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            **provenance()}
    stem = "thresholds_quick" if args.quick else "thresholds"
    write_json_atomic(args.out / f"{stem}.json", {"meta": meta, "runs": runs})
    text = render(runs, meta)
    write_text_atomic(args.out / f"{stem}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
