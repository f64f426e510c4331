"""Documents of a language model: CHG Shapley of the texts a small GPT-2 trains on (corrupted ones among them) beside
the per-document loss, its trend and an In-Run-style first-order value — ROC AUC, AP, precision at k, per kind; and
how close ride-along comes to the exact two-sweep values.

    python reproduce/lm_documents.py                  # quick scale (600 documents, 3 seeds): compute + render
    python reproduce/lm_documents.py --scale smoke    # seconds (what CI runs)
    python reproduce/lm_documents.py --render-only    # reproduce/results/quick/lm_documents/*.json
                                                      # → figures/lm_documents.md|tex|png|pdf

Presets (smoke | quick) and settings: reproduce/kit/lm.py (``presets``); the protocol:
chg/experiments/lm_documents.py. ``--show`` prints the resolved preset, ``--set KEY=VALUE`` overrides a field (e.g.
``--set seeds=0 --set run.epochs=4``).
"""
import sys

from kit.lm import main

if __name__ == "__main__":
    sys.exit(main())
