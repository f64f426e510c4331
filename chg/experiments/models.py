"""Models for the selection experiments. Each ends in one ``nn.Linear`` (the layer whose gradient CHG Shapley uses).

- :class:`ResNet18` — He et al.'s ResNet-18 in the CIFAR form (3×3 stride-1 stem, no max-pool), as in CORDS, for
  32×32 inputs; with ``image_size=64`` the same network serves Tiny ImageNet (the adaptive average pool then sees an
  8×8 map — the common "CIFAR ResNet on 64×64" choice; the paper does not say which variant it used).
- :class:`SmallCNN` — quick scale, 8×8 digits: three 3×3 conv/BN/ReLU blocks, one 2×2 max-pool, global average pool.
- :class:`MLP` — quick scale, tabular data: two hidden ReLU layers.
- :class:`ImageMLP` — medium scale, Fashion-MNIST: the same MLP on the flattened image (784 inputs). Chosen for 2 CPU
  cores: a 3-block conv/BN/ReLU CNN of width 8 (stride-2 stem) took 4× its epoch time on the same machine (15.8 s vs
  3.9 s CPU, one thread, 54,000 images; the current SmallCNN at width 16 ≈ 75 s), which the Tables 2–3 grid cannot
  afford; benchmarks/results/overhead.md has the MLP's epoch time.
"""
from __future__ import annotations

from torch import nn
import torch.nn.functional as F

__all__ = ["BasicBlock", "ResNet18", "SmallCNN", "StrideCNN", "MLP", "ImageMLP", "build_model"]


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3×3 conv/BN layers and a shortcut (a 1×1 conv/BN when the shape changes).

    Args:
        cin, cout: input and output channels. stride: of the first conv (2 halves H and W).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        """The block on a batch.

        Args:
            x: (B, cin, H, W) floating feature maps.
        Returns:
            (B, cout, H/stride, W/stride) feature maps after the final ReLU.
        """
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with a 3×3 stride-1 stem and no max-pool; ``width`` scales the channels (64 = the standard net).

    Args:
        num_classes: C, the outputs of the final ``nn.Linear``. in_channels: of the images. width: channels of the
            first stage (the four stages have width·(1, 2, 4, 8)). image_size: 32 (CIFAR) or 64 (Tiny ImageNet); only
            checked (the adaptive pool takes either).
    Raises:
        ValueError: an ``image_size`` other than 32 or 64.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64, image_size: int = 32):
        super().__init__()
        if image_size not in (32, 64):
            raise ValueError(f"ResNet18 is built for 32×32 (CIFAR) or 64×64 (Tiny ImageNet) inputs, got {image_size}")
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        """The network on a batch.

        Args:
            x: (B, in_channels, H, W) floating inputs.
        Returns:
            (B, num_classes) logits, the output of ``self.linear``.
        """
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.layers(out)).flatten(1)  # (B, 8·width) penultimate features
        return self.linear(out)


class SmallCNN(nn.Module):
    """8×8 grey images → 3 conv blocks (c, 2c, 2c channels) → global average pool → Linear.

    Args:
        num_classes: C. in_channels: of the images. width: c, the channels of the first block.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(block(in_channels, width), block(width, 2 * width), nn.MaxPool2d(2),
                                      block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        """The network on a batch.

        Args:
            x: (B, in_channels, H, W) floating inputs.
        Returns:
            (B, num_classes) logits, the output of ``self.linear``.
        """
        return self.linear(self.features(x))


class StrideCNN(nn.Module):
    """Grey images → three 3×3 stride-2 conv/BN/ReLU blocks (c, 2c, 4c channels) → global average pool → Linear.

    The medium-cnn scale's network (Fashion-MNIST, 28×28 → 14 → 7 → 4): the paper's model family (convolutions,
    BatchNorm, global pooling, one ``nn.Linear`` head) at a size 2 CPU cores can train on 54,000 images many times;
    reproduce/kit/selection.py's medium-cnn preset says what its epoch costs.

    Args:
        num_classes: C. in_channels: of the images. width: c, the channels of the first block.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(block(in_channels, width), block(width, 2 * width), block(2 * width, 4 * width),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        """The network on a batch.

        Args:
            x: (B, in_channels, H, W) floating inputs.
        Returns:
            (B, num_classes) logits, the output of ``self.linear``.
        """
        return self.linear(self.features(x))


class MLP(nn.Module):
    """Tabular rows → two hidden ReLU layers → Linear.

    Args:
        in_features: d, the features of a row. num_classes: C. hidden: units of each hidden layer.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 64):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.linear = nn.Linear(hidden, num_classes)

    def forward(self, x):
        """The network on a batch.

        Args:
            x: (B, in_features) floating inputs.
        Returns:
            (B, num_classes) logits, the output of ``self.linear``.
        """
        return self.linear(self.features(x))


class ImageMLP(MLP):
    """Images (B, C, H, W) flattened to (B, C·H·W) → :class:`MLP` (two hidden ReLU layers of ``hidden``) → Linear.

    Args:
        input_shape: one image's shape, e.g. (1, 28, 28). num_classes: C. hidden: units of each hidden layer.
    """

    def __init__(self, input_shape: tuple, num_classes: int, hidden: int = 128):
        in_features = 1
        for d in input_shape:
            in_features *= int(d)
        super().__init__(in_features, num_classes, hidden)

    def forward(self, x):
        """The network on a batch.

        Args:
            x: (B, *input_shape) floating inputs.
        Returns:
            (B, num_classes) logits, the output of ``self.linear``.
        """
        return super().forward(x.flatten(1))


def build_model(name: str, num_classes: int, input_shape: tuple, width: int | None = None) -> nn.Module:
    """A model of the selection experiments by name.

    Args:
        name: "resnet18", "smallcnn", "stride_cnn", "mlp" or "image_mlp". num_classes: C. input_shape: one sample's
            shape, e.g. (3, 32, 32). width: channels (resnet18, smallcnn, stride_cnn) or hidden units (mlp,
            image_mlp); None: the default.
    Returns:
        the ``nn.Module`` (freshly initialised from the global torch RNG), ending in one ``nn.Linear``.
    Raises:
        ValueError: an unknown name, or "mlp" with a non-flat input shape (and as :class:`ResNet18`).
    """
    if name == "resnet18":
        return ResNet18(num_classes, input_shape[0], width or 64, image_size=input_shape[-1])
    if name == "smallcnn":
        return SmallCNN(num_classes, input_shape[0], width or 32)
    if name == "stride_cnn":
        return StrideCNN(num_classes, input_shape[0], width or 16)
    if name == "mlp":
        if len(input_shape) != 1:
            raise ValueError(f"mlp needs flat (tabular) inputs, got sample shape {input_shape}")
        return MLP(input_shape[0], num_classes, width or 64)
    if name == "image_mlp":
        return ImageMLP(tuple(input_shape), num_classes, width or 128)
    raise ValueError(f"unknown model {name!r}; choose resnet18, smallcnn, stride_cnn, mlp or image_mlp")
