"""Probe the nodule network alone: peak log-odds of every nodule >= 6 mm in a patch centred on it.

    python -m medcert.training.probe_nodules --weights A.safetensors [--weights B.safetensors] \
        --seeds 100000:100030 [--seeds 900000:900030] [--patch 96,64,32]

Phantoms are built as for training (``make_training_case``, training acquisition overrides), so seed ranges of
training runs and held-out seeds can be compared on one distribution. A nodule is *faint* when its median
intensity lies below ``FAINT_HU`` (ground-glass, most part-solid), else *solid*; it is *fired on* when its peak
log-odds is above 0. Fired on about as often on training phantoms as on held-out ones means the network underfits
those nodules; far more often on training phantoms means it overfits. No lung gate, tiling or resampling from
the native grid is involved: the full pipeline is measured by ``medcert.training.evaluate``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from medcert.findings import equivalent_diameter_mm
from medcert.inference.preprocess import PreprocessSpec
from medcert.training.dataset import FAINT_HU, TrainingCase, extract, extract_mask, make_training_case

MIN_DIAMETER_MM = 6.0


@dataclass(frozen=True)
class NoduleProbe:
    seed: int
    diameter_mm: float  # equivalent diameter of the component on the work grid
    faint: bool
    peaks: tuple[float, ...]  # peak log-odds inside the nodule, one per network


def probe_case(case: TrainingCase, nets: list[nn.Module], spec: PreprocessSpec,
               patch: tuple[int, int, int]) -> list[NoduleProbe]:
    """One probe per nodule component of at least ``MIN_DIAMETER_MM`` in ``case``."""
    lo, hi = spec.window
    faint_level = (FAINT_HU - lo) / (hi - lo)
    comp, n = ndimage.label(case.nodule)
    out = []
    for i in range(1, n + 1):
        m = comp == i
        diameter = float(equivalent_diameter_mm(m.sum() * spec.spacing_mm ** 3))
        if diameter < MIN_DIAMETER_MM:
            continue
        centre = np.rint(ndimage.center_of_mass(m)).astype(int)
        x, _ = extract(case, centre, patch)
        inside = extract_mask(m, centre, patch)
        t = torch.from_numpy(np.ascontiguousarray(x[:1][None]))  # the nodule network sees the intensity only
        with torch.no_grad():
            peaks = tuple(float(net(t)[0, 0].numpy()[inside].max()) for net in nets)
        faint = bool(np.median(case.image[m].astype(np.float32)) < faint_level)
        out.append(NoduleProbe(case.seed, round(diameter, 2), faint, peaks))
    return out


def summary_line(probes: list[NoduleProbe], net_index: int) -> str:
    """``faint a/b median x; solid c/d median y`` for one network."""
    parts = []
    for name, faint in (("faint", True), ("solid", False)):
        v = [p.peaks[net_index] for p in probes if p.faint == faint]
        med = f"{np.median(v):.2f}" if v else "n/a"
        parts.append(f"{name} {sum(x > 0 for x in v)}/{len(v)} fired on, median peak {med}")
    return "; ".join(parts)


def _seed_range(text: str) -> range:
    try:
        a, b = (int(s) for s in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP, got {text!r}") from None
    if not 0 <= a < b:
        raise argparse.ArgumentTypeError(f"empty seed range {text!r}")
    return range(a, b)


def _patch(text: str) -> tuple[int, int, int]:
    try:
        p = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y,Z, got {text!r}") from None
    if len(p) != 3 or min(p) < 8:
        raise argparse.ArgumentTypeError(f"expected three sizes of at least 8, got {text!r}")
    return p  # type: ignore[return-value]


def nodule_network(model: torch.nn.Module) -> torch.nn.Module | None:
    """The nodule network of a ``medcert.lungnodule/1`` model, or of a ``/2`` model's stage 1 (None: neither)."""
    net = getattr(model, "stage1", model)
    return getattr(net, "nodule", None)


def main(argv: list[str] | None = None) -> int:
    from medcert.errors import WeightsError
    from medcert.inference import WeightsAdapter
    from medcert.weights import load_weights

    ap = argparse.ArgumentParser(prog="python -m medcert.training.probe_nodules", description=__doc__.splitlines()[0])
    ap.add_argument("--weights", action="append", required=True, help="a lung-nodule weights file (repeatable)")
    ap.add_argument("--seeds", action="append", type=_seed_range, required=True, help="START:STOP (repeatable)")
    ap.add_argument("--patch", type=_patch, default=(96, 64, 32))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets, spec = [], None
    for path in args.weights:
        try:
            adapter = WeightsAdapter.from_weights(load_weights(path))
        except (OSError, WeightsError, ValueError) as e:
            ap.error(f"{path}: {e}")
        net = nodule_network(adapter.network().eval())
        if net is None:
            ap.error(f"{path}: not a lung-nodule model (no nodule network)")
        if spec is not None and adapter.spec != spec:
            ap.error(f"{path}: preprocessing differs from {args.weights[0]}")
        nets.append(net)
        spec = adapter.spec
    assert spec is not None
    for seeds in args.seeds:
        probes = [p for s in seeds for p in probe_case(make_training_case(s, spec), nets, spec, args.patch)]
        for i, path in enumerate(args.weights):
            print(f"seeds {seeds.start}..{seeds.stop - 1} {path}: {summary_line(probes, i)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
