"""Detection table: finding flipped labels with CHG Shapley (Algorithm 1 and ride-along) beside mean training loss,
EL2N, cleanlab (K-fold out-of-sample probabilities) and KNN Shapley — ROC AUC, AP, precision at k, 2-means F1, time.

    python reproduce/detection.py                  # quick scale (digits, 10% and 30% noise, 3 seeds): compute + render
    python reproduce/detection.py --scale smoke    # seconds (what CI runs)
    python reproduce/detection.py --scale medium   # Fashion-MNIST, 54,000-image pool, 10% and 30% noise, 5 seeds;
                                                   # add --threads 1 --shard 0/2 and --shard 1/2 side by side
    python reproduce/detection.py --scale medium --render-only   # reproduce/results/medium/detection/*.json
                                                                 # → figures/medium/detection.md|tex

Presets (smoke | quick | medium | paper) and settings: reproduce/kit/detect.py (``presets``); ``--show`` prints the
resolved preset, ``--set KEY=VALUE`` overrides a field (e.g. ``--set seeds=0,1 --set detection.folds=3``).
"""
import sys

from kit.detect import main

if __name__ == "__main__":
    sys.exit(main())
