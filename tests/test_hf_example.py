"""examples/huggingface.py: a HuggingFace sequence classifier (dict batches, a ModelOutput) valued by value_data.

Oracle: epoch 0 of Algorithm 1 values every row at the initial parameters, so its values must equal Theorem 1
(chg.chg_shapley) on x_i = l_i · ∇_{[W|b]} l_i of the classifier layer, computed by per-sample autograd on a copy
of the untrained model in eval mode.
"""
import copy
import importlib.util
from pathlib import Path

import pytest
import numpy as np
import torch

import chg

pytest.importorskip("transformers")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "huggingface.py"


def _example():
    spec = importlib.util.spec_from_file_location("hf_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _autograd_values(model, data) -> torch.Tensor:
    """Theorem 1 on dense x_i = l_i ∇_{[W|b]} l_i of model.classifier, one row at a time (eval mode)."""
    model.eval()
    layer = model.classifier
    xs = []
    for i in range(len(data)):
        item = data[i]
        inputs = {k: v[None] for k, v in item.items() if k != "labels"}
        logits = model(**inputs).logits  # (1, C)
        loss = torch.nn.functional.cross_entropy(logits.double(), item["labels"][None])
        gw, gb = torch.autograd.grad(loss, (layer.weight, layer.bias))
        xs.append(loss.detach() * torch.cat([gw.double(), gb.double()[:, None]], 1).reshape(-1))
    return chg.chg_shapley(torch.stack(xs))  # (n,)


def test_epoch0_values_equal_per_sample_autograd():
    ex = _example()
    model = ex.build_model()
    data = ex.Tokens(n=24)
    want = _autograd_values(copy.deepcopy(model), data)
    values, valuer = chg.value_data(model, data, epochs=2, batch_size=8, lr=1e-3, return_valuer=True)
    torch.testing.assert_close(valuer.epoch_values[0], want.to(valuer.epoch_values[0]), rtol=1e-4, atol=1e-7)
    assert values.shape == (24,) and bool(np.isfinite(values).all())
    assert not torch.equal(valuer.epoch_values[1], valuer.epoch_values[0])  # the model was trained in between


def test_example_runs_as_written(capsys):
    values = _example().main(epochs=2)
    assert values.shape == (96,) and bool(np.isfinite(values).all())
    assert "lowest-valued rows" in capsys.readouterr().out
