"""Value every training example of a HuggingFace text classifier with CHG Shapley (Algorithm 1), no download.

A tiny BERT built from a config (random weights, a 100-token vocabulary) stands in for your model, and a toy token
data set for your tokenized one. The items are dicts, as HuggingFace data sets give them (``.with_format("torch")``):
the model's keyword inputs plus ``"labels"``. ``chg.value_data`` trains the model (in place) and values every row
during that one run; the classifier's output layer (``model.classifier``, an ``nn.Linear``) is found by itself.

Run:  python examples/huggingface.py
"""
import torch
from transformers import BertConfig, BertForSequenceClassification

import chg
from chg.report import ValuationReport


class Tokens(torch.utils.data.Dataset):
    """``n`` token sequences; class c draws its tokens from its own third of the vocabulary (a bag-of-words task a
    tiny model learns in a few epochs). The rows in ``flip`` get a wrong label."""

    def __init__(self, n: int = 96, length: int = 12, vocab: int = 100, flip=()):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % 3                                      # (n,) int64, the true classes
        width = (vocab - 1) // 3
        self.input_ids = 1 + self.labels[:, None] * width + torch.randint(0, width, (n, length), generator=g)
        flip = torch.as_tensor(list(flip), dtype=torch.int64)
        self.labels[flip] = (self.labels[flip] + 1) % 3                      # given labels: some wrong

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.input_ids[i], "attention_mask": torch.ones_like(self.input_ids[i]),
                "labels": self.labels[i]}


def build_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3)
    return BertForSequenceClassification(config)


def main(epochs: int = 5):
    model = build_model()
    data = Tokens(flip=range(0, 96, 8))  # 12 of the 96 labels are wrong
    values = chg.value_data(model, data, epochs=epochs, batch_size=16, lr=1e-2)  # (96,) float64, higher = better
    report = ValuationReport.from_values(values, labels=data.labels)
    print("the 12 lowest-valued rows:", report.suspects(k=12, threshold=None).tolist())
    print("rows with a wrong label:  ", list(range(0, 96, 8)))
    return values


if __name__ == "__main__":
    main()
