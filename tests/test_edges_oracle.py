"""The independent oracle of the edge-case tests (issue 13), and a check of it.

``dense_players`` builds each player's vector :math:`x_i = w_i \\nabla_\\theta l_i` by per-sample autograd of the output
layer's parameters (batch of one, the layer's output captured by a plain forward hook written here, not chg's tap),
with the loss a user would train with: cross-entropy for C ≥ 2 logits, BCEWithLogits for one. Its values are Theorem 1
on those dense vectors (``chg.chg_shapley``, itself checked against enumeration in proofs/), or enumeration directly.
"""
import torch
import torch.nn.functional as F

import chg


def dense_players(model, layer, samples, weighting="chg", gradient="full", call=None, weight=None,
                  label_smoothing=0.0):
    """(n, P) float64 dense vectors x_i by per-sample autograd; ``samples``: [(inputs of one row, target (1,))].
    ``weight`` / ``label_smoothing``: F.cross_entropy's, per sample (reduction="none": l_i, not l_i / w_{y_i})."""
    call = call or (lambda m, inp: m(inp))
    rows = []
    for inp, y in samples:
        cap = {}
        handle = layer.register_forward_hook(lambda m, i, o: cap.__setitem__("z", o))
        try:
            call(model, inp)
        finally:
            handle.remove()
        z = cap["z"]
        if z.shape[1] == 1:
            loss = F.binary_cross_entropy_with_logits(z[:, 0], y.reshape(-1).to(z.dtype))
        else:
            loss = F.cross_entropy(z, y.reshape(-1).long(), weight=weight, label_smoothing=label_smoothing,
                                   reduction="none").sum()
        params = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
        grads = torch.autograd.grad(loss, params)
        if gradient == "bias":
            g = grads[1]
        elif layer.bias is not None:
            g = torch.cat([grads[0], grads[1][:, None]], 1)
        else:
            g = grads[0]
        w = loss.detach() if weighting == "chg" else 1.0
        rows.append((w * g).reshape(-1).double())
    return torch.stack(rows)


def dense_values(model, layer, samples, weighting="chg", gradient="full", call=None, groups=None, weight=None,
                 label_smoothing=0.0):
    """Theorem 1 on the dense vectors (per group if ``groups``)."""
    xs = dense_players(model, layer, samples, weighting, gradient, call, weight, label_smoothing)
    if groups is None:
        return chg.chg_shapley(xs)
    out = torch.empty(xs.shape[0], dtype=torch.float64)
    for g in torch.as_tensor(groups).unique().tolist():
        m = torch.as_tensor(groups) == g
        out[m] = chg.chg_shapley(xs[m])
    return out


def enumerate_mean_game(a):
    """Shapley values of V(S) = mean of a over S (V(∅) = 0) by enumerating every subset (chg.exact_shapley)."""
    a = [float(v) for v in a]
    return torch.tensor(chg.exact_shapley(lambda S: sum(a[i] for i in S) / len(S) if S else 0.0, len(a)),
                        dtype=torch.float64)


def close(got, want, rtol=1e-10):
    got = got.to_tensor() if isinstance(got, chg.Values) else got
    torch.testing.assert_close(got.double().cpu(), want.double().cpu(), rtol=rtol,
                               atol=rtol * max(1e-3, float(want.abs().max())))


def test_oracle_matches_enumeration_of_the_chg_game():
    """The oracle's Theorem 1 step against exhaustive enumeration of U(S) = ‖α‖² − ‖x̄_S − α‖²."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    got = chg.chg_shapley(x)
    a = x.mean(0)

    def utility(S):
        return 0.0 if not S else float(a @ a - ((x[list(S)].mean(0) - a) ** 2).sum())
    close(got, torch.tensor(chg.exact_shapley(utility, 6), dtype=torch.float64), rtol=1e-12)
    close(enumerate_mean_game([1.0, 2.0, 4.0]), chg.hardness_shapley(torch.tensor([1.0, 2.0, 4.0]).double()))
