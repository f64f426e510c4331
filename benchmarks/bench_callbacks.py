"""What the trainer callbacks cost: the same training run with and without CHG's callback, side by side.

Paths (each round builds every path's model afresh from the same seed, so all paths train the same model on the
same data; only ``trainer.train()`` / ``trainer.fit()`` is timed):

1. **hf_plain** — ``transformers.Trainer.train()`` of a small BERT (``BertConfig``: hidden 64, 2 layers, 4 heads,
   3 classes; random weights, no download) on synthetic token rows (length 32), one epoch, batch 32, AdamW.
2. **hf_chg** — the same with ``chg.integrations.huggingface.CHGCallback`` (ride-along: every training forward's
   logits and features into ``EpochValuer.add_logits``, ``end_epoch`` at the epoch's end). Goal: ≤ 1.05× hf_plain.
3. **lightning_plain** / 4. **lightning_chg** — the same pair for ``lightning.pytorch.Trainer.fit()`` of an MLP
   (784 → 256 → 10) on synthetic 28×28 images, batch 128, SGD (skipped when Lightning is not installed): a 2.7 ms
   training step, the hardest case for a per-batch hook.
5. **lightning_cnn_plain** / 6. **lightning_cnn_chg** — the same pair for the BatchNorm CNN of the experiments
   (``stride_cnn``, width 16: four conv–BatchNorm–ReLU blocks, global pooling, a linear head) on synthetic 28×28
   images, batch 128, SGD: a model of the paper's family.

Rounds: one untimed warm-up round, then ``--rounds`` (≥ 7) rounds, the paths in an order that rotates from round to
round. Times: wall clock (``perf_counter``) and this process's CPU time (``process_time``), one torch thread.
Reported: per-path medians, and each CHG path's ratio to its plain path = the median over rounds of the within-round
ratio (paired). Writes benchmarks/results/callbacks.{json,md} atomically.

Usage: python benchmarks/bench_callbacks.py [--rounds 7] [--threads 1] [--quick]
(quick: a few hundred rows, a tiny model, 2 rounds — a smoke test of every path, not a measurement; written to
callbacks_quick.*, which git ignores)
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from chg.experiments.results import device_name, provenance, write_json_atomic, write_text_atomic  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    """``n`` synthetic token rows of 3 classes (dict items, as a tokenized HuggingFace data set)."""

    def __init__(self, n: int, length: int = 32, vocab: int = 1000):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        width = vocab // 3
        self.ids = self.labels[:, None] * width + torch.randint(0, width, (n, length), generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def hf_run(cfg: dict, data: Tokens, with_chg: bool) -> tuple:
    """Build a fresh BERT and Trainer (untimed), then time ``trainer.train()``: (wall s, CPU s)."""
    from transformers import (BertConfig, BertForSequenceClassification, PrinterCallback, Trainer,
                              TrainingArguments)
    from transformers.utils import logging as hf_logging
    from chg.integrations.huggingface import CHGCallback
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=1000, hidden_size=cfg["hidden"],
                                                     num_hidden_layers=cfg["layers"], num_attention_heads=4,
                                                     intermediate_size=4 * cfg["hidden"], num_labels=3,
                                                     max_position_embeddings=64))
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs=1, per_device_train_batch_size=32,
                             learning_rate=1e-3, use_cpu=True, report_to="none", save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0)
    cb = CHGCallback() if with_chg else None
    trainer = Trainer(model, args, train_dataset=cb.index(data) if cb else data, callbacks=[cb] if cb else None)
    trainer.remove_callback(PrinterCallback)  # no metrics printed at the end
    w0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    w, c = time.perf_counter() - w0, time.process_time() - c0
    if cb is not None:
        assert cb.values.shape == (len(data),)
    return w, c


def lightning_run(cfg: dict, data, with_chg: bool, arch: str = "mlp") -> tuple:
    """Build a fresh LightningModule (``arch``: "mlp" or "cnn") and Trainer (untimed), then time ``trainer.fit()``:
    (wall s, CPU s)."""
    import lightning.pytorch as pl
    import torch.nn.functional as F
    from chg.experiments.models import build_model
    from chg.integrations.lightning import CHGCallback

    class MLP(pl.LightningModule):
        def __init__(self):
            super().__init__()
            if arch == "cnn":
                self.net = build_model("stride_cnn", 10, (1, 28, 28), cfg["cnn_width"])
            else:
                self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, cfg["mlp_width"]),
                                               torch.nn.ReLU(), torch.nn.Linear(cfg["mlp_width"], 10))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    torch.manual_seed(0)
    module = MLP()
    cb = CHGCallback() if with_chg else None
    loader = torch.utils.data.DataLoader(cb.index(data) if cb else data, batch_size=128, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb] if cb else None)
    w0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(module, loader)
    w, c = time.perf_counter() - w0, time.process_time() - c0
    if cb is not None:
        assert cb.values.shape == (len(data),)
    return w, c


def bench(cfg: dict, rounds: int, with_lightning: bool) -> dict:
    tokens = Tokens(cfg["hf_rows"])
    g = torch.Generator().manual_seed(0)
    images = torch.utils.data.TensorDataset(torch.randn(cfg["image_rows"], 1, 28, 28, generator=g),
                                            torch.randint(0, 10, (cfg["image_rows"],), generator=g))
    runs = {"hf_plain": lambda: hf_run(cfg, tokens, False), "hf_chg": lambda: hf_run(cfg, tokens, True)}
    if with_lightning:
        cnn_images = torch.utils.data.Subset(images, range(cfg["cnn_rows"]))
        runs.update({"lightning_plain": lambda: lightning_run(cfg, images, False),
                     "lightning_chg": lambda: lightning_run(cfg, images, True),
                     "lightning_cnn_plain": lambda: lightning_run(cfg, cnn_images, False, "cnn"),
                     "lightning_cnn_chg": lambda: lightning_run(cfg, cnn_images, True, "cnn")})
    paths = list(runs)
    wall = {p: [] for p in paths}
    cpu = {p: [] for p in paths}
    for r in range(rounds + 1):  # round 0: warm-up, not recorded
        for p in paths[r % len(paths):] + paths[:r % len(paths)]:
            w, c = runs[p]()
            if r:
                wall[p].append(w)
                cpu[p].append(c)
    out = {"rounds": rounds, "paths": paths, "seconds_wall": wall, "seconds_cpu": cpu,
           "median_wall_s": {p: statistics.median(wall[p]) for p in paths},
           "median_cpu_s": {p: statistics.median(cpu[p]) for p in paths}, "ratio_wall": {}, "ratio_cpu": {}}
    for p in paths:
        if p.endswith("_chg"):
            base = p.replace("_chg", "_plain")
            out["ratio_wall"][p] = statistics.median(a / b for a, b in zip(wall[p], wall[base]))
            out["ratio_cpu"][p] = statistics.median(a / b for a, b in zip(cpu[p], cpu[base]))
    return out


def render(rep: dict) -> str:
    res, cfg = rep["result"], rep["config"]
    lines = [f"# Cost of the trainer callbacks ({rep['mode']})", "",
             f"HuggingFace: BERT hidden {cfg['hidden']}, {cfg['layers']} layers, {cfg['hf_rows']} synthetic token rows "
             f"(length 32), batch 32, one epoch. Lightning: MLP 784-{cfg['mlp_width']}-10, {cfg['image_rows']} "
             f"synthetic 28×28 images, and the BatchNorm CNN stride_cnn width {cfg.get('cnn_width', '—')}, "
             f"{cfg.get('cnn_rows', '—')} of those images; batch 128, one epoch. Device {rep['device']}, "
             f"{rep['threads']} torch thread(s); load average at start {rep['loadavg_start']}, at end "
             f"{rep['loadavg_end']}; "
             f"{res['rounds']} rounds after a warm-up, paths in rotating order; {rep['date']}. Ratio: median over "
             "rounds of with ÷ without within the round (CPU = this process's CPU time). Made by "
             "`python benchmarks/bench_callbacks.py`.", "",
             "| trainer | without (median wall s) | with CHGCallback (median wall s) | × without (wall) | "
             "× without (CPU) | goal ≤ 1.05 (CPU) |", "|---|---|---|---|---|---|"]
    for p in res["paths"]:
        if not p.endswith("_chg"):
            continue
        base, name = p.replace("_chg", "_plain"), {"hf_chg": "transformers.Trainer (small BERT)",
                                                   "lightning_chg": "lightning.Trainer (MLP, 2.7 ms step)",
                                                   "lightning_cnn_chg": "lightning.Trainer (BatchNorm CNN)"}[p]
        met = "met" if res["ratio_cpu"][p] <= 1.05 else "NOT met"
        lines.append(f"| {name} | {res['median_wall_s'][base]:.3f} | {res['median_wall_s'][p]:.3f} | "
                     f"{res['ratio_wall'][p]:.3f} | {res['ratio_cpu'][p]:.3f} | {met} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--quick", action="store_true", help="tiny models and data, 2 rounds (a smoke test)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    if not args.quick and args.rounds < 7:
        ap.error("--rounds must be >= 7 for a measurement (use --quick for a smoke test)")
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.quick:
        cfg = {"hidden": 16, "layers": 1, "hf_rows": 256, "mlp_width": 32, "image_rows": 512, "cnn_width": 4,
               "cnn_rows": 256}
        rounds = 2
    else:
        cfg = {"hidden": 64, "layers": 2, "hf_rows": 4096, "mlp_width": 256, "image_rows": 60000, "cnn_width": 16,
               "cnn_rows": 12000}
        rounds = args.rounds
    try:
        import lightning  # noqa: F401
        with_lightning = True
    except ImportError:
        with_lightning = False
    rep = {"mode": "quick (smoke run: not a measurement)" if args.quick else "full", "config": cfg,
           "threads": torch.get_num_threads(), "device": device_name("cpu"),
           "loadavg_start": " ".join(open("/proc/loadavg").read().split()[:3]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "provenance": provenance("cpu")}
    rep["result"] = bench(cfg, rounds, with_lightning)
    rep["loadavg_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    name = "callbacks_quick" if args.quick else "callbacks"
    write_json_atomic(args.out / f"{name}.json", rep)
    write_text_atomic(args.out / f"{name}.md", render(rep))
    print(render(rep))
    print(f"wrote {args.out / name}.json and .md")


if __name__ == "__main__":
    main()
