"""``medcert train-demo-model``: train the bundled lung/nodule demo model on synthetic phantoms."""

from __future__ import annotations

import argparse
import sys

from medcert.training.config import DENSE_HU, NODULE_PATCH
from medcert.training.dataset import NODULE_MIXES


def _patch(text: str) -> tuple[int, int, int]:
    """``X,Y,Z`` → three positive multiples of 8 (the nodule network's divisor)."""
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or any(d < 8 or d % 8 for d in dims):
        raise argparse.ArgumentTypeError(f"expected three positive multiples of 8 like 96,64,32, got {text!r}")
    return dims  # type: ignore[return-value]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-demo-model",
                       help="train the demo lung + nodule model on synthetic chest CT phantoms (no patient data)")
    p.add_argument("--out", required=True, help="output safetensors file")
    p.add_argument("--seed", type=int, default=0, help="run seed 0..69: phantom seeds 100000+10000*seed+i "
                   "(default 0, as the shipped model)")
    p.add_argument("--minutes", type=float, default=62.0, help="wall-clock budget including phantom generation "
                   "(default 62, as the shipped model)")
    p.add_argument("--steps", type=int, help="fixed number of step pairs (one lung + one nodule step) instead of a "
                   "time budget (machine-independent schedule and data order)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                   help="forward passes under bfloat16 autocast (default; fast on CPUs with AVX512-BF16/AMX) or fp32")
    p.add_argument("--init", help="second stage: start from this trained file (same architecture and config)")
    p.add_argument("--nodule-only", action="store_true", help="train only the nodule network (with --init)")
    p.add_argument("--size-weighting", action="store_true",
                   help="weight each nodule voxel by its nodule's size weight, so small nodules count as much")
    p.add_argument("--detection-weight", type=float, default=0.0,
                   help="add the per-nodule detection loss with this weight (default 0: off)")
    p.add_argument("--lung-nodule-weight", type=float, default=1.0,
                   help="cross-entropy weight of nodule voxels (labelled lung) in the lung network's loss (default 1)")
    p.add_argument("--hard-nodule-weight", type=int, default=1,
                   help="with --size-weighting: multiply the weight of faint and juxtapleural nodules (1-8)")
    p.add_argument("--dense-hu", type=float, default=DENSE_HU,
                   help=f"lung voxels above this HU (not nodule) are the nodule network's hard negatives "
                   f"(default {DENSE_HU:g})")
    p.add_argument("--nodule-mix", choices=NODULE_MIXES, default="default",
                   help="nodule plan of the training phantoms: default (0-6 nodules of 3-30 mm) or hard "
                   "(4-8 nodules of 5-20 mm, the four kinds equally often)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--nodule-patch", type=_patch, default=NODULE_PATCH, metavar="X,Y,Z",
                   help=f"nodule-network training patch, canonical voxels (default {','.join(map(str, NODULE_PATCH))})")
    p.add_argument("--nodule-batch", type=int, default=2, help="nodule patches per step (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medcert.errors import MedCertError
    from medcert.training.config import MAX_RUN_SEED
    from medcert.training.train import TrainConfig, train

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise MedCertError(f"refusing to overwrite existing file: {out} (use --overwrite)")
    if not out.parent.is_dir():
        raise MedCertError(f"output folder does not exist: {out.parent}")
    if not 0 <= args.seed <= MAX_RUN_SEED:
        raise MedCertError(f"--seed must be in 0..{MAX_RUN_SEED}")
    if args.minutes <= 0 or (args.steps is not None and args.steps <= 0) or args.threads < 1 \
            or args.nodule_batch < 1 or not 0 <= args.detection_weight <= 100 \
            or not 0 < args.lung_nodule_weight <= 100 or not 1 <= args.hard_nodule_weight <= 8:
        raise MedCertError("--minutes, --steps, --threads and --nodule-batch must be positive, "
                           "--detection-weight in 0..100, --lung-nodule-weight in (0, 100], "
                           "--hard-nodule-weight in 1..8")
    if args.hard_nodule_weight != 1 and not args.size_weighting:
        raise MedCertError("--hard-nodule-weight needs --size-weighting (it multiplies the size weights)")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise MedCertError("--device cuda requested but CUDA is not available")
    if args.nodule_only and not args.init:
        raise MedCertError("--nodule-only needs --init (the trained file whose nodule network continues)")
    if args.init and not Path(args.init).is_file():
        raise MedCertError(f"--init file not found: {args.init}")
    if not -1000 < args.dense_hu < 500:
        raise MedCertError("--dense-hu must be in (-1000, 500)")
    if not 0 < args.lr < 1:
        raise MedCertError("--lr must be in (0, 1)")
    cfg = TrainConfig(out=out, seed=args.seed, minutes=args.minutes, steps=args.steps, threads=args.threads,
                      device=args.device, precision=args.precision, overwrite=args.overwrite,
                      init=Path(args.init) if args.init else None, nodule_only=args.nodule_only,
                      size_weighting=args.size_weighting, lr=args.lr,
                      nodule_patch=args.nodule_patch, nodule_batch=args.nodule_batch,
                      detection_weight=args.detection_weight, lung_nodule_weight=args.lung_nodule_weight,
                      hard_nodule_weight=args.hard_nodule_weight, dense_hu=args.dense_hu, nodule_mix=args.nodule_mix,
                      lr_min=min(2e-5, args.lr / 50))
    train(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(out)
    return 0
