"""Value the training images of a timm model (ResNet-18, 10 classes, Fashion-MNIST-sized 1×28×28 inputs) with CHG
Shapley, both ways: ride-along (the training forward passes' factors) and the separate pass (Algorithm 1 exactly:
a no-grad pass at the start of each epoch). No download: random weights and synthetic images (each class a bright
stroke at its own place, plus noise), 1 in 8 labels flipped.

timm classifiers end in an ``nn.Linear`` (``model.fc`` for ResNets, ``model.head`` / ``model.head.fc`` for others),
which chg finds by itself. A head swapped during a valuation (``model.reset_classifier``) is an error, never a
silent switch: see ``own_loop``.

Run:  python examples/timm_model.py
"""
import numpy as np
import timm
import torch
import torch.nn.functional as F

import chg


def images(n: int = 256, seed: int = 0):
    """``n`` 1×28×28 images of 10 classes; returns (x (n, 1, 28, 28) float32, y (n,) int64, flipped rows)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = 0.3 * torch.randn(n, 1, 28, 28, generator=g)
    for c in range(10):  # class c: a bright 6×6 square at its own place on a 4×4 grid (positions 0..9)
        r, col = divmod(c, 4)
        x[y == c, :, 2 + 7 * r:8 + 7 * r, 2 + 7 * col:8 + 7 * col] += 2.0
    flipped = torch.arange(0, n, 8)
    y = y.clone()
    y[flipped] = (y[flipped] + 1) % 10
    return x, y, flipped


def resnet(seed: int = 0):
    torch.manual_seed(seed)
    return timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1)


def own_loop(model, x, y, epochs: int = 2, reset_at=None, lr: float = 0.05):
    """Ride-along in a loop of one's own (what the trainer callbacks do): one tap per epoch, tied to the valuer
    with ``check_head``; ``reset_at=k`` calls ``model.reset_classifier(10)`` before epoch k (an error). Batches of
    32, shuffled by a generator seeded 0; SGD at ``lr``."""
    valuer = chg.EpochValuer(len(y))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(chg.IndexedDataset(torch.utils.data.TensorDataset(x, y)), batch_size=32,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))
    model.train()
    for epoch in range(epochs):
        if epoch == reset_at:
            model.reset_classifier(10)                      # a new, randomly initialised model.fc
        with chg.LastLayerTap(model) as tap:
            valuer.check_head(model, tap.layer)             # the same head as the epochs before, or an error
            for xb, yb, idx in loader:
                logits, feat = tap.read(model(xb))          # (B, 10) with its graph, (B, 512) detached
                valuer.add_logits(idx, logits, yb, feat, tap.bias)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
        valuer.end_epoch()
    return valuer.values()


def main(n: int = 256, epochs: int = 3):
    x, y, flipped = images(n)
    ride = chg.value_data(resnet(), (x, y), epochs=epochs, batch_size=32, lr=1e-3, mode="ride")
    passed = chg.value_data(resnet(), (x, y), epochs=epochs, batch_size=32, lr=1e-3, mode="pass")
    for name, v in (("ride-along", ride), ("separate pass", passed)):
        low = v.suspects(k=len(flipped), threshold=None)
        print(f"{name}: the {len(low)} lowest-valued rows hold {np.isin(low, flipped.numpy()).sum()} of the "
              f"{len(flipped)} flipped labels")
    print("Spearman correlation ride vs pass:",
          round(float(np.corrcoef(np.argsort(np.argsort(ride.values)), np.argsort(np.argsort(passed.values)))[0, 1]),
                3))
    return ride, passed


if __name__ == "__main__":
    main()
