r"""What valuing the data costs on top of training, and how close the library's ride-along is to its floor.

One training epoch (SGD + Nesterov, batch 128, cross-entropy), one CPU thread, five ways. The batches of a round are
gathered before the clock starts (the pool is a tensor in memory; no augmentation, no data loader in the timed
region), and every path trains its own copy of the same initialised model on the same batches, so all copies stay at
the same parameters from round to round.

(a) ``plain`` — forward, loss, backward, step.
(b) ``tap_only`` — the same with a :class:`chg.LastLayerTap` built once (opened once per epoch) and ``tap.read`` of
    every batch's logits and features; nothing is valued: what finding the output layer's input costs.
(c) ``ride_along`` — the library's ride-along as the docs' loop shows it (docs/training-loop.md): one
    :class:`chg.LastLayerTap` built once and opened for the epoch, per batch ``logits, feat = tap.read(model(x));
    valuer.add_logits(idx, logits, y, feat, tap.bias)``, then ``valuer.end_epoch()`` (loss and softmax error of every
    row, then eq. (3) for the epoch).
(d) ``floor`` — a hand-made ride-along in :class:`Floor` and :func:`floor_values` (~45 lines): one forward hook on the
    output ``nn.Linear`` appends the detached logits and features to Python lists (no torch call per batch beyond the
    hook's detach); at the epoch's end eq. (3) with α = the mean of the x_i by the closed form straight from the lists,
    in groups of 16 batches (a group's features concatenated into one small scratch buffer, read twice in all; loss and
    softmax error in float64; two float32 GEMMs) — :func:`chg.coefficients` for the six scalars, the rest written
    here. Before the timed rounds its values are checked against the library's on the same rows (:func:`check_floor`).
    It holds references, so it is the floor of a ride-along that trusts every batch's tensors to stay as they were;
    the library copies each batch when it comes (a loader may refill its buffers), so its floor adds (f)'s copies.
(f) ``copies`` — (b) plus the four slice copies of each batch (row indices, targets, logits, features) into
    preallocated epoch buffers, and nothing else: what a per-batch path that copies costs before any valuation. The
    library copies (a loader or a compiled graph may reuse its buffers for the next batch; the floor's references
    would then change under it), so (f) + the epoch's eq. (3) is the floor of a safe ride-along.
(e) ``separate_pass`` — Algorithm 1 exactly: ``valuer.value_epoch(model, batches of 256)`` (a no-grad, eval-mode pass
    over the pool, then eq. (3)) and then the plain epoch.

Settings: ``image_mlp`` (784-128-128-10) and the BatchNorm CNN ``stride_cnn`` (width 16) on the 54,000-image
Fashion-MNIST pool (``chg.experiments.data.load_dataset("fashion_mnist", 0)``; found in data/fashion-mnist or
/usr/share/datasets/fashion-mnist).

Rounds: one untimed warm-up round (it also runs the floor check), then ``--rounds`` (≥ 7) rounds; each round runs every
path once, in an order that rotates from round to round. Times: this process's CPU time (``time.process_time``: with
one thread it is little disturbed by other processes) and wall time (``time.perf_counter``). Reported per path: medians
over rounds, and the ratio to (a) = the median over rounds of the within-round ratio (paired). Writes
``benchmarks/results/overhead.json`` (``overhead_quick.json`` with ``--quick``) atomically and renders
``overhead.md`` from that JSON.

Interleaved (a second measurement, the same paths but (e)): one epoch takes ~0.7 s and the machine's speed drifts
over seconds, so the per-round ratios above spread by ±10%. Here every path trains its epoch in blocks of
``--block`` batches (default 10), the paths taking turns block by block in rotating order, each block timed; then
each path's end-of-epoch work (``end_epoch``; the floor's eq. (3)) is timed. A path's epoch = its blocks + its end;
ratios are paired within the round. Drift then cancels over ~20 ms instead of seconds, and the per-batch cost and
the end of the epoch are seen apart. (Every block starts after another model's: the caches are colder than in a
plain epoch for every path alike.)

Usage: python benchmarks/bench_overhead.py [--rounds 7] [--threads 1] [--settings image_mlp,stride_cnn] [--n N]
                                           [--block 10] [--out DIR] [--quick] [--render-only]
(--quick: 512 synthetic 28×28 images per setting, 1 round after the warm-up — a smoke test of every path, seconds, not
a measurement; --n N: the first N images of the pool only, for a check on the real data.)
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _machine import machine, write_report  # noqa: E402

import chg  # noqa: E402
from chg.experiments.data import load_dataset, synthetic_bundle  # noqa: E402
from chg.experiments.models import build_model  # noqa: E402
from chg.experiments.results import provenance  # noqa: E402
from chg.io import write_text_atomic  # noqa: E402

PATHS = ("plain", "tap_only", "copies", "ride_along", "floor", "separate_pass")
NAMES = {"plain": "(a) plain epoch (forward, loss, backward, step)",
         "tap_only": "(b) tap only (LastLayerTap built once, read per batch)",
         "copies": "(f) tap + the four per-batch slice copies into epoch buffers (no valuation)",
         "ride_along": "(c) ride-along, library (the docs' loop: one tap, EpochValuer.add_logits + end_epoch)",
         "floor": "(d) ride-along floor, hand-made (one hook, lists, eq. (3) by hand)",
         "separate_pass": "(e) Algorithm 1 separate pass (value_epoch) + epoch"}
SETTINGS = {"image_mlp": ("image_mlp", 128), "stride_cnn": ("stride_cnn", 16)}  # name: (model, width)
BATCH, PASS_BATCH, MIN_ROUNDS = 128, 256, 7
INTERLEAVED = ("plain", "tap_only", "copies", "ride_along", "floor")  # per-batch paths (not the separate pass)
FLOOR_RTOL = 1e-6  # floor vs library values on float32 rows: max |Δ| ≤ rtol · max |φ| (see check_floor)


# ---- (d) the hand-made floor ------------------------------------------------------------------------------------
FLOOR_GROUP = 16  # batches per chunk of the floor's passes (2,048 rows of batch 128: 1 MiB of float32 at D = 128)


class Floor:
    """One forward hook on the output layer keeps each batch's detached logits and features; the loop adds rows and
    targets. Args: layer: the model's output ``nn.Linear``."""

    def __init__(self, layer: torch.nn.Linear):
        self.z, self.h, self.rows, self.y = [], [], [], []
        layer.register_forward_hook(self.keep)

    def keep(self, module, inputs, output) -> None:
        self.z.append(output.detach())  # (B, C) logits
        self.h.append(inputs[0].detach())  # (B, D) features

    def take(self) -> tuple:
        """The epoch's lists of per-batch (rows (B,), targets (B,), logits (B, C), features (B, D)); emptied."""
        out = (self.rows, self.y, self.z, self.h)
        self.z, self.h, self.rows, self.y = [], [], [], []
        return out


