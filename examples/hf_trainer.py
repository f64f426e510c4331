"""A plain ``transformers.Trainer`` script with CHG Shapley values ridden along: the three lines marked ``# CHG``
are all that is added (docs/trainers.md). No download: a tiny BERT from a config and a toy token data set.

Every training row is valued at each epoch from the training forward passes themselves (no extra pass); the values
come back as a ``chg.Values``: the lowest ones are the rows most likely mislabeled.

Run:  python examples/hf_trainer.py
"""
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from chg.integrations.huggingface import CHGCallback


class Tokens(torch.utils.data.Dataset):
    """``n`` token sequences of 3 classes (class c draws from its own third of the vocabulary); rows 0, 8, 16, ...
    carry a wrong label. Items are dicts, as a tokenized HuggingFace data set gives them."""

    def __init__(self, n: int = 96, length: int = 12):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % 3
        self.input_ids = 1 + self.labels[:, None] * 33 + torch.randint(0, 33, (n, length), generator=g)
        self.labels[::8] = (self.labels[::8] + 1) % 3

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.input_ids[i], "attention_mask": torch.ones_like(self.input_ids[i]),
                "labels": self.labels[i]}


def main(epochs: int = 5):
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=3))
    train_set = Tokens()
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs=epochs, per_device_train_batch_size=16,
                             learning_rate=1e-2, use_cpu=True, report_to="none", save_strategy="no",
                             disable_tqdm=True)
    cb = CHGCallback()                                                                   # CHG
    trainer = Trainer(model, args, train_dataset=cb.index(train_set), callbacks=[cb])    # CHG (index, callbacks)
    trainer.train()
    values = cb.values                                                                   # CHG: a chg.Values
    print("the 12 lowest-valued rows:", sorted(values.suspects(k=12, threshold=None).tolist()))
    print("rows with a wrong label:  ", list(range(0, 96, 8)))
    return values


if __name__ == "__main__":
    main()
