"""Issue 13, kind 1: what model(x) returns. The hooked layer's output is the logits, whether the model returns it, a
tuple, a dict or a HuggingFace ModelOutput; dict batches work; anything else is a clear error. Values against the
oracle (per-sample autograd of the output layer + Theorem 1 on the dense vectors, tests/test_edges_oracle.py)."""
import types

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from test_edges_oracle import close, dense_values

import chg
from chg.lastlayer import LastLayerTap, compute_factors
from chg.loop import value_data
from chg.valuation import EpochValuer, IndexedDataset


class TupleOut(nn.Module):
    """The issue's instance: returns (logits, x)."""

    def __init__(s):
        super().__init__()
        s.f = nn.Linear(3, 2)

    def forward(s, x):
        return s.f(x), x


class DictOut(nn.Module):
    """Another of the kind: a dict holding the logits next to the features, and a list variant."""

    def __init__(self, as_list=False):
        super().__init__()
        self.body, self.head, self.as_list = nn.Sequential(nn.Linear(4, 6), nn.Tanh()), nn.Linear(6, 3), as_list

    def forward(self, x):
        h = self.body(x)
        z = self.head(h)
        return [h, z] if self.as_list else {"features": h, "logits": z}


def _data(n, d, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.arange(n) % c


def test_issue_instance_tuple_output_is_valued_right():
    torch.manual_seed(0)
    model = TupleOut().double()
    x, y = _data(10, 3, 2)
    got = chg.EpochValuer(10).value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4))
    close(got, dense_values(model, model.f, [(x[i:i + 1], y[i:i + 1]) for i in range(10)]))


@pytest.mark.parametrize("as_list", [False, True])
def test_dict_and_list_outputs_in_every_entry_point(as_list):
    torch.manual_seed(1)
    model = DictOut(as_list).double()
    x, y = _data(11, 4, 3, seed=2)
    want = dense_values(model, model.head, [(x[i:i + 1], y[i:i + 1]) for i in range(11)])
    close(chg.EpochValuer(11).value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4)), want)
    close(chg.shapley_from_factors(compute_factors(model, x, y)), want)
    close(chg.shapley_from_factors(compute_factors(model, DataLoader(TensorDataset(x, y), batch_size=3))), want)
    valuer = EpochValuer(11)  # ride-along: the tap reads the model's own output
    with LastLayerTap(model) as tap:
        valuer.add(torch.arange(11), tap.factors(model(x), y), y)
    close(valuer.end_epoch(), want)
    # value_data trains on the logits inside the dict / list; lr = 0 keeps θ, so every epoch equals the oracle
    close(value_data(model, TensorDataset(x, y), epochs=2, lr=0.0, optimizer="sgd", momentum=0.0, batch_size=4),
          want)


def test_post_processed_or_unknown_outputs_are_errors():
    torch.manual_seed(0)
    model = TupleOut().double()
    x, y = _data(6, 3, 2)
    with pytest.raises(ValueError, match="not the output of the hooked"):
        with LastLayerTap(model) as tap:
            z, h = model(x)
            tap.factors((z / 2.0, h), y)  # a temperature inside the tuple
    with pytest.raises(ValueError, match="expected the logits tensor"):
        with LastLayerTap(model) as tap:
            z, _ = model(x)
            tap.factors(types.SimpleNamespace(logits=z), y)

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(3, 2)

        def forward(self, x):
            return "logits: " + str(self.f(x).shape)
    with pytest.raises(ValueError, match="expected the logits tensor"):
        EpochValuer(6).value_epoch(Odd().double(), DataLoader(TensorDataset(x, y), batch_size=4))


class DictRows(Dataset):
    """HuggingFace-style rows: dicts of input_ids, attention_mask, labels."""

    def __init__(self, n, seed=0, vocab=30, length=7, classes=3):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab, (n, length), generator=g)
        self.mask = torch.ones(n, length, dtype=torch.int64)
        self.mask[::2, -2:] = 0
        self.labels = torch.arange(n) % classes

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def _tiny_bert(classes=3):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=16, num_labels=classes)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg).double().eval()


