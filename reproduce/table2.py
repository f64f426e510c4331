"""Table 2: accuracy and time of data-efficient training on subsets (no label noise), all methods × fractions.

    python reproduce/table2.py                 # quick scale on CPU (default without CUDA): compute + render
    python reproduce/table2.py --scale smoke   # every method, seconds (what CI runs)
    python reproduce/table2.py --scale paper   # CIFAR-10/100, Tiny ImageNet, ResNet-18, CUDA; add --shard i/k
    python reproduce/table2.py --render-only   # only reproduce/results/quick/table2/*.json → figures/table2.md|tex

Presets (smoke | quick | paper) and settings: reproduce/kit/selection.py (``presets``); ``--show`` prints the resolved
preset, ``--set KEY=VALUE`` overrides a field (e.g. ``--set train.epochs=50 --set seeds=0,1``). The paper's own
numbers, printed beside ours: reproduce/paper_numbers.txt.
"""
import sys

from kit.selection import main

if __name__ == "__main__":
    sys.exit(main("table2", "Table 2: subset training, clean labels"))
