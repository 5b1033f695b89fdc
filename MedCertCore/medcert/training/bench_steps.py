"""``python -m medcert.training.bench_steps``: seconds per training step of each network, in the default
(contiguous) memory layout against channels-last 3-D, and their ratio (the training loop uses channels-last).

One step is forward under the training precision, a mean-square loss, backward and an AdamW update, on the
shapes the shipped recipe trains on; timings are medians of alternating repeats after one warm-up step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}


def step_fn(net: torch.nn.Module, shape: tuple[int, ...], layout: torch.memory_format,
            bf16: bool) -> Callable[[], None]:
    """One training step of ``net`` on a random ``shape`` batch in ``layout``."""
    x = torch.randn(*shape).to(memory_format=layout)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def run() -> None:
        net.to(memory_format=layout)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = net(x).float()
        opt.zero_grad(set_to_none=True)
        y.square().mean().backward()
        opt.step()

    return run


def median_times(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, calls alternating so that drift hits all alike."""
    for fn in fns.values():
        fn()  # warm-up: kernel selection and allocations
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    from medcert.models import build_model
    from medcert.training.config import ADAPTER, NODULE_PATCH, STAGE1_ARCHITECTURE, STAGE1_CONFIG

    ap = argparse.ArgumentParser(prog="python -m medcert.training.bench_steps", description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(STAGE1_ARCHITECTURE, STAGE1_CONFIG)
    cases = (("lung", model.lung, (1, STAGE1_CONFIG["lung"]["in_channels"], *ADAPTER["patch"])),
             ("nodule stage 1", model.nodule, (2, 1, *NODULE_PATCH)),
             ("nodule stage 2", model.nodule, (2, 1, 96, 64, 32)))
    print(f"{args.threads} threads, {args.precision}, median of {args.repeats}")
    for name, net, shape in cases:
        t = median_times({k: step_fn(net, shape, v, args.precision == "bf16") for k, v in LAYOUTS.items()},
                         args.repeats)
        print(f"{name:15s} {'x'.join(map(str, shape)):18s} contiguous {t['contiguous']:.3f} s  "
              f"channels-last {t['channels_last_3d']:.3f} s  ratio {t['contiguous'] / t['channels_last_3d']:.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
