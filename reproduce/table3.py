"""Table 3: subset training under 30% label noise (exactly 30% of the pool's labels changed to another class,
drawn uniformly; validation and test labels clean — see chg.experiments.data.add_label_noise for how this differs from
the
official code).

    python reproduce/table3.py                 # quick scale on CPU (default without CUDA): compute + render
    python reproduce/table3.py --scale smoke   # every method, seconds (what CI runs)
    python reproduce/table3.py --scale paper   # CIFAR-10/100, ResNet-18, CUDA; add --shard i/k
    python reproduce/table3.py --render-only

Presets (smoke | quick | paper) and settings: reproduce/kit/selection.py (``presets``); ``--show`` prints the resolved
preset, ``--set KEY=VALUE`` overrides a field (e.g. ``--set train.epochs=50 --set seeds=0,1``). The paper's own
numbers, printed beside ours: reproduce/paper_numbers.txt.
"""
import sys

from kit.selection import main

if __name__ == "__main__":
    sys.exit(main("table3", "Table 3: subset training, 30% label noise"))
