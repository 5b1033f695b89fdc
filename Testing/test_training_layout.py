"""Training in the channels-last 3-D layout: same network function, real optimiser steps, benchmark output."""

import torch
from medcert.models import build_model
from medcert.training.bench_steps import LAYOUTS, main, median_times, step_fn
from medcert.training.config import STAGE1_ARCHITECTURE, STAGE1_CONFIG


def _nodule_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(STAGE1_ARCHITECTURE, STAGE1_CONFIG).nodule.eval()


def test_channels_last_computes_the_same_function():
    net = _nodule_net()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        ref = net(x)
        cl = net.to(memory_format=torch.channels_last_3d)(x.to(memory_format=torch.channels_last_3d))
    assert cl.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(ref, cl.contiguous(), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ref, _nodule_net(1)(x))  # the comparison can tell two networks apart


def test_each_layout_takes_a_real_optimiser_step():
    for layout in LAYOUTS.values():
        net = _nodule_net().train()
        before = [p.detach().clone() for p in net.parameters()]
        step_fn(net, (1, 1, 16, 16, 16), layout, bf16=False)()
        assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
        conv = [p for p in net.parameters() if p.dim() == 5]
        assert conv and all(p.is_contiguous(memory_format=layout) for p in conv)


def test_median_times_alternate_and_count_every_call():
    calls: list[str] = []
    t = median_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] * 4 and set(t) == {"a", "b"} and all(v >= 0 for v in t.values())


def test_benchmark_prints_a_ratio_per_network(capsys):
    assert main(["--threads", "1", "--repeats", "1", "--precision", "fp32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1 threads, fp32")
    rows = [ln for ln in lines[1:] if "ratio" in ln]
    assert [r.split()[0] for r in rows] == ["lung", "nodule", "nodule"]
    assert all(float(r.rsplit("ratio", 1)[1]) > 0 for r in rows)
