"""A plain Lightning script with CHG Shapley values ridden along: the three lines marked ``# CHG`` are all that is
added (docs/trainers.md). Data that ships with scikit-learn (the 8×8 digits), 10% of the labels flipped.

Every training row is valued at each epoch from the training steps themselves (no extra pass); ``training_step`` is
unchanged (the callback takes the row index out of the batch before it runs). The values come back as a
``chg.Values``: the lowest are the rows most likely mislabeled.

Run:  python examples/lightning_trainer.py
"""
import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from chg.integrations.lightning import CHGCallback


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def main(epochs: int = 5):
    pl.seed_everything(0, verbose=False)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    flipped = np.random.default_rng(0).choice(len(y), size=len(y) // 10, replace=False)
    y[flipped] = (y[flipped] + 1) % 10                                     # 10% wrong labels
    train_set = TensorDataset(x, y)
    cb = CHGCallback()                                                                   # CHG
    loader = DataLoader(cb.index(train_set), batch_size=64, shuffle=True)                # CHG (cb.index)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])  # CHG (callbacks)
    trainer.fit(Classifier(), loader)
    values = cb.values                                                                   # CHG: a chg.Values
    low = values.suspects(k=len(flipped), threshold=None)
    print(f"the {len(low)} lowest-valued rows hold {np.isin(low, flipped).sum()} of the {len(flipped)} flipped labels")
    return values


if __name__ == "__main__":
    main()
