"""Table 2: accuracy and time of data-efficient training on subsets (no label noise), all methods × fractions.

    python reproduce/table2.py                 # quick scale on CPU (default without CUDA): compute + render
    python reproduce/table2.py --scale paper   # CIFAR-10/100, Tiny ImageNet, ResNet-18, CUDA; add --shard i/k
    python reproduce/table2.py --render-only   # only turn reproduce/results/table2/*.json into figures/table2.md|tex

Presets and settings: reproduce/selection_common.py (``presets``); override with --set KEY=VALUE.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from selection_common import main  # noqa: E402

N = None
# The paper's Table 2 (ResNet-18, A40), fractions 0.05, 0.1, 0.3, 0.5, 0.7; Full is one number per data set.
PAPER_ACC = {
    "cifar10": {"full": [95.51, N, N, N, N],
                "random": [65.90, 77.36, 89.93, 93.11, 93.87],
                "adaptive_random": [83.26, 88.78, 93.88, 94.77, 94.66],
                "glister": [85.44, 89.92, 91.26, 91.93, 93.04],
                "gradmatch_pb": [85.17, 90.17, 93.93, 94.42, 94.83],
                "chg": [87.15, 90.88, 93.65, 94.51, 94.58],
                "hardness": [54.96, 68.21, 84.18, 87.02, N],
                "gradient": [84.87, 89.95, 93.54, 94.08, N]},
    "cifar100": {"full": [77.56, N, N, N, N],
                 "random": [22.58, 36.51, 62.27, 69.70, 73.04],
                 "adaptive_random": [48.52, 60.58, 72.45, 74.97, 75.70],
                 "glister": [48.25, 64.63, 72.72, 74.00, 75.14],
                 "gradmatch_pb": [50.42, 63.53, 73.79, 75.78, 76.20],
                 "chg": [53.97, 64.46, 72.54, 74.38, 75.71],
                 "hardness": [34.54, 53.11, 66.20, 69.10, N],
                 "gradient": [51.15, 59.73, 70.69, 73.88, N]},
    "tinyimagenet": {"full": [62.43, N, N, N, N],
                     "random": [17.13, 27.70, 45.17, 52.37, 57.89],
                     "adaptive_random": [37.76, 48.50, 58.49, 60.30, 62.18],
                     "glister": [37.17, 48.29, 56.77, 59.13, 61.50],
                     "gradmatch_pb": [38.88, 49.97, 59.79, 61.56, 62.19],
                     "chg": [38.92, 49.00, 58.44, 60.68, 61.80]},
}
PAPER_TIME = {
    "cifar10": {"full": [7745, N, N, N, N], "random": [776, 1140, 1906, 6489, 8708],
                "adaptive_random": [502, 1522, 4037, 6815, 6574], "glister": [1600, 2736, 4713, 11853, 15740],
                "gradmatch_pb": [1308, 2129, 4897, 7661, 9916], "chg": [1383, 1768, 3746, 7356, 9526],
                "hardness": [1191, 1741, 3606, 4878, N], "gradient": [1365, 1933, 2714, 4017, N]},
    "cifar100": {"full": [8082, N, N, N, N], "random": [805, 1645, 3839, 3170, 5859],
                 "adaptive_random": [746, 1358, 3324, 4786, 7166], "glister": [1247, 1885, 4778, 11762, 14611],
                 "gradmatch_pb": [804, 2192, 4077, 6095, 9185], "chg": [1258, 2037, 4706, 7012, 9657],
                 "hardness": [1233, 1836, 3828, 5824, N], "gradient": [1427, 2025, 2730, 4032, N]},
    "tinyimagenet": {"full": [49747, N, N, N, N], "random": [2742, 5184, 15323, 24475, 33910],
                     "adaptive_random": [3451, 5852, 21366, 27659, 37583],
                     "glister": [4382, 7693, 19210, 28289, 36558], "gradmatch_pb": [4455, 6904, 24238, 30814, 51780],
                     "chg": [7077, 9887, 25682, 30762, 38177]},
}

if __name__ == "__main__":
    sys.exit(main("table2", "Table 2: subset training, clean labels", PAPER_ACC, PAPER_TIME))