def floor_values(rows: list, y: list, z: list, h: list, n: int, group: int = FLOOR_GROUP) -> torch.Tensor:
    """Eq. (3) of the epoch by hand, α = s/m, straight from the per-batch lists (no copy of the epoch):
    φ_j = c1‖x_j‖² + (c2 + c5/m)⟨s, x_j⟩ + (c3 + c6/m)‖s‖² + c4 Σ‖x_i‖², x_i = l_i e_i ⊗ [h_i; 1].

    The batches go in groups of ``group``: pass 1 concatenates a group's features into one small scratch buffer,
    centred on μ (the mean of the first 32 rows: the float32 GEMMs' precision, as the library), and makes the loss
    and error from the logits in float64 (in float32, p_y − 1 loses the confident rows' digits), s and every ‖x_i‖²;
    pass 2 concatenates each group again for ⟨s, x_j⟩. The features are read twice, the two O(m·C·D) GEMMs in
    float32. Args: the lists of :meth:`Floor.take`; n: rows of the data set. Returns (n,) float64, NaN for rows not
    seen."""
    m, C, D = sum(t.shape[0] for t in z), z[0].shape[1], h[0].shape[1]
    mu = h[0][:32].mean(0)  # (D,) the reference point
    le = torch.empty(m, C, dtype=torch.float64)  # l_i e_i
    sq = torch.empty(m, dtype=torch.float64)  # ‖x_i‖²
    s_h, s_b = torch.zeros(C, D, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
    scratch = torch.empty(group * max(t.shape[0] for t in h), D, dtype=h[0].dtype)

    def centred(g: int, r: int) -> torch.Tensor:  # the group's features h − μ (r, D), in the scratch buffer
        return torch.cat(h[g:g + group], out=scratch[:r]).sub_(mu)

    spans, a = [], 0
    for g in range(0, len(z), group):
        zg, yg = torch.cat(z[g:g + group]), torch.cat(y[g:g + group])
        r = zg.shape[0]
        hc = centred(g, r)
        logp = torch.log_softmax(zg.double(), 1)
        loss = -logp.gather(1, yg[:, None])  # (r, 1) cross-entropy l_i
        e = le[a:a + r]
        torch.exp(logp, out=e).scatter_add_(1, yg[:, None], torch.full_like(loss, -1.0)).mul_(loss)
        s_h += e.to(hc.dtype).T @ hc  # Σ l e ⊗ (h − μ): GEMM 1
        s_b += e.sum(0)
        h_sq = hc.square().sum(1, dtype=torch.float64).add_((hc @ mu).double(), alpha=2).add_(float(mu @ mu) + 1)
        torch.mul(e.square().sum(1), h_sq, out=sq[a:a + r])  # ‖l e‖² (‖h‖² + 1), ‖h‖² = ‖h − μ‖² + 2μ·(h − μ) + ‖μ‖²
        spans.append((g, a, r))
        a += r
    s_h += torch.outer(s_b, mu.double())  # s = Σ l e ⊗ h
    c = chg.coefficients(m)
    k = c.dot_sum + c.dot_alpha / m  # the coefficient of ⟨s, x_j⟩ once α = s/m
    m_h = k * s_h
    m_f, m_b = m_h.to(scratch.dtype), k * s_b + m_h @ mu.double()  # k⟨s, x_j⟩ = l e_jᵀ (m_h (h_j − μ) + m_b)
    dots = torch.empty(m, dtype=torch.float64)
    for g, a, r in spans:
        torch.linalg.vecdot(le[a:a + r], (centred(g, r) @ m_f.T).double().add_(m_b), out=dots[a:a + r])  # GEMM 2
    s_sq = s_h.square().sum() + s_b.square().sum()  # ‖s‖²
    const = (c.sum_norm_sq + c.sum_dot_alpha / m) * s_sq + c.sum_sq_norms * sq.sum()
    out = torch.full((n,), float("nan"), dtype=torch.float64)
    out[torch.cat(rows)] = dots.add_(sq, alpha=c.sq_norm).add_(const)
    return out


def library_values(rows, y, z, h, n: int) -> torch.Tensor:
    """The library's values of the same rows: ``EpochValuer(n).add_logits`` of them, then ``end_epoch``."""
    valuer = chg.EpochValuer(n)
    valuer.add_logits(rows, z, y, h, True)
    return valuer.end_epoch()


def check_floor(floor_vals: torch.Tensor, rows, y, z, h, n: int) -> dict:
    """The floor's values against the library's (:func:`library_values`) on the same float32 rows, normwise:
    max_j |Δ_j| ≤ FLOOR_RTOL · max_j |φ_j| (a value near 0 is compared at the scale of the values, not of itself).
    For scale, the same measure between the library on these float32 rows and on them in float64.

    Returns:
        dict: ``rtol``, ``max_abs_diff_over_max_abs`` (the measure), ``max_abs_diff_over_std``,
        ``library_float32_vs_float64`` (the measure between the library's float32 and float64 values), ``ok``.
    Raises:
        AssertionError: the check fails (the floor would be timing a different computation).
    """
    lib = library_values(rows, y, z, h, n)
    lib64 = library_values(rows, y, z.double(), h.double(), n)
    d, top = (floor_vals - lib).abs().max(), lib.abs().max()
    out = {"rtol": FLOOR_RTOL, "max_abs_diff_over_max_abs": float(d / top),
           "max_abs_diff_over_std": float(d / lib.std()),
           "library_float32_vs_float64": float((lib - lib64).abs().max() / top)}
    out["ok"] = out["max_abs_diff_over_max_abs"] <= FLOOR_RTOL
    assert out["ok"], f"the hand-made floor's values differ from the library's: {out}"
    return out


# ---- the paths --------------------------------------------------------------------------------------------------
def step(run: dict, logits: torch.Tensor, y: torch.Tensor) -> None:
    loss = F.cross_entropy(logits, y)
    run["opt"].zero_grad(set_to_none=True)
    loss.backward()
    run["opt"].step()


def epoch(path: str, run: dict, batches: list, pass_batches: list, n: int):
    """One epoch of ``path`` (its tap opened for the epoch); returns the epoch's values (n,) for the valuing paths,
    else None."""
    if path == "separate_pass":
        run["valuer"].value_epoch(run["model"], pass_batches)
        path = "plain"
    tap = run.get("tap") if path in ("tap_only", "copies", "ride_along") else None
    if tap is not None:
        tap.__enter__()
    try:
        for x, y, idx in batches:
            batch_step(path, run, x, y, idx)
    finally:
        if tap is not None:
            tap.__exit__(None, None, None)
    return epoch_end(path, run, n)


def batch_step(path: str, run: dict, x, y, idx) -> None:
    """One batch of a per-batch path (its tap already open): (a)–(d) and (f) of the module docstring."""
    model = run["model"]
    if path == "plain":
        step(run, model(x), y)
    elif path == "tap_only":
        logits, _feat = run["tap"].read(model(x))
        step(run, logits, y)
    elif path == "copies":
        logits, feat = run["tap"].read(model(x))
        buf, s = run["buffers"], slice(run["at"], run["at"] + len(y))
        run["at"] = s.stop
        with torch.no_grad():
            buf["idx"][s].copy_(idx)
            buf["target"][s].copy_(y)
            buf["z"][s].copy_(logits)
            buf["feat"][s].copy_(feat)
        step(run, logits, y)
    elif path == "ride_along":
        logits, feat = run["tap"].read(model(x))
        run["valuer"].add_logits(idx, logits, y, feat, run["tap"].bias)
        step(run, logits, y)
    elif path == "floor":
        logits = model(x)
        run["floor"].rows.append(idx)
        run["floor"].y.append(y)
        step(run, logits, y)


def epoch_end(path: str, run: dict, n: int):
    """The end-of-epoch work of a per-batch path: ``end_epoch`` (ride-along) or the floor's eq. (3) — their values
    (n,) (the floor's rows kept in ``run["kept"]`` in the warm-up round, for the floor check) — else None."""
    run["at"] = 0
    if path == "ride_along":
        return run["valuer"].end_epoch()
    if path == "floor":
        lists = run["floor"].take()
        if run.get("check"):  # warm-up only: keep the rows to compare with the library
            run["kept"] = tuple(torch.cat(v) for v in lists)
        return floor_values(*lists, n)
    return None


def bench_interleaved(x, y, runs: dict, rounds: int, block: int) -> dict:
    """The per-batch paths in blocks of ``block`` batches taking turns (see the module docstring): per path and
    round, CPU seconds of the batches and of the epoch's end; ratios to plain paired within the round."""
    n = len(y)
    per_batch = {p: [] for p in INTERLEAVED}
    end = {p: [] for p in INTERLEAVED}
    for r in range(rounds + 1):  # round 0: warm-up, not recorded
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(2000 + r))
        xs, ys = x[perm], y[perm]
        batches = [(xs[b:b + BATCH], ys[b:b + BATCH], perm[b:b + BATCH]) for b in range(0, n, BATCH)]
        spent = dict.fromkeys(INTERLEAVED, 0.0)
        for p in INTERLEAVED:
            runs[p]["at"] = 0
            if "tap" in runs[p]:
                runs[p]["tap"].__enter__()
        gc.collect()
        gc.disable()  # a collection inside one path's block would be charged to it
        try:
            for k, b in enumerate(range(0, len(batches), block)):
                for p in INTERLEAVED[k % len(INTERLEAVED):] + INTERLEAVED[:k % len(INTERLEAVED)]:
                    c0 = time.process_time()
                    for xb, yb, ib in batches[b:b + block]:
                        batch_step(p, runs[p], xb, yb, ib)
                    spent[p] += time.process_time() - c0
        finally:
            gc.enable()
            for p in INTERLEAVED:
                if "tap" in runs[p]:
                    runs[p]["tap"].__exit__(None, None, None)
        ends = {}
        for p in INTERLEAVED[r % len(INTERLEAVED):] + INTERLEAVED[:r % len(INTERLEAVED)]:
            c0 = time.process_time()
            epoch_end(p, runs[p], n)
            ends[p] = time.process_time() - c0
        if r:
            for p in INTERLEAVED:
                per_batch[p].append(spent[p])
                end[p].append(ends[p])
    total = {p: [a + b for a, b in zip(per_batch[p], end[p])] for p in INTERLEAVED}
    out = {"block": block, "rounds": rounds, "seconds_cpu_batches": per_batch, "seconds_cpu_end": end,
           "ratio_batches": {}, "ratio_total": {}, "ratio_total_range": {}, "median_end_ms": {}}
    for p in INTERLEAVED:
        out["ratio_batches"][p] = statistics.median(a / b for a, b in zip(per_batch[p], per_batch["plain"]))
        rat = [a / b for a, b in zip(total[p], total["plain"])]
        out["ratio_total"][p] = statistics.median(rat)
        out["ratio_total_range"][p] = [min(rat), max(rat)]
        out["median_end_ms"][p] = 1e3 * statistics.median(end[p])
    return out


