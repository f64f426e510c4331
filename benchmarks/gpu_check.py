"""The training steps of benchmarks/gpu_check.sh (see there), and its summary.

``--out DIR``: the ResNet-18 epoch time on Fashion-MNIST padded to 32×32 and the noisy-label selection run (ResNet-18,
30% label noise, CHG vs Random at a = 0.1 and 0.3, 15 epochs, R = 5), both through
:func:`chg.experiments.train.train`, into
DIR/train.json. ``--dry-run``: the same steps on the CPU, tiny (a 256-image pool, ResNet-18 of width 4, 2 epochs).
``--summarize``: gathers DIR/steps/*.json, tests.json, core*.json and train.json into DIR/gpu_check.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from chg.experiments.data import DataBundle, Split, load_dataset  # noqa: E402
from chg.experiments.results import atomic_write, provenance, write_json_atomic  # noqa: E402
from chg.experiments.train import TrainConfig, train  # noqa: E402


def pad32(data: DataBundle, n_pool: int | None = None) -> DataBundle:
    """Fashion-MNIST 28×28 → 32×32 by 2 pixels of background on each side (the normalised value of a black pixel);
    ``n_pool``: keep only the first n pool rows (dry run)."""
    background = float(data.train.x.min())

    def pad(s: Split, n=None) -> Split:
        x, y = (s.x, s.y) if n is None else (s.x[:n], s.y[:n])
        return Split(F.pad(x, (2, 2, 2, 2), value=background), y)

    k = n_pool
    return DataBundle(data.name + "_32", pad(data.train, k), pad(data.val, k), pad(data.test, k), data.num_classes,
                      data.kind, data.clean_train_y[:k] if k else data.clean_train_y,
                      data.noisy[:k] if k else data.noisy)


def run_training(out: Path, dry: bool) -> dict:
    device = "cpu" if dry else "cuda"
    if not dry and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device is available (use --dry-run for the CPU smoke run)")
    n_pool = 256 if dry else None
    width = 4 if dry else None
    epochs = 2 if dry else 15
    base = dict(dataset="fashion_mnist", model="resnet18", width=width, batch_size=128, augment_pad=4,
                augment_flip=True, device=device, checkpoint_every=1000)
    rep = {"device": provenance(device)["device"], "dry_run": dry}
    clean = pad32(load_dataset("fashion_mnist", seed=0), n_pool)
    t0 = time.perf_counter()
    m = train(TrainConfig(method="full", fraction=1.0, epochs=1, **base), data=clean).metrics
    rep["resnet18_epoch"] = {"pool": m["pool_size"], "epoch_s": m["train_s"], "wall_s": time.perf_counter() - t0,
                             "test_acc_after_1_epoch": m["test_acc"], "amp_bf16": device == "cuda"}
    noisy = pad32(load_dataset("fashion_mnist", seed=0, noise_rate=0.3), n_pool)
    runs = []
    for fraction in (0.1, 0.3):
        for method in ("chg", "random"):
            t0 = time.perf_counter()
            m = train(TrainConfig(method=method, fraction=fraction, epochs=epochs, select_every=5, noise_rate=0.3,
                                  **base), data=noisy).metrics
            runs.append({"method": method, "fraction": fraction, "epochs": epochs, "test_acc": m["test_acc"],
                         "val_acc": m["val_acc"], "subset_noisy_share": m["subset_noisy_share"],
                         "pool_noisy_share": m["pool_noisy_share"], "train_s": m["train_s"],
                         "select_s": m["select_s"], "wall_s": time.perf_counter() - t0})
            print(json.dumps(runs[-1]), flush=True)
    rep["selection_noise30"] = runs
    write_json_atomic(out / "train.json", rep)
    return rep


def _tests_summary(out: Path) -> dict:
    xml = out / "tests.xml"
    if not xml.is_file():
        return {"junit": None}
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = [{"name": f"{c.get('classname')}::{c.get('name')}", "seconds": float(c.get("time", 0)),
              "outcome": "failed" if c.find("failure") is not None or c.find("error") is not None else
              "skipped" if c.find("skipped") is not None else "passed"} for c in suite.iter("testcase")]
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} | {"cases": cases}


def summarize(out: Path, dry: bool, seconds: int) -> dict:
    steps = {p.stem: json.loads(p.read_text()) for p in sorted((out / "steps").glob("*.json"))}
    rep = {"dry_run": dry, "total_seconds": seconds, "steps": steps, "tests": _tests_summary(out),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **provenance("cpu" if dry else None)}
    for name in ("core_cuda", "core_quick", "core"):
        if (out / f"{name}.json").is_file():
            rep["bench_core_file"] = f"{name}.json"
            break
    if (out / "train.json").is_file():
        rep["train"] = json.loads((out / "train.json").read_text())
    rep["all_ok"] = bool(steps) and all(s["ok"] for s in steps.values())
    write_json_atomic(out / "gpu_check.json", rep)
    lines = [f"# GPU check ({'dry run, CPU' if dry else rep['device']}), {rep['date']}", "",
             f"total {seconds} s; " + ", ".join(f"{k}: {'ok' if s['ok'] else 'FAILED rc ' + str(s['rc'])} "
                                                 f"({s['seconds']} s)" for k, s in steps.items())]
    if "train" in rep:
        e = rep["train"]["resnet18_epoch"]
        lines += ["", f"ResNet-18 epoch on {e['pool']:,} Fashion-MNIST images (32×32): {e['epoch_s']:.1f} s", "",
                  "| method | a | epochs | test acc (%) | noisy share of subset | train s | select s |",
                  "|---|---|---|---|---|---|---|"]
        for r in rep["train"]["selection_noise30"]:
            lines.append(f"| {r['method']} | {r['fraction']} | {r['epochs']} | {r['test_acc']:.2f} | "
                         f"{r['subset_noisy_share']:.3f} | {r['train_s']:.1f} | {r['select_s']:.1f} |")
    atomic_write(out / "gpu_check.md", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--summarize", action="store_true")
    ap.add_argument("--dry-run-flag", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.summarize:
        rep = summarize(args.out, bool(args.dry_run_flag), args.seconds)
        sys.exit(0 if rep["all_ok"] else 1)
    if args.dry_run:
        torch.set_num_threads(1)
    run_training(args.out, args.dry_run)


if __name__ == "__main__":
    main()
