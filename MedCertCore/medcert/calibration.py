"""Tolerance calibration helpers: a one-step fine-tuned model (the smallest honest-looking tamper) and the
legitimate-variant environments. ``python -m medcert.calibration`` prints the per-layer separation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from medcert.weights import build_network, load_weights, save_weights

# Environments that change CPU kernel paths / thread counts on one machine (docs/replay-tolerance.md).
LEGIT_VARIANTS: dict[str, dict[str, str]] = {
    "sse41-1thread": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "avx2-isa-1thread": {"ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"},
}


def finetune_one_step(weights_path: str | Path, out_path: str | Path, *, lr: float = 1e-5, seed: int = 0) -> Path:
    """One Adam step on a random batch: a model an issuer could swap in while claiming the official hash."""
    w = load_weights(weights_path)
    model = build_network(w).train()
    gen = torch.Generator().manual_seed(seed)
    cin = int(w.config.get("in_channels", 1))
    ncls = int(w.config.get("n_classes", 2))
    patch = [min(int(p), 32) for p in w.adapter.get("patch", [32, 32, 32])]
    x = torch.rand((1, cin, *patch), generator=gen)
    y = torch.randint(0, ncls, (1, *patch), generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return save_weights(out_path, model.state_dict(), w.metadata(), overwrite=True)


def _verify_json(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    full = dict(os.environ) | env
    proc = subprocess.run([sys.executable, "-m", "medcert.cli.main", "verify", *args, "--json"],
                          capture_output=True, text=True, env=full, check=False)
    if proc.returncode not in (0, 1, 2):
        raise RuntimeError(proc.stderr.strip())
    return json.loads(proc.stdout)


def separation(study: Path, sidecar: Path, weights: Path, tampered_sidecar: Path, pub: Path) -> dict[str, Any]:
    """Per layer: smallest tamper deviation / largest legitimate deviation."""
    base = [str(study), "--weights", str(weights), "--trust", str(pub)]
    legit: dict[str, float] = {}
    for env in LEGIT_VARIANTS.values():
        rep = _verify_json([*base, "--cert", str(sidecar)], env)
        for layer, d in rep["checks"]["trajectory"]["figures"].get("layers", {}).items():
            legit[layer] = max(legit.get(layer, 0.0), d)
    tam = _verify_json([*base, "--cert", str(tampered_sidecar)], {})
    tamper = tam["checks"]["trajectory"]["figures"].get("layers", {})
    floor = 1e-9  # a bit-identical replay has deviation 0; report the ratio against this floor
    return {layer: {"legit_max": legit.get(layer, 0.0), "tamper": tamper.get(layer),
                    "ratio": (tamper[layer] / max(legit.get(layer, 0.0), floor)) if layer in tamper else None}
            for layer in sorted(set(legit) | set(tamper))}


def main() -> int:
    """Issue a certificate on a generated study, then measure legitimate and tampered deviations."""
    from medcert.bench import prepare_bench_inputs
    from medcert.io import load_volume
    from medcert.keys import load_private_key
    from medcert.sidecar import append_certificate

    with tempfile.TemporaryDirectory() as tmp:
        inputs = prepare_bench_inputs(Path(tmp), full_size=False)
        tuned = finetune_one_step(inputs.weights, Path(tmp) / "finetuned.safetensors")
        rec = dishonest_record(load_volume(inputs.study), tuned, load_weights(inputs.weights).digest,
                               load_private_key(inputs.key))
        bad = append_certificate(Path(tmp) / "dishonest.medcert.json", rec)
        table = separation(inputs.study, inputs.sidecar, inputs.weights, bad, inputs.pub)
    print(f"{'layer':<8} {'legit max':>10} {'tamper':>10} {'ratio':>10}")
    for layer, row in table.items():
        ratio = f"{row['ratio']:.0f}" if row["ratio"] is not None else "-"
        tam = f"{row['tamper']:.2e}" if row["tamper"] is not None else "-"
        print(f"{layer:<8} {row['legit_max']:>10.2e} {tam:>10} {ratio:>10}")
    return 0



def dishonest_record(volume: Any, finetuned: Path, official_digest: str, key: Any) -> Any:
    """Attack simulation: certify with ``finetuned`` weights but claim the official weights digest."""
    from medcert.certificate import evidence_digest, sign_core
    from medcert.certify import certify
    from medcert.sidecar import CertificateRecord

    rec = certify(volume, load_weights(finetuned), key).record
    core = {k: v for k, v in rec.core.items() if k not in ("sig", "kid")}
    core["d"] = dict(core["d"], wts=official_digest, evd=evidence_digest(rec.evidence))
    return CertificateRecord(sign_core(core, key), rec.evidence, {})


if __name__ == "__main__":
    raise SystemExit(main())