def setup(path: str, model_name: str, width: int, num_classes: int, shape: tuple, n: int) -> dict:
    torch.manual_seed(0)  # every path: the same initial model
    model = build_model(model_name, num_classes, shape, width)
    run = {"model": model, "opt": torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4,
                                                  nesterov=True), "at": 0}  # at: the copies' running offset
    if path in ("tap_only", "copies", "ride_along"):
        run["tap"] = chg.LastLayerTap(model)
    if path == "copies":
        layer = chg.find_last_linear(model)
        run["buffers"] = {"idx": torch.empty(n, dtype=torch.int64), "target": torch.empty(n, dtype=torch.int64),
                          "z": torch.empty(n, layer.out_features), "feat": torch.empty(n, layer.in_features)}
    if path in ("ride_along", "separate_pass"):
        run["valuer"] = chg.EpochValuer(n)
    if path == "floor":
        run["floor"] = Floor(chg.find_last_linear(model))
    return run


def bench_setting(x, y, num_classes: int, model_name: str, width: int, rounds: int, block: int) -> dict:
    """Warm-up round (floor check) + ``rounds`` timed rounds of every path; medians and paired ratios to plain; then
    the per-batch paths interleaved in blocks of ``block`` batches (:func:`bench_interleaved`)."""
    n = len(y)
    runs = {p: setup(p, model_name, width, num_classes, tuple(x.shape[1:]), n) for p in PATHS}
    pass_batches = [(x[b:b + PASS_BATCH], y[b:b + PASS_BATCH], torch.arange(b, min(n, b + PASS_BATCH)))
                    for b in range(0, n, PASS_BATCH)]
    cpu, wall = {p: [] for p in PATHS}, {p: [] for p in PATHS}
    out = {"n": n, "model": model_name, "width": width}
    for r in range(rounds + 1):  # round 0: warm-up, not recorded
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1000 + r))
        xs, ys = x[perm], y[perm]  # gathered before the clock: contiguous batches, views below
        batches = [(xs[b:b + BATCH], ys[b:b + BATCH], perm[b:b + BATCH]) for b in range(0, n, BATCH)]
        runs["floor"]["check"] = r == 0
        got = {}
        for p in PATHS[r % len(PATHS):] + PATHS[:r % len(PATHS)]:
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            got[p] = epoch(p, runs[p], batches, pass_batches, n)
            c1, w1 = time.process_time(), time.perf_counter()
            if r:
                cpu[p].append(c1 - c0)
                wall[p].append(w1 - w0)
        if r == 0:
            kept = runs["floor"].pop("kept")
            out["floor_check"] = check_floor(got["floor"], *kept, n)
            # same round, same batches, same starting parameters: (c) and (d) saw the same logits if the forward
            # passes are deterministic (they are on one CPU thread); recorded, not asserted
            d = (got["floor"] - got["ride_along"]).abs().max() / got["ride_along"].std()
            out["ride_along_vs_floor_same_round_max_abs_diff_over_std"] = float(d)
    out.update(seconds_cpu=cpu, seconds_wall=wall, median_cpu_s={}, median_wall_s={}, ratio_cpu={}, ratio_wall={})
    for p in PATHS:
        for kind, t in (("cpu", cpu), ("wall", wall)):
            out[f"median_{kind}_s"][p] = statistics.median(t[p])
            out[f"ratio_{kind}"][p] = statistics.median(a / b for a, b in zip(t[p], t["plain"]))
    out["ride_along_over_floor_cpu"] = statistics.median(a / b for a, b in zip(cpu["ride_along"], cpu["floor"]))
    out["ride_along_over_floor_wall"] = statistics.median(a / b for a, b in zip(wall["ride_along"], wall["floor"]))
    out["interleaved"] = bench_interleaved(x, y, runs, rounds, block)
    return out


