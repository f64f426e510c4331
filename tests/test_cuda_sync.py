"""On CUDA, ride-along's per-batch step never synchronises the host with the device: EpochValuer.add_logits runs
under torch.cuda.set_sync_debug_mode("error") (any synchronising call raises), and end_epoch then gives the values
of the CPU run. Skipped without CUDA."""
import pytest
import torch

import chg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_add_logits_does_not_synchronise_and_values_match_the_cpu():
    g = torch.Generator().manual_seed(0)
    n, C, D, B = 200, 7, 16, 32
    logits, feat = torch.randn(n, C, generator=g), torch.randn(n, D, generator=g)
    y = torch.randint(0, C, (n,), generator=g)
    order = torch.randperm(n, generator=g)
    dev = torch.device("cuda")
    on_gpu = chg.EpochValuer(n)
    batches = [(order[a:a + B].to(dev), logits[order[a:a + B]].to(dev), y[order[a:a + B]].to(dev),
                feat[order[a:a + B]].to(dev)) for a in range(0, n, B)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for idx, z, t, h in batches:
            on_gpu.add_logits(idx, z, t, h, True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    got = on_gpu.end_epoch()
    on_cpu = chg.EpochValuer(n)
    for idx, z, t, h in batches:
        on_cpu.add_logits(idx.cpu(), z.cpu(), t.cpu(), h.cpu(), True)
    torch.testing.assert_close(got, on_cpu.end_epoch(), rtol=1e-6, atol=1e-9)
