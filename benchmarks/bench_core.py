"""Speed and memory of the chg core, written to benchmarks/results/core.{json,md}.

1. Values from factors (chg.factored_shapley, CHG weighting, weight+bias gradient) at n = 1e4, 1e5, 1e6 with C = 10,
   D = 512, float32 inputs: wall seconds (median of repeats) and peak memory over the inputs (each size in a fresh
   subprocess: ru_maxrss after the call minus the resident size once the inputs exist).
2. One batch (B = 128, D = 512, C = 10 and 100): the factored path vs torch.func vmap per-sample gradients vs a
   batch-size-1 autograd loop — each from the same model forward to the values, taking turns in rounds — and the
   largest relative difference between their values, in float32 and float64; the model's forward alone is timed
   too (a floor under the factored path).

Usage: python benchmarks/bench_core.py [--quick]   (quick: n up to 1e4, fewer repeats; a CI smoke run)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def child_factored(n: int, C: int, D: int, repeats: int, device: torch.device) -> dict:
    """Runs in a subprocess: time and peak memory of values from factors for one n (CPU: resident memory over the
    inputs; CUDA: peak allocated device memory over the inputs)."""
    import chg
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(n, D, generator=gen).relu_().to(device)  # (n, D) float32, like post-ReLU features
    err = torch.softmax(torch.randn(n, C, generator=gen), 1)  # (n, C)
    err[torch.arange(n), torch.randint(0, C, (n,), generator=gen)] -= 1
    err, loss = err.to(device), (torch.rand(n, generator=gen) * 3).to(device)  # loss (n,)
    input_bytes = sum(t.numel() * t.element_size() for t in (feat, err, loss))
    _sync(device)
    rss_inputs = _rss_bytes() if device.type == "cpu" else torch.cuda.memory_allocated(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats + (device.type == "cuda")):  # on CUDA one extra, untimed warm-up call
        t0 = time.perf_counter()
        values = chg.factored_shapley(err, feat, loss)
        _sync(device)
        times.append(time.perf_counter() - t0)
    times = times[-repeats:]
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if device.type == "cpu"
            else torch.cuda.max_memory_allocated(device))
    return {"n": n, "C": C, "D": D, "seconds_median": statistics.median(times), "seconds_min": min(times),
            "seconds_all": times,
            "input_bytes": input_bytes, "peak_over_inputs_bytes": peak - rss_inputs,
            "values_finite": bool(torch.isfinite(values).all())}


def bench_sizes(sizes, repeats, device: torch.device) -> list:
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--child", str(n), "--repeats", str(repeats),
               "--threads", str(torch.get_num_threads()), "--device", str(device)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"factored n={n}: median {rows[-1]['seconds_median']:.3f} s, best {rows[-1]['seconds_min']:.3f} s, "
              f"peak over inputs {rows[-1]['peak_over_inputs_bytes'] / 2**20:.0f} MiB", flush=True)
    return rows


def _batch_model(D: int, C: int, dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, D), nn.ReLU(), nn.Linear(D, C)).to(dtype)


@torch.no_grad()
def _forward_only(model, x, y):
    """The model's batched forward pass alone: a floor under the factored path, which runs it once."""
    return model(x)


def _factored(model, x, y):
    import chg
    return chg.shapley_from_factors(chg.compute_factors(model, x, y))


def _vmap(model, x, y):
    import chg
    from torch.func import functional_call, grad_and_value, vmap
    last = {k: v.detach() for k, v in model.named_parameters() if k.startswith("2.")}
    with torch.no_grad():
        feats = model[1](model[0](x))  # (B, D) backbone forward, once

    def loss_of(p, hi, yi):
        logits = functional_call(model[2], {"weight": p["2.weight"], "bias": p["2.bias"]}, (hi[None],))
        return nn.functional.cross_entropy(logits, yi[None])

    g, losses = vmap(grad_and_value(loss_of), in_dims=(None, 0, 0))(last, feats, y)
    dense = torch.cat([g["2.weight"], g["2.bias"][:, :, None]], 2).flatten(1)  # (B, C(D+1))
    return chg.chg_shapley(dense * losses[:, None])


def _loop(model, x, y):
    """Batch-size-1 autograd, gradients of the last layer only (torch.autograd.grad stops there)."""
    import chg
    rows, losses = [], []
    w, b = model[2].weight, model[2].bias
    for i in range(x.shape[0]):
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        gw, gb = torch.autograd.grad(loss, [w, b])
        rows.append(torch.cat([gw, gb[:, None]], 1).flatten())
        losses.append(loss.detach())
    return chg.chg_shapley(torch.stack(rows) * torch.stack(losses)[:, None])


