"""Which mode, when? Algorithm 1's variants compared at finding flipped labels; written to
benchmarks/results/modes.{json,md}.

Variants (all chg.value_data, its defaults otherwise: 10 epochs, batch 64, Adam lr 0.01):

- ``pass``: a separate no-grad pass at the start of every epoch, model in eval mode (exactly Algorithm 1);
- ``ride``: factors of the training forward pass (train mode, parameters moving within the epoch), no extra pass;
- ``per_class``: ``pass`` with each class valued as its own game (α and statistics per class, as Algorithm 2 does);
- ``valid``: ``pass`` with α = mean of l_i g_i over the clean validation hold-out (``alpha="valid"``);
- ``bias``: ``pass`` with the bias gradient only (``gradient="bias"``, the official code's choice);
- from the per-epoch values of the ``pass`` and ``ride`` runs (no extra training): ``pass_skip1`` (epoch 0, at the
  random initialisation, left out of the average), ``pass_last`` and ``ride_last`` (the last epoch's values alone).

Score: AUC of -value for "this row's label was flipped" (20% of the pool's labels flipped to another class,
chg.data.load_dataset noise; the validation hold-out is clean). Models: logistic regression and an MLP
(chg.models.MLP, 64 hidden) on standardised flattened features, and chg.models.SmallCNN (BatchNorm) on the digit
images. Data: scikit-learn's breast cancer (410-row pool) and digits (1,293-row pool). Seeds 0, 1, 2. Wall time of
each value_data call (2 CPU threads shared with other work: ratios within a row are the useful part).

Usage: python benchmarks/bench_modes.py [--quick] [--out DIR]   (quick: breast cancer, logreg, 1 seed, 2 epochs)
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
from chg.data import load_dataset  # noqa: E402
from chg.models import MLP, SmallCNN  # noqa: E402
from chg.results import atomic_write, provenance, write_json_atomic  # noqa: E402

NOISE = 0.2
VARIANTS = {"pass": dict(mode="pass"), "ride": dict(mode="ride"), "per_class": dict(mode="pass", per_class=True),
            "valid": dict(mode="pass", alpha="valid"), "bias": dict(mode="pass", gradient="bias")}
DERIVED = ("pass_skip1", "pass_last", "ride_last")


def _data(name: str, model: str, seed: int):
    b = load_dataset(name, seed, val_fraction=0.1, noise_rate=NOISE)
    flipped = (b.noisy_mask if hasattr(b, "noisy_mask") else b.noisy).numpy().astype(bool)
    xt, xv = b.train.x, b.val.x
    if model != "cnn":  # flattened, standardised with the pool's statistics (as `chg value` does)
        sc = StandardScaler().fit(xt.reshape(len(xt), -1).numpy())
        xt, xv = (torch.from_numpy(sc.transform(x.reshape(len(x), -1).numpy()).astype(np.float32)) for x in (xt, xv))
    train = torch.utils.data.TensorDataset(xt, b.train.y)
    valid = torch.utils.data.TensorDataset(xv, b.val.y)
    return train, valid, flipped, b.num_classes


def _model(kind: str, d_or_shape, C: int) -> nn.Module:
    if kind == "logreg":
        return nn.Linear(d_or_shape[0], C)
    if kind == "mlp":
        return MLP(d_or_shape[0], C, 64)
    return SmallCNN(C, d_or_shape[0], 16)


def _auc(values, flipped) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(roc_auc_score(flipped, -v))


def run_one(data: str, model: str, seed: int, epochs: int) -> dict:
    train, valid, flipped, C = _data(data, model, seed)
    shape = tuple(train.tensors[0].shape[1:])
    out = {"data": data, "model": model, "seed": seed, "epochs": epochs, "rows": len(train),
           "flipped": int(flipped.sum()), "auc": {}, "seconds": {}}
    for name, opts in VARIANTS.items():
        torch.manual_seed(seed)
        net = _model(model, shape, C)
        opts = dict(opts)
        mode = opts.pop("mode")
        t0 = time.perf_counter()
        values, valuer = chg.value_data(net, train, valid if opts.get("alpha") == "valid" else None, epochs=epochs,
                                        seed=seed, mode=mode, return_valuer=True, **opts)
        out["seconds"][name] = time.perf_counter() - t0
        out["auc"][name] = _auc(values, flipped)
        per_epoch = torch.stack(valuer.epoch_values)  # (epochs, n)
        if name in ("pass", "ride"):
            out["auc"][f"{name}_last"] = _auc(per_epoch[-1], flipped)
            if name == "pass" and epochs > 1:
                out["auc"]["pass_skip1"] = _auc(per_epoch[1:].mean(0), flipped)
    return out


def _ms(xs) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def render(runs: list, meta: dict) -> str:
    cols = [*VARIANTS, *DERIVED]
    lines = ["# Which mode, when? (benchmarks/bench_modes.py)", "",
             f"AUC of -value for finding the {meta['noise']:.0%} flipped labels, mean ± std over seeds "
             f"{meta['seeds']}; chg.value_data defaults ({meta['epochs']} epochs, batch 64, Adam lr 0.01). "
             "`pass` is Algorithm 1 (separate eval-mode pass each epoch); `ride` uses the training forward pass; "
             "`per_class`, `valid` (α from the clean validation set) and `bias` (bias gradient only) are `pass` with "
             "that option; `pass_skip1` leaves epoch 0 (random initialisation) out of the average; `*_last` is the "
             "last epoch alone.", "",
             "| data | model | rows | " + " | ".join(cols) + " | seconds: pass / ride |",
             "|---|---|---|" + "---|" * len(cols) + "---|"]
    keys = []
    for r in runs:
        if (r["data"], r["model"]) not in keys:
            keys.append((r["data"], r["model"]))
    for data, model in keys:
        rs = [r for r in runs if r["data"] == data and r["model"] == model]
        cells = []
        for c in cols:
            xs = [r["auc"][c] for r in rs if c in r["auc"]]
            best = max(statistics.mean([r["auc"][k] for r in rs if k in r["auc"]]) for k in cols
                       if any(k in r["auc"] for r in rs))
            cell = _ms(xs) if xs else "—"
            cells.append(f"**{cell}**" if xs and statistics.mean(xs) == best else cell)
        t = f"{_ms([r['seconds']['pass'] for r in rs])} / {_ms([r['seconds']['ride'] for r in rs])}"
        lines.append(f"| {data} | {model} | {rs[0]['rows']} | " + " | ".join(cells) + f" | {t} |")
    lines += ["", "Bold: the best mean in the row.", "",
              f"Device: {meta['device']}; {meta['when']}; total {meta['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="breast cancer, logreg, 1 seed, 2 epochs (CI smoke run)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    grid = [("breast_cancer", "logreg")] if args.quick else [
        ("breast_cancer", "logreg"), ("breast_cancer", "mlp"), ("digits", "logreg"), ("digits", "mlp"),
        ("digits", "cnn")]
    seeds, epochs = ([0], 2) if args.quick else ([0, 1, 2], 10)
    chg.value_data(nn.Linear(4, 2), torch.utils.data.TensorDataset(torch.randn(8, 4), torch.arange(8) % 2),
                   epochs=1)  # warm-up: torch's one-time start-up cost is not charged to the first run
    t0 = time.time()
    runs = []
    for data, model in grid:
        for seed in seeds:
            r = run_one(data, model, seed, epochs)
            print(f"{data} {model} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in r["auc"].items()),
                  flush=True)
            runs.append(r)
    meta = {"noise": NOISE, "epochs": epochs, "seeds": seeds, "quick": args.quick, "wall_s": time.time() - t0,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **provenance()}
    stem = "modes_quick" if args.quick else "modes"
    write_json_atomic(args.out / f"{stem}.json", {"meta": meta, "runs": runs})
    text = render(runs, meta)
    atomic_write(args.out / f"{stem}.md", lambda tmp: Path(tmp).write_text(text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
