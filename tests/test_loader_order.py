"""The training order of value_data does not depend on how the rows are held: a TensorDataset (fetched a batch at a
time by chg.loop's fast loader) is shuffled exactly as DataLoader(shuffle=True, generator=seeded) shuffles any
other Dataset (the stream the quick Table 1 records of the OpenDataVal plugin were made with, before 7d36dfb)."""
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import chg
from chg.loop import _indexed_loader


class _Plain(Dataset):
    """The same rows as a TensorDataset, but not one (so value_data takes the generic DataLoader path)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _data(n=150, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_tensor_rows_shuffled_as_dataloader_shuffle():
    x, y = _data()
    fast = _indexed_loader(TensorDataset(x, y), 64, torch.Generator().manual_seed(7))
    ref = DataLoader(TensorDataset(torch.arange(len(y))), batch_size=64, shuffle=True,
                     generator=torch.Generator().manual_seed(7))
    for epoch in range(4):  # each iter() is an epoch: the generator's stream must advance the same way
        got = [b[2].tolist() for b in fast]
        want = [b[0].tolist() for b in ref]
        assert got == want, f"epoch {epoch}: batches differ"


def test_value_data_same_values_for_tensor_and_plain_dataset():
    x, y = _data()

    def run(data):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
        return chg.value_data(model, data, epochs=3, batch_size=32, seed=11, progress=False).values

    a, b = run(TensorDataset(x, y)), run(_Plain(x, y))
    assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))  # same order, same arithmetic: bit for bit
