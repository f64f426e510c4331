"""How far streaming values (chg.streaming.StreamingValuer: memory independent of n, each batch valued against the
previous epoch's statistics) are from Algorithm 1's ride-along values (chg.EpochValuer.add_logits), on the medium
Fashion-MNIST run: the 54,000-image pool with 10% of the labels flipped, image_mlp trained with SGD (Nesterov,
cosine) for 20 epochs, batch 128 — the detection table's medium setting — both valuers fed the same forward passes.

Per seed: Spearman correlation of the two value vectors, the overlap of their lowest 10%, the ROC AUC of each at
finding the flipped labels, the bytes each keeps, and the same for the later half of the epochs alone (skip_epochs).
Writes benchmarks/results/streaming.{json,md} (the Markdown rendered from the JSON).

    python benchmarks/bench_streaming.py [--seeds 0,1,2] [--quick]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chg  # noqa: E402
from chg.experiments.data import load_dataset  # noqa: E402
from chg.experiments.models import build_model  # noqa: E402
from chg.io import write_json_atomic, write_text_atomic  # noqa: E402
from chg.streaming import StreamingValuer  # noqa: E402

OUT = ROOT / "benchmarks" / "results"


def run(seed: int, epochs: int, noise: float, n_max: int | None) -> dict:
    data = load_dataset("fashion_mnist", seed, 0.1, noise)
    x, y, noisy = data.train.x, data.train.y, data.noisy.numpy()
    if n_max:
        x, y, noisy = x[:n_max], y[:n_max], noisy[:n_max]
    n = len(y)
    torch.manual_seed(seed)
    model = build_model("image_mlp", data.num_classes, tuple(x.shape[1:]))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    exact, stream = chg.EpochValuer(n), StreamingValuer(n)
    tap, gen = chg.LastLayerTap(model), torch.Generator().manual_seed(seed + 1)
    t_exact = t_stream = 0.0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        with tap:
            for a in range(0, n, 128):
                idx = perm[a:a + 128]
                logits, feat = tap.read(model(x[idx]))
                t0 = time.perf_counter()
                exact.add_logits(idx, logits, y[idx], feat, tap.bias)
                t1 = time.perf_counter()
                stream.add_logits(idx, logits, y[idx], feat, tap.bias)
                t_exact, t_stream = t_exact + t1 - t0, t_stream + time.perf_counter() - t1
                loss = torch.nn.functional.cross_entropy(logits, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        sched.step()
        t0 = time.perf_counter()
        kept = exact.store.nbytes()
        exact.end_epoch()
        t_exact += time.perf_counter() - t0
        stream.end_epoch()
    out = {"seed": seed, "n": n, "flipped": int(noisy.sum()), "epochs": epochs, "exact_bytes_kept": kept,
           "stream_bytes_kept": sum(t.numel() * t.element_size() for st in stream._previous.values()
                                    for t in (st.sum, st.sum_sq_norms)) + 8 * n,
           "exact_valuation_s": t_exact, "stream_valuation_s": t_stream}
    for name, k in (("all", 0), ("later_half", epochs // 2)):
        a, b = exact.values().skip_epochs(k).values, stream.values().skip_epochs(k).values
        low = max(1, n // 10)
        out[name] = {"spearman": float(spearmanr(a, b).statistic),
                     "low10_overlap": len(set(np.argsort(a)[:low]) & set(np.argsort(b)[:low])) / low,
                     "auc_exact": float(roc_auc_score(noisy, -a)), "auc_stream": float(roc_auc_score(noisy, -b))}
    return out


def render(rec: dict) -> str:
    rows = rec["runs"]
    lines = [f"# Streaming values vs Algorithm 1's ride-along values ({rec['data']})", "",
             f"{rec['setting']}. Both valuers read the same training forward passes. Made by "
             f"`python benchmarks/bench_streaming.py` at commit {rec['commit']} ({rec['torch']}, {rec['threads']} "
             f"thread, load {rec['load']:.1f}); seeds {[r['seed'] for r in rows]}. Streaming is an approximation "
             "(chg.streaming): each batch is valued against the previous epoch's statistics.", "",
             "| seed | epochs averaged | Spearman | lowest 10% overlap | AUC ride-along | AUC streaming | kept: "
             "ride-along | kept: streaming |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for name, label in (("all", "all"), ("later_half", "later half")):
            m = r[name]
            lines.append(f"| {r['seed']} | {label} | {m['spearman']:.4f} | {m['low10_overlap']:.3f} | "
                         f"{m['auc_exact']:.4f} | {m['auc_stream']:.4f} | {r['exact_bytes_kept'] / 2**20:.1f} MiB | "
                         f"{r['stream_bytes_kept'] / 2**20:.2f} MiB |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="2,000 rows, 3 epochs, one seed; writes *_quick.*")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    epochs = 3 if args.quick else args.epochs
    runs = [run(s, epochs, 0.1, 2000 if args.quick else None) for s in seeds]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    rec = {"data": "Fashion-MNIST, 54,000-image pool, 10% of the labels flipped" if not args.quick else
           "Fashion-MNIST, 2,000 rows (quick)", "setting": f"image_mlp, SGD lr 0.05 Nesterov cosine, {epochs} "
           "epochs, batch 128", "runs": runs, "commit": commit, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "load": float(__import__("os").getloadavg()[0]),
           "python": platform.python_version()}
    stem = "streaming_quick" if args.quick else "streaming"
    write_json_atomic(args.out / f"{stem}.json", rec)
    write_text_atomic(args.out / f"{stem}.md", render(json.loads((args.out / f"{stem}.json").read_text())))
    print(render(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
