"""Cost of valuing a language model's documents (chg.sequence): the exact two-sweep pass ÷ a plain training epoch, a
ride-along training epoch ÷ a plain one, and the peak memory of each; written to
benchmarks/results/sequence.{json,md}.

Setting (issue 23, item 6): GPT-2 small from ``GPT2Config()`` (124 M parameters, vocabulary 50,257, 12 layers, width
768; no download, random initial weights) on ``--docs`` random token sequences of T = 128 (all positions scored,
causal shift), batch ``--batch``, Adam, float32, CPU. Paths, each over the same documents:

* ``plain``: a training epoch (forward, mean per-document loss, backward, Adam step) — no valuation;
* ``pass``: :meth:`chg.sequence.SequenceValuer.value_epoch` alone — the exact values' two no-grad sweeps (eval mode);
  the epoch of Algorithm 1 costs plain + pass;
* ``ride``: a training epoch with :meth:`chg.sequence.SequenceValuer.add_logits` at every step (after an untimed
  ride-along epoch that gathers the statistics, so that the timed one computes values too) and ``end_epoch``.

Each round runs every path once, in rotating order, in this one process; a ratio is the path's CPU time
(``time.process_time``) ÷ the plain epoch's in the same round, median over rounds. Peak memory: the resident set's
high-water mark above its level before the path (Linux: /proc/self/status VmHWM, reset through /proc/self/clear_refs),
with model, gradients and Adam's state already allocated.

Usage: python benchmarks/bench_sequence.py [--quick] [--rounds R] [--docs N] [--batch B] [--threads K] [--out DIR]
(quick: a 2-layer, width-64 GPT-2 with a 1,000-token vocabulary, T = 32, 16 documents, 1 round: a check that it runs)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a source checkout without installing

from chg.lastlayer import LastLayerTap  # noqa: E402
from chg.experiments.results import provenance, write_json_atomic, write_text_atomic  # noqa: E402
from chg.sequence import SequenceValuer, sequence_loss  # noqa: E402

PATHS = ("plain", "pass", "ride")


def _kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def _reset_peak() -> int:
    """Reset the peak resident set to the current one; return the current one (KiB), or -1 where not Linux."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _kib("VmRSS:")
    except OSError:
        return -1


def _peak_mib(base: int) -> float:
    return float("nan") if base < 0 else (_kib("VmHWM:") - base) / 1024


def _model(quick: bool):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=1000, n_positions=32, n_embd=64, n_layer=2, n_head=4, use_cache=False) if quick \
        else GPT2Config(use_cache=False)
    return GPT2LMHeadModel(cfg)


def _batches(n: int, T: int, vocab: int, batch: int) -> list:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (n, T), generator=g)
    return [{"input_ids": ids[a:a + batch], "attention_mask": torch.ones_like(ids[a:a + batch]),
             "labels": ids[a:a + batch], "index": torch.arange(a, min(n, a + batch))} for a in range(0, n, batch)]


def _train_epoch(model, opt, batches, valuer=None) -> None:
    model.train()
    with LastLayerTap(model, sequence=True) as tap:
        for b in batches:
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            logits, feat = tap.read(out)
            if valuer is not None:
                valuer.add_logits(b["index"], logits, b["labels"], feat, b["attention_mask"], tap.bias)
            loss = sequence_loss(logits, b["labels"], b["attention_mask"], shift=True).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if valuer is not None:
        valuer.end_epoch()


def run(quick: bool, docs: int, batch: int, rounds: int) -> dict:
    model = _model(quick)
    T = 32 if quick else 128
    batches = _batches(docs, T, model.config.vocab_size, batch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    _train_epoch(model, opt, batches[:1])  # warm-up; allocates gradients and Adam's state
    ride = SequenceValuer(docs, shift=True)
    _train_epoch(model, opt, batches, ride)  # untimed: gathers the statistics ride-along values against
    cpu = {p: [] for p in PATHS}
    wall = {p: [] for p in PATHS}
    peak = {p: [] for p in PATHS}
    for r in range(rounds):
        for p in PATHS[r % 3:] + PATHS[:r % 3]:
            base = _reset_peak()
            c0, w0 = time.process_time(), time.perf_counter()
            if p == "plain":
                _train_epoch(model, opt, batches)
            elif p == "pass":
                SequenceValuer(docs, shift=True).value_epoch(model, batches)
            else:
                _train_epoch(model, opt, batches, ride)
            cpu[p].append(time.process_time() - c0)
            wall[p].append(time.perf_counter() - w0)
            peak[p].append(_peak_mib(base))
            print(f"round {r} {p}: cpu {cpu[p][-1]:.2f} s, wall {wall[p][-1]:.2f} s, peak +{peak[p][-1]:.0f} MiB",
                  flush=True)
    ratio = {p: [cpu[p][i] / cpu["plain"][i] for i in range(rounds)] for p in PATHS}
    n_params = sum(p.numel() for p in model.parameters())
    return {"cpu_s": cpu, "wall_s": wall, "peak_mib": peak, "ratio_cpu": ratio, "params": n_params, "T": T,
            "vocab": model.config.vocab_size}


def render(res: dict, meta: dict) -> str:
    lines = ["# Cost of valuing a language model's documents (benchmarks/bench_sequence.py)", "",
             f"GPT-2 from config ({res['params'] / 1e6:.1f} M parameters, vocabulary {res['vocab']:,}), {meta['docs']} "
             f"documents of T = {res['T']}, batch {meta['batch']}, float32, {meta['threads']} torch thread(s); "
             f"{meta['rounds']} round(s), paths in rotating order in one process; ratio = CPU time ÷ the plain "
             f"epoch's in the same round, median (min–max). Peak: resident-set high-water mark above its level "
             f"before the path (model, gradients and Adam state already allocated). Load average at start: "
             f"{meta['load']}.", "",
             "| path | median CPU s | × plain epoch (CPU) | median wall s | peak MiB above start |",
             "|---|---|---|---|---|"]
    names = {"plain": "plain training epoch", "pass": "exact values: two sweeps (value_epoch)",
             "ride": "training epoch with ride-along values"}
    for p in PATHS:
        rc = res["ratio_cpu"][p]
        lines.append(f"| {names[p]} | {statistics.median(res['cpu_s'][p]):.2f} | {statistics.median(rc):.3f} "
                     f"({min(rc):.3f}–{max(rc):.3f}) | {statistics.median(res['wall_s'][p]):.2f} | "
                     f"{statistics.median(res['peak_mib'][p]):.0f} |")
    lines += ["", "An epoch of Algorithm 1 with the exact values costs plain + pass; with ride-along, the ride row.",
              "", f"Device: {meta['device']}; {meta['when']}; total {meta['wall_s']:.0f} s wall.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny GPT-2, 16 documents, 1 round (a check that it runs)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--docs", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    docs, rounds = (16, 1) if args.quick else (args.docs, args.rounds)
    t0 = time.time()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    res = run(args.quick, docs, args.batch, rounds)
    meta = {"docs": docs, "batch": args.batch, "rounds": rounds, "threads": torch.get_num_threads(), "load": load,
            "wall_s": time.time() - t0, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **provenance()}
    stem = "sequence_quick" if args.quick else "sequence"
    write_json_atomic(args.out / f"{stem}.json", {"meta": meta, "result": res})
    text = render(res, meta)
    write_text_atomic(args.out / f"{stem}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
