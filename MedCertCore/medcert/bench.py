"""``python -m medcert.bench``: plain vs certified forward, verify vs certify, digest throughput, sizes.

Prints ratios measured in one run on the same volume (timings are medians of alternating repeats).
"""

from __future__ import annotations

import argparse
import hashlib
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


def prepare_bench_inputs(tmp: Path, *, full_size: bool = False, threads: int | None = None) -> BenchInputs:
    """Write a study, keys and weights into ``tmp`` and certify once."""
    from medcert.io import write_scalar_nrrd
    from medcert.keys import generate_keypair
    from medcert.models.placeholder import write_placeholder_weights
    from medcert.pipeline import segment_to_files
    from medcert.weights import default_weights_path

    vol = _study_volume(full_size)
    study = write_scalar_nrrd(tmp / "bench-study.nrrd", vol.voxels, vol.ijk_to_ras)
    key, pub = generate_keypair(tmp / "keys")
    weights = default_weights_path() or write_placeholder_weights(tmp / "placeholder.safetensors")
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


def main(argv: list[str] | None = None) -> int:
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
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        inp = prepare_bench_inputs(tmp, full_size=args.full_size, threads=args.threads)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
