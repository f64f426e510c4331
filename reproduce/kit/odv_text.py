"""Table 1 and Figures 1–2: the caption text that states what the records ran on, every fact from the records, and
the authors' notebook's published F1 (reproduce/paper_numbers.txt) that Table 1 prints beside ours."""
from __future__ import annotations

from . import grid, tables
from .odv_presets import EMBED_DATASET

__all__ = ["data_text", "notebook_f1", "settings_line"]


def data_text(recs: list) -> str:
    """What the records' data sets are, for captions: the embedder's settings and facts for :data:`EMBED_DATASET`
    (from the records), '' when no record is on it."""
    emb = [r for r in recs if r["config"]["dataset"] == EMBED_DATASET]
    if not emb:
        return ""
    spec, facts = emb[0]["config"]["embedder"], emb[0]["embedding"]
    return (f"{EMBED_DATASET} = the {facts['dims']} penultimate ReLU features (standardized; units dead on the "
            f"embedder's training images dropped) of chg.experiments.models.ImageMLP "
            f"(784→{spec['hidden']}→{spec['hidden']}→10, "
            f"Adam lr {spec['lr']}, {spec['epochs']} epochs, batch {spec['batch_size']}, seed {spec['seed']}) trained "
            f"on Fashion-MNIST's {facts['embedder_train_points']:,} training images (its test accuracy: "
            f"{facts['embedder_test_accuracy']:.1%}), computed for the {facts['points']:,} test images, from which "
            f"every train/valid/test split is drawn: the embedder saw none of the points valued, validated or tested")


def notebook_f1() -> dict:
    """The authors' notebook's published noisy-label F1 per method (``[table1 notebook f1]`` of
    reproduce/paper_numbers.txt, lines ``method value``): ``{method: f1}``, method keys as in
    kit.odv_presets.LABELS (``influence_subsample`` = opendataval's InfluenceSubsample, not run here).

    Raises:
        ValueError: a line that is not ``method value`` (:func:`kit.tables.paper_numbers`).
    """
    return {method: f1 for method, (f1,) in tables.paper_numbers("table1 notebook f1", keys=1, width=1).items()}


def settings_line(recs: list, scale: str, corrupted: str) -> str:
    """A figure's provenance footer, every fact from the records."""
    def c(key):
        return grid.config_value(recs, key)
    datasets = sorted({r["config"]["dataset"] for r in recs})
    seeds = sorted({r["seed"] for r in recs})
    return (f"{scale} scale; data {', '.join(datasets)}; train/valid/test {c('train_count')}/{c('valid_count')}/"
            f"{c('test_count')}; {float(c('noise_rate')):.0%} {corrupted}; opendataval {c('model')} (Adam, "
            f"{c('epochs')} epochs, batch {c('batch_size')}, lr {c('lr')}); mean over seeds {seeds} ({len(recs)} "
            f"runs); sampler settings as in table1.md" + (
                f"; {EMBED_DATASET}: features of an ImageMLP trained on Fashion-MNIST's 60,000 training images, "
                f"computed for the 10,000 test images the splits are drawn from (details in table1.md)"
                if EMBED_DATASET in datasets else ""))
