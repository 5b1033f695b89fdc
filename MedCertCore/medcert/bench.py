"""``python -m medcert.bench``: plain vs certified forward, verify vs certify, digest throughput, sizes.

Prints ratios measured in one run on the same volume (timings are medians of alternating repeats);
``--json FILE`` also writes the timings with the model's identity and the machine (read by
``python -m medcert.training.model_card --speed FILE``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class BenchInputs:
    study: Path
    weights: Path
    key: Path
    pub: Path
    sidecar: Path
    labelmap: Path
    trace_id: str
    sidecar_bytes: int


def _study_volume(full_size: bool):
    """A generated chest CT: 512×512×130 at 0.7×0.7×2.5 mm (full) or a small one."""
    from medcert.phantom import generate_chest_ct
    from medcert.volume import Volume

    if not full_size:
        return generate_chest_ct(11, spacing_xy=2.5, thickness=5.0, orientation="lps").volume
    vol = generate_chest_ct(11, spacing_xy=0.7, thickness=2.5, fov_mm=358.4, orientation="lps").volume
    start = max(0, (vol.shape[2] - 130) // 2)  # the central 130 slices: a 512×512×130 chest study
    m = vol.ijk_to_ras.copy()
    m[:3, 3] += start * m[:3, 2]
    return Volume(np.ascontiguousarray(vol.voxels[:, :, start:start + 130]), m, vol.identity)


def prepare_bench_inputs(tmp: Path, *, full_size: bool = False, threads: int | None = None,
                         weights: Path | None = None) -> BenchInputs:
    """Write a study, keys and weights into ``tmp`` and certify once."""
    from medcert.io import write_scalar_nrrd
    from medcert.keys import generate_keypair
    from medcert.models.placeholder import write_placeholder_weights
    from medcert.pipeline import segment_to_files
    from medcert.weights import default_weights_path

    vol = _study_volume(full_size)
    study = write_scalar_nrrd(tmp / "bench-study.nrrd", vol.voxels, vol.ijk_to_ras)
    key, pub = generate_keypair(tmp / "keys")
    weights = weights or default_weights_path() or write_placeholder_weights(tmp / "placeholder.safetensors")
    res = segment_to_files(study, key, tmp / "out", weights_path=weights, threads=threads,
                           audit_db=tmp / "audit.sqlite")
    return BenchInputs(study, Path(weights), key, pub, res.sidecar, res.labelmap, res.trace_id,
                       res.sidecar.stat().st_size)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _cpu_name() -> str:
    """The CPU model as the OS reports it (``platform.processor()`` is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def speed_record(*, model: dict[str, str], shape: tuple[int, ...], spacing: tuple[float, ...], threads: int,
                 timings: dict[str, float], repeats: int) -> dict:
    """What ``--json`` writes: the model measured, the volume, the machine and the timings in seconds."""
    return {"model": model, "volume_shape": [int(n) for n in shape],
            "spacing_mm": [round(float(s), 3) for s in spacing], "threads": int(threads),
            "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "repeats": int(repeats),
            "timings_s": {k: round(float(v), 2) for k, v in timings.items()}}


def main(argv: list[str] | None = None) -> int:
    import torch

    from medcert.atomic import atomic_write_bytes
    from medcert.certificate import core_bytes
    from medcert.inference import WeightsAdapter
    from medcert.inference.engine import sliding_window_logits
    from medcert.inference.fingerprint import TrajectoryRecorder
    from medcert.io import load_volume
    from medcert.pipeline import segment_to_files, verify_files
    from medcert.source_digest import source_digest
    from medcert.weights import load_weights

    ap = argparse.ArgumentParser(prog="python -m medcert.bench")
    ap.add_argument("--full-size", action="store_true", help="512×512×130 study (default: small)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--weights", type=Path, help="weights file (default: the bundled demo model)")
    ap.add_argument("--json", type=Path, help="also write the timings, model identity and machine here")
    args = ap.parse_args(argv)
    if args.weights is not None and not args.weights.is_file():
        ap.error(f"no weights file {args.weights}")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        inp = prepare_bench_inputs(tmp, full_size=args.full_size, threads=args.threads, weights=args.weights)
        vol = load_volume(inp.study)
        w = load_weights(inp.weights)
        adapter = WeightsAdapter.from_weights(w)
        model = adapter.network()
        prep = adapter.preprocess(vol)
        plain, cert = [], []
        for _ in range(args.repeats):  # alternate so drift hits both equally
            plain.append(_median_time(lambda: sliding_window_logits(model, prep.tensor, adapter.patch,
                                                                    adapter.overlap), 1))
            cert.append(_median_time(lambda: sliding_window_logits(
                model, prep.tensor, adapter.patch, adapter.overlap, recorder=TrajectoryRecorder()), 1))
        t_plain, t_cert = statistics.median(plain), statistics.median(cert)
        seg_t, ver_t = [], []
        for _ in range(args.repeats):  # alternate certify and verify as well
            seg_t.append(_median_time(lambda: segment_to_files(
                inp.study, inp.key, tmp / "out", weights_path=inp.weights, threads=args.threads,
                audit_db=tmp / "audit.sqlite"), 1))
            ver_t.append(_median_time(lambda: verify_files(
                inp.study, inp.sidecar, trust=[inp.pub], weights_path=inp.weights, trace_id=inp.trace_id,
                threads=args.threads, audit_db=tmp / "audit.sqlite"), 1))
        t_segment, t_verify = statistics.median(seg_t), statistics.median(ver_t)
        raw = np.asfortranarray(vol.voxels).tobytes(order="F")
        t_src = _median_time(lambda: source_digest(vol), args.repeats)
        t_sha = _median_time(lambda: hashlib.sha256(raw).digest(), args.repeats)
        from medcert.sidecar import read_sidecar

        rec = read_sidecar(inp.sidecar)[0]
        mb = len(raw) / 1e6
        print(f"volume {vol.shape} voxels, model input {tuple(prep.tensor.shape)}, patch {adapter.patch}, "
              f"model {w.name} {w.version}")
        print(f"forward plain        {t_plain:8.3f} s")
        print(f"forward certified    {t_cert:8.3f} s   ratio certified/plain = {t_cert / t_plain:.3f}")
        print(f"segment+certify      {t_segment:8.3f} s")
        print(f"verify (replay)      {t_verify:8.3f} s   ratio verify/certify = {t_verify / t_segment:.3f}")
        print(f"source digest        {mb / t_src:8.0f} MB/s vs hashlib.sha256 {mb / t_sha:.0f} MB/s "
              f"(ratio {t_sha / t_src:.2f})")
        print(f"signed core          {len(core_bytes(rec.core)):8d} bytes")
        print(f"sidecar              {inp.sidecar_bytes:8d} bytes (1 certificate)")
        if args.json:
            rec_json = speed_record(
                model={"name": w.name, "version": w.version, "sha256": w.digest_hex}, shape=vol.shape,
                spacing=vol.spacing, threads=args.threads or torch.get_num_threads(), repeats=args.repeats,
                timings={"forward_plain": t_plain, "forward_certified": t_cert, "segment_certify": t_segment,
                         "verify_replay": t_verify})
            atomic_write_bytes(args.json, (json.dumps(rec_json, indent=1) + "\n").encode(), overwrite=True)
            print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