def _bert_oracle(model, rows):
    samples = [({"input_ids": rows.ids[i:i + 1], "attention_mask": rows.mask[i:i + 1]}, rows.labels[i:i + 1])
               for i in range(len(rows))]
    return dense_values(model, model.classifier, samples, call=lambda m, inp: m(**inp))


def test_huggingface_model_output_and_dict_batches():
    """A HuggingFace classifier (tiny BERT from a config, no download) returns a ModelOutput; batches are dicts."""
    model = _tiny_bert()
    rows = DictRows(9)
    want = _bert_oracle(model, rows)
    close(EpochValuer(9).value_epoch(model, DataLoader(rows, batch_size=4)), want)  # sequential: rows in order
    close(EpochValuer(9).value_epoch(model, DataLoader(IndexedDataset(rows), batch_size=4, shuffle=True)), want)
    close(chg.shapley_from_factors(compute_factors(model, DataLoader(rows, batch_size=5))), want)
    values = value_data(model, rows, epochs=1, lr=0.0, optimizer="sgd", momentum=0.0, batch_size=4)
    close(values, want)


def test_dict_batches_need_labels():
    model = _tiny_bert()
    rows = DictRows(4)
    batch = next(iter(DataLoader(rows, batch_size=4)))
    del batch["labels"]
    with pytest.raises(ValueError, match="needs its targets under 'labels'"):
        EpochValuer(4).value_epoch(model, [batch])
    with pytest.raises(ValueError, match="a batch must be"):
        EpochValuer(4).value_epoch(model, [(batch["input_ids"],)])


class TwoHeads(nn.Module):
    """Review 2's model: a classifier head and an auxiliary embedding head on the same features, both returned, the
    embedding head registered last (so the default tap would hook it)."""

    def __init__(self, out="dict"):
        super().__init__()
        self.out = out
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.heads = nn.ModuleDict({"cls": nn.Linear(6, 3), "emb": nn.Linear(6, 5)})

    def forward(self, x):
        h = self.body(x)
        z, e = self.heads["cls"](h), self.heads["emb"](h)
        return {"logits": z, "embedding": e} if self.out == "dict" else (z, e) if self.out == "tuple" else [e, z]


@pytest.mark.parametrize("out", ["dict", "tuple"])
def test_a_second_head_returned_beside_the_logits_is_an_error_not_its_values(out):
    """Review 2: with the embedding head registered last, the tap hooked it, found its output in the returned dict and
    value_data trained and valued that head (the 'logits' head stayed untrained, 44 % accuracy on wine). Now every
    entry point refuses, naming the hooked layer and the fix (layer=), and the classifier head given as layer= is
    valued right."""
    torch.manual_seed(0)
    model = TwoHeads(out).double()
    x, y = _data(12, 4, 3, seed=3)
    match = ("hooked nn.Linear 'heads.emb'.*'embedding' entry.*here 'heads.cls'.*layer=<the output nn.Linear>"
             if out == "dict" else "first tensor.*output of nn.Linear 'heads.cls'.*hooked nn.Linear 'heads.emb'.*"
                                   "element 1.*layer=<the output nn.Linear>")
    with pytest.raises(ValueError, match=match):
        value_data(model, (x, y), epochs=1)
    with pytest.raises(ValueError, match=match):
        EpochValuer(12).value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4))
    with pytest.raises(ValueError, match=match):
        with LastLayerTap(model) as tap:
            tap.read(model(x))
    head = model.heads["cls"]
    want = dense_values(model, head, [(x[i:i + 1], y[i:i + 1]) for i in range(12)])
    close(EpochValuer(12).value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4), layer=head), want)
    close(value_data(model, (x, y), epochs=1, lr=0.0, optimizer="sgd", momentum=0.0, layer=head), want)
    if out == "dict":  # a named layer is held to the 'logits' entry too
        with pytest.raises(ValueError, match="'embedding' entry"):
            with LastLayerTap(model, model.heads["emb"]) as tap:
                tap.read(model(x))