# ---- report -----------------------------------------------------------------------------------------------------
def render(rep: dict) -> str:
    """The Markdown report, from the JSON report only."""
    m, sets = rep["machine"], rep["settings"]
    head = ["path"]
    for s in sets.values():
        head += [f"{s['model']} CPU s", "× (a) CPU", "wall s", "× (a) wall"]
    lines = [f"# Valuation overhead per training epoch ({rep['mode']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s); load average "
             f"{m['loadavg_start']} at start, {m['loadavg_end']} at end; torch {m['torch']}, Python {m['python']}; "
             f"commit {rep['provenance']['git_commit']}; {rep['date']}.",
             f"Data: {rep['data']}. Batch {rep['batch']}, SGD + Nesterov; batches gathered before the clock (no "
             f"augmentation, no loader). {rep['rounds']} rounds after an untimed warm-up, every path once per round in "
             "rotating order. Times: medians over rounds of this process's CPU time and of wall time; × (a): median "
             "over rounds of the path ÷ plain within the round. Made by `python benchmarks/bench_overhead.py`"
             + (" --quick (a smoke run: not a measurement)" if rep["mode"] == "quick" else "") + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in PATHS:
        cells = [NAMES[p]]
        for s in sets.values():
            cells += [f"{s['median_cpu_s'][p]:.3f}", f"{s['ratio_cpu'][p]:.3f}", f"{s['median_wall_s'][p]:.3f}",
                      f"{s['ratio_wall'][p]:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if all("interleaved" in s for s in sets.values()):
        first = next(iter(sets.values()))["interleaved"]
        lines += [f"Interleaved in blocks of {first['block']} batches ({first['rounds']} rounds after a warm-up; see "
                  "the script's docstring): × (a) of the batches alone, the end of the epoch, and × (a) of the whole "
                  "epoch (median; min–max over rounds).", ""]
        head2 = ["path"]
        for s in sets.values():
            head2 += [f"{s['model']} × (a) batches", "end of epoch ms", "× (a) epoch", "min–max"]
        lines += ["| " + " | ".join(head2) + " |", "|" + "---|" * len(head2)]
        for p in INTERLEAVED:
            cells = [NAMES[p]]
            for s in sets.values():
                i = s["interleaved"]
                lo, hi = i["ratio_total_range"][p]
                cells += [f"{i['ratio_batches'][p]:.3f}", f"{i['median_end_ms'][p]:.1f}", f"{i['ratio_total'][p]:.3f}",
                          f"{lo:.3f}–{hi:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    for name, s in sets.items():
        rat = sorted(a / b for a, b in zip(s["seconds_cpu"]["ride_along"], s["seconds_cpu"]["plain"]))
        q = statistics.quantiles(rat, n=4) if len(rat) > 1 else [rat[0]] * 3
        lines.append(f"- `{name}`: the per-round ratios (c) ÷ (a) spread over {rat[0]:.3f}–{rat[-1]:.3f} (quartiles "
                     f"{q[0]:.3f}, {q[2]:.3f}) — the noise of one epoch's timing on this machine; the median is the "
                     "figure above.")
        fc = s["floor_check"]
        lines.append(f"- `{name}` (n = {s['n']:,}, width {s['width']}): library ride-along ÷ hand-made floor "
                     f"{s['ride_along_over_floor_cpu']:.3f} (CPU), {s['ride_along_over_floor_wall']:.3f} (wall). "
                     f"Floor check (warm-up round, the same float32 rows): max |Δφ| / max |φ| = "
                     f"{fc['max_abs_diff_over_max_abs']:.1e} (≤ {fc['rtol']:.0e}: "
                     f"{'passed' if fc['ok'] else 'FAILED'}; the library's own float32 vs float64: "
                     f"{fc['library_float32_vs_float64']:.1e}), max |Δφ| / std φ = {fc['max_abs_diff_over_std']:.1e}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=MIN_ROUNDS, help=f"timed rounds (>= {MIN_ROUNDS}; --quick: 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {list(SETTINGS)}")
    ap.add_argument("--n", type=int, default=None, help="the first N images of the pool only (a check, not a record)")
    ap.add_argument("--quick", action="store_true", help="512 synthetic images, 1 round: a smoke test")
    ap.add_argument("--block", type=int, default=10, help="batches per block of the interleaved measurement")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--render-only", action="store_true", help="re-render the Markdown from the JSON in --out")
    args = ap.parse_args()
    name = "overhead_quick" if args.quick else "overhead"
    if args.render_only:
        write_text_atomic(args.out / f"{name}.md", render(json.loads((args.out / f"{name}.json").read_text())))
        return
    settings = [s for s in args.settings.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        ap.error(f"--settings: unknown {unknown}; choose from {list(SETTINGS)}")
    rounds = 1 if args.quick else args.rounds
    if not args.quick and rounds < MIN_ROUNDS:
        ap.error(f"--rounds must be >= {MIN_ROUNDS} for a measurement (use --quick for a smoke run)")
    torch.set_num_threads(args.threads)
    if args.quick:
        d = synthetic_bundle(512, 10, (1, 28, 28), seed=0, n_eval=8)
        data = "synthetic, 512 random 1×28×28 images with random labels (quick smoke run)"
    else:
        d = load_dataset("fashion_mnist", 0)
        data = f"Fashion-MNIST pool (load_dataset('fashion_mnist', 0): {len(d.train.y):,} images, clean labels)"
    x, y = d.train.x, d.train.y
    if args.n is not None:
        x, y = x[:args.n].contiguous(), y[:args.n].contiguous()
        data += f", first {len(y):,} images only (--n: a check, not a record)"
    rep = {"mode": "quick" if args.quick else "full", "data": data, "rounds": rounds, "batch": BATCH,
           "pass_batch": PASS_BATCH, "machine": machine(), "provenance": provenance("cpu"),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "paths": list(PATHS), "settings": {}}
    for s in settings:
        model_name, width = SETTINGS[s]
        rep["settings"][s] = bench_setting(x, y, d.num_classes, model_name, width, rounds, max(1, args.block))
    write_report(args.out, name, rep, render)


if __name__ == "__main__":
    main()
