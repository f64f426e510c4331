"""What the crop/flip augmentation costs in the medium training loop, before and after one-gather augment_batch.

The Tables 2–3 medium preset trains ``image_mlp`` on Fashion-MNIST with a random crop (zero padding 2) and a random
horizontal flip per image (:func:`chg.experiments.data.augment_batch`). Until commit 73d7b4a it cropped with advanced
indexing
(``padded[b, ch, rows, cols]``) and flipped with ``torch.where``; it now does both with one ``gather`` over the
padded images. Both move pixels only and draw the same random numbers in the same order, so their outputs are equal
bit for bit (tests/test_data.py checks both against an image-by-image oracle; a Tables 2–3 run gives the same
model hash with either). Measured side by side in one process, in rotating order, per round:

* ``augment`` — augment_batch alone over one epoch's batches of 128 (54,000 images);
* ``epoch`` — one training epoch as chg.experiments.train runs it (gather the batch, augment, forward, weighted loss,
backward,
  SGD step).

Reported: medians over rounds of this process's CPU time and the paired ratio before ÷ after. Writes
benchmarks/results/augment.{json,md} atomically.

Usage: python benchmarks/bench_augment.py [--rounds 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from chg.experiments.data import augment_batch, load_dataset  # noqa: E402
from chg.experiments.models import build_model  # noqa: E402
from chg.experiments.results import device_name, provenance, write_json_atomic, write_text_atomic  # noqa: E402

BATCH, PAD = 128, 2


def augment_before(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """augment_batch as it was before this change (the 'before' of the comparison; same draws, same output)."""
    B, _, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    rows = (dy[:, None] + torch.arange(H))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(W))[:, None, None, :]
    out = padded[torch.arange(B)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    if flip:
        mask = (torch.rand(B, generator=generator) < 0.5)[:, None, None, None]
        out = torch.where(mask, out.flip(-1), out)
    return out


def run(kind: str, aug, x, y, model, opt) -> float:
    """CPU seconds of one pass over the pool: augmentation alone, or a whole training epoch."""
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=gen)
    c0 = time.process_time()
    for b in range(0, len(y), BATCH):
        rows = perm[b:b + BATCH]
        xb = aug(x[rows], PAD, True, gen)
        if kind == "epoch":
            losses = F.cross_entropy(model(xb), y[rows], reduction="none")
            loss = losses.sum() / len(rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.process_time() - c0


def bench(x, y, num_classes, rounds: int) -> dict:
    variants = {"before": augment_before, "after": augment_batch}
    models = {}
    for v in variants:
        torch.manual_seed(0)
        m = build_model("image_mlp", num_classes, tuple(x.shape[1:]))
        models[v] = (m, torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4))
    cpu = {(k, v): [] for k in ("augment", "epoch") for v in variants}
    for r in range(rounds + 1):  # round 0: warm-up
        order = list(variants) if r % 2 else list(variants)[::-1]
        for k in ("augment", "epoch"):
            for v in order:
                t = run(k, variants[v], x, y, *models[v])
                if r:
                    cpu[(k, v)].append(t)
    out = {"rounds": rounds}
    for k in ("augment", "epoch"):
        out[k] = {"before_cpu_s": statistics.median(cpu[(k, "before")]),
                  "after_cpu_s": statistics.median(cpu[(k, "after")]),
                  "ratio_before_over_after": statistics.median(
                      a / b for a, b in zip(cpu[(k, "before")], cpu[(k, "after")]))}
    return out


def render(rep: dict) -> str:
    res = rep["result"]
    lines = ["# Crop/flip augmentation in the medium training loop: before and after one-gather augment_batch", "",
             f"{rep['data']}; seed 0 (split, batch order, draws, model init); batches of {BATCH}, zero padding "
             f"{PAD} + random flip, model `image_mlp`, SGD; device "
             f"{rep['device']}, 1 torch thread; load average at start {rep['loadavg_start']}; {res['rounds']} rounds "
             f"after a warm-up, the two versions in alternating order; {rep['date']}. CPU = this process's CPU time; "
             "ratio = median over rounds of before ÷ after within the round. The outputs are equal bit for bit. Made "
             "by `python benchmarks/bench_augment.py`.", "",
             "| what, per epoch of 54,000 images | before: CPU (s) | after: CPU (s) | before ÷ after |",
             "|---|---|---|---|"]
    names = {"augment": "augment_batch alone", "epoch": "training epoch (augment + forward + backward + step)"}
    for k in ("augment", "epoch"):
        r = res[k]
        lines.append(f"| {names[k]} | {r['before_cpu_s']:.3f} | {r['after_cpu_s']:.3f} | "
                     f"{r['ratio_before_over_after']:.2f}× |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = load_dataset("fashion_mnist", seed=0)
    rep = {"data": "Fashion-MNIST pool (54,000 images)", "device": device_name("cpu"),
           "loadavg_start": " ".join(open("/proc/loadavg").read().split()[:3]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "provenance": provenance("cpu")}
    rep["result"] = bench(d.train.x, d.train.y, d.num_classes, args.rounds)
    write_json_atomic(args.out / "augment.json", rep)
    write_text_atomic(args.out / "augment.md", render(rep))
    print(render(rep))
    print(f"wrote {args.out / 'augment'}.json and .md")


if __name__ == "__main__":
    main()