def test_several_tensors_still_read_when_the_hooked_head_gives_the_logits():
    """What keeps working beside the check above: the hooked head's output first in a tuple next to another head's
    (the first tensor is read as the logits), a list [features, logits] (the features are no head's output), and a
    later element when the output layer is named."""
    torch.manual_seed(2)
    x, y = _data(9, 4, 3, seed=4)

    class LogitsFirst(TwoHeads):  # (logits, embedding) with the classifier registered last
        def __init__(self):
            super().__init__("tuple")
            self.heads = nn.ModuleDict({"emb": nn.Linear(6, 5), "cls": nn.Linear(6, 3)})
    model = LogitsFirst().double()
    want = dense_values(model, model.heads["cls"], [(x[i:i + 1], y[i:i + 1]) for i in range(9)])
    close(EpochValuer(9).value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4)), want)
    model = TwoHeads("list").double()  # [embedding, logits]: the classifier named, a later element is fine
    want = dense_values(model, model.heads["cls"], [(x[i:i + 1], y[i:i + 1]) for i in range(9)])
    close(EpochValuer(9).value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4), layer=model.heads["cls"]),
          want)


@pytest.mark.parametrize("final, C, match, keep", [
    (nn.Softmax(1), 3, r"a softmax of the output of the hooked nn.Linear '2'.*a final nn.Softmax.*remove it and train "
                       r"on the logits with F.cross_entropy", True),
    (nn.LogSoftmax(1), 3, r"a log-softmax of the output of the hooked nn.Linear '2'.*a final nn.LogSoftmax.*remove it "
                          r"and train on the logits with F.cross_entropy", False),
    (nn.Sigmoid(), 1, r"a sigmoid of the output of the hooked nn.Linear '2'.*a final nn.Sigmoid.*remove it and train "
                      r"on the logits with F.binary_cross_entropy_with_logits", True)])
def test_a_final_softmax_or_sigmoid_is_named_with_its_fix(final, C, match, keep):
    """Review 2: a model ending in nn.Softmax / nn.LogSoftmax got 'no temperature or other post-processing'. The message
    now names the final activation and says to remove it (train on the logits with cross-entropy), or, for
    probabilities, to read them with output='probabilities' (which exists: LastLayerTap, compute_factors,
    value_epoch)."""
    torch.manual_seed(0)
    x, _ = _data(8, 4, 3, seed=5)
    y = torch.arange(8) % (2 if C == 1 else C)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, C), final).double()
    for run in (lambda: value_data(model, (x, y), epochs=1),
                lambda: EpochValuer(8).value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4))):
        with pytest.raises(ValueError, match=match) as err:
            run()
        assert ("output='probabilities'" in str(err.value)) == keep
        assert "no temperature" not in str(err.value)
    if keep:  # the fix it names works: the probabilities are read as such
        want = dense_values(model, model[2], [(x[i:i + 1], y[i:i + 1]) for i in range(8)])
        close(EpochValuer(8).value_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4),
                                         output="probabilities"), want)


def test_probabilities_that_are_not_the_heads_softmax_say_so():
    """A softmax after a temperature is not the head's softmax: the general message, noting that the rows sum to 1."""
    torch.manual_seed(0)
    x, y = _data(6, 4, 3)

    class Tempered(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(4, 3)

        def forward(self, x):
            return torch.softmax(self.f(x) / 2.0, 1)
    with pytest.raises(ValueError, match=r"no temperature or other post-processing \(its rows sum to 1: probabilities "
                                         r"— a final nn.Softmax\?"):
        EpochValuer(6).value_epoch(Tempered().double(), DataLoader(TensorDataset(x, y), batch_size=3))