def _loop_full_backward(model, x, y):
    """Batch-size-1 autograd as most code writes it: loss.backward() per sample (all parameters' gradients)."""
    import chg
    rows, losses = [], []
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        loss.backward()
        rows.append(torch.cat([model[2].weight.grad, model[2].bias.grad[:, None]], 1).flatten())
        losses.append(loss.detach())
    return chg.chg_shapley(torch.stack(rows) * torch.stack(losses)[:, None])


def _time_interleaved(fns: dict, rounds: int, calls: dict, device) -> tuple:
    """Per round, every path in turn (the order rotates from round to round) runs ``calls[name]`` back-to-back calls,
    timed together and divided by their number: the cost per call in a steady stream, as in a training loop (a
    batch-size-1 loop is itself such a stream of 128 steps: one call). Every path gets one sample per round, a slow
    spell of a shared machine hits every path alike, and paired per-round ratios can be taken. One warm-up call
    each first. Returns each path's per-round times and its last output."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times, outs = {k: [] for k in fns}, {}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            k = calls.get(name, 1)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(k):
                outs[name] = fns[name]()
            _sync(device)
            times[name].append((time.perf_counter() - t0) / k)
    return times, {k: v.cpu() for k, v in outs.items()}


def bench_batch(B: int, D: int, C: int, dtype, rounds: int, device: torch.device) -> dict:
    model = _batch_model(D, C, dtype).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, 256, generator=gen).to(device=device, dtype=dtype)
    y = torch.randint(0, C, (B,), generator=gen).to(device)
    paths = {"factored": _factored, "vmap": _vmap, "loop_bs1": _loop, "loop_bs1_full_backward": _loop_full_backward,
             "forward_only": _forward_only}
    times, outs = _time_interleaved({k: (lambda f=f: f(model, x, y)) for k, f in paths.items()}, rounds,
                                    {"factored": 5, "forward_only": 5, "vmap": 5}, device)
    best = {k: min(v) for k, v in times.items()}
    paired = {k: statistics.median(t / f for t, f in zip(times[k], times["factored"])) for k in paths}
    v_f, scale = outs["factored"], outs["loop_bs1"].abs().max().item()
    row = {"B": B, "D": D, "C": C, "dtype": str(dtype).replace("torch.", ""), "rounds": rounds,
           "seconds": best, "seconds_all": times,
           "speedup_vs_vmap": best["vmap"] / best["factored"], "speedup_vs_loop": best["loop_bs1"] / best["factored"],
           "speedup_vs_loop_full_backward": best["loop_bs1_full_backward"] / best["factored"],
           "paired_median_speedup": {k: paired[k] for k in ("vmap", "loop_bs1", "loop_bs1_full_backward")},
           "ceiling_vs_loop": best["loop_bs1"] / best["forward_only"],
           "max_rel_diff_vs_vmap": (v_f - outs["vmap"]).abs().max().item() / scale,
           "max_rel_diff_vs_loop": max((v_f - outs["loop_bs1"]).abs().max().item(),
                                       (v_f - outs["loop_bs1_full_backward"]).abs().max().item()) / scale}
    print(f"batch C={C} {row['dtype']}: factored {best['factored'] * 1e3:.2f} ms, vmap {best['vmap'] * 1e3:.2f} ms "
          f"({row['speedup_vs_vmap']:.1f}x), loop {best['loop_bs1'] * 1e3:.1f} ms ({row['speedup_vs_loop']:.0f}x, "
          f"paired median {paired['loop_bs1']:.0f}x), loop+full backward {best['loop_bs1_full_backward'] * 1e3:.1f} ms "
          f"({row['speedup_vs_loop_full_backward']:.0f}x), "
          f"forward alone {best['forward_only'] * 1e3:.2f} ms (ceiling {row['ceiling_vs_loop']:.0f}x), "
          f"max rel diff {max(row['max_rel_diff_vs_vmap'], row['max_rel_diff_vs_loop']):.1e}", flush=True)
    return row


def render(report: dict) -> str:
    lines = [f"# Core benchmark ({report['mode']})", "",
             f"Made by `python benchmarks/bench_core.py{' --quick' if report['mode'] == 'quick' else ''}` on "
             f"{report['device']}, torch {report['torch']}, {report['threads']} threads, load average at start "
             f"{report['loadavg_start']}, {report['date']}. Inputs float32 (products with the features, centred on "
             "a reference point per chunk, in float32; w·e, sums, per-sample combinations and values in float64); "
             + ("memory = peak allocated CUDA memory over the inputs'" if report["device"].startswith("cuda") else
                "memory = peak resident size over the inputs' resident size") + ", in a fresh process per n.", "",
             "## Values from factors (C = 10, D = 512, CHG weighting, weight + bias gradient)", "",
             "| n | seconds (median) | seconds (best) | peak memory over inputs (MiB) | inputs (MiB) |",
             "|---|---|---|---|---|"]
    for r in report["factored"]:
        lines.append(f"| {r['n']:,} | {r['seconds_median']:.3f} | {r['seconds_min']:.3f} | "
                     f"{r['peak_over_inputs_bytes'] / 2**20:.0f} | {r['input_bytes'] / 2**20:.0f} |")
    lines += ["", "## One batch: factored vs per-sample gradients (B = 128, D = 512), model forward to values", "",
              "Each path runs the model (a Linear(256, 512)+ReLU backbone and the Linear(512, C) head) and ends with "
              "the "
              "values: factored = one forward with the hook + eq. (3) from factors; vmap = torch.func per-sample "
              "gradients of the head (grad_and_value) + dense eq. (3); loop = one forward and torch.autograd.grad of "
              "the head per sample + dense eq. (3); loop + full backward = the same with loss.backward() (every "
              "parameter's gradient, as a plain per-sample loop computes it); forward = the model's batched forward "
              "pass alone, which the factored path contains: loop ÷ forward is the largest ratio that any path which "
              "runs the model's forward pass could reach here (riding on a training step's own forward, as "
              "chg.EpochValuer can, the factored path does not pay it). R rounds after one warm-up call each; in "
              "each round every path runs once, in an order that rotates: the batch-size-1 loops one call (itself "
              "a stream of 128 steps), the other paths 5 back-to-back calls timed together and divided by 5 (the "
              "cost per call in a steady stream). A path's time is its best round. "
              "× = ratio of best times; paired = median over rounds of the ratio within the round.", "",
              "| C | dtype | rounds | forward (ms) | factored (ms) | vmap (ms) | bs-1 loop (ms) | bs-1 loop, full "
              "backward (ms) | × vs vmap | × vs loop (paired) | × vs loop, full backward | ceiling: loop ÷ forward "
              "| max rel. diff |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["batch"]:
        s, p = r["seconds"], r["paired_median_speedup"]
        diff = max(r["max_rel_diff_vs_vmap"], r["max_rel_diff_vs_loop"])
        lines.append(f"| {r['C']} | {r['dtype']} | {r['rounds']} | {s['forward_only'] * 1e3:.2f} | "
                     f"{s['factored'] * 1e3:.2f} | {s['vmap'] * 1e3:.2f} | "
                     f"{s['loop_bs1'] * 1e3:.1f} | {s['loop_bs1_full_backward'] * 1e3:.1f} | "
                     f"{r['speedup_vs_vmap']:.1f} | {r['speedup_vs_loop']:.0f} ({p['loop_bs1']:.0f}) | "
                     f"{r['speedup_vs_loop_full_backward']:.0f} | {r['ceiling_vs_loop']:.0f} | {diff:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="n up to 1e4 and fewer repeats (CI smoke)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the targets are for 2 cores)")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for core.json/.md (default benchmarks/results)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]; CUDA results go to core_cuda.*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    if args.child:
        print(json.dumps(child_factored(args.child, 10, 512, args.repeats, device)))
        return
    sys.path.insert(0, str(HERE.parent))
    from chg.experiments.results import atomic_write, device_name, write_json_atomic
    sizes = [10**3, 10**4] if args.quick else [10**4, 10**5, 10**6]
    repeats = 2 if args.quick else args.repeats
    report = {"mode": "quick" if args.quick else "full", "device": device_name(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "loadavg_start": " ".join(open("/proc/loadavg").read().split()[:3]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    report["factored"] = bench_sizes(sizes, repeats, device)
    report["batch"] = [bench_batch(128, 512, C, dtype, rounds=3 if args.quick else 20, device=device)
                       for C in (10, 100) for dtype in (torch.float32, torch.float64)]
    name = ("core_quick" if args.quick else "core") + ("_cuda" if device.type == "cuda" else "")
    write_json_atomic(args.out / f"{name}.json", report)
    atomic_write(args.out / f"{name}.md", lambda tmp: Path(tmp).write_text(render(report)))
    print(f"wrote {args.out / name}.json and .md")


if __name__ == "__main__":
    main()
