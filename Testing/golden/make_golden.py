"""How the golden vectors in this folder were made (run once by hand; the tests only compare).

    .venv/bin/python Testing/golden/make_golden.py OUT_DIR

writes into OUT_DIR (refusing to overwrite anything):

- ``TEST-ONLY-signing-key.pem`` / ``.pub.pem``: an Ed25519 key derived from a public seed. It is a TEST KEY:
  its private half is published here, so a signature by it proves nothing. Never trust it.
- ``core-input.json``: the fixed arguments of ``build_core`` (trace id, time, UIDs, digests, model,
  tolerance).
- ``evidence.json`` and ``evidence.jcs``: an evidence object and its RFC 8785 bytes (``d.evd`` is their
  SHA-256).
- ``core.pae.bin``: the exact bytes the signature covers (DSSE PAE of the canonical core without ``sig``).
- ``core.signed.jcs``: the canonical bytes of the signed core (Ed25519 is deterministic, so this is fixed).
- ``expected.json``: key id, signature, core digest, evidence digest and sizes.
- ``golden.medcert.json``: a sidecar holding that one certificate, written by ``append_certificate``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from medcert.atomic import atomic_write_bytes
from medcert.canonical import canonical_bytes
from medcert.certificate import (
    build_core,
    core_bytes,
    core_digest,
    evidence_digest,
    sign_core,
    signing_payload,
)
from medcert.digests import b64u_sha256
from medcert.keys import key_id
from medcert.sidecar import CertificateRecord, append_certificate

SEED_TEXT = b"medcert golden vectors: TEST-ONLY signing key, never trust it"

EVIDENCE = {
    "input": {"shape": [64, 64, 48], "spacing_mm": [0.7, 0.7, 2.5], "modality": "CT"},
    "model": {"architecture": "unet3d", "parameters": 123456},
    "tolerance": {"logit_abs": 1e-5, "activation_rel": 1e-7},
    "operator": {"note": "Zürich ✓ \"quoted\" \\ tab\t"},
}


def core_input(evd: str) -> dict:
    digests = {name: b64u_sha256(f"golden/{name}".encode()) for name in
               ("src", "inp", "pre", "wts", "trj", "msk", "lgt", "anm", "exp")}
    digests["evd"] = evd
    return {
        "trace_id": "0b5e8a4c-6f1d-4e2a-9c3b-7d8e9f0a1b2c",
        "issued": "2025-01-02T03:04:05Z",
        "study_uid": "2.25.329800735698586629295641978511506172918",
        "series_uid": "2.25.40111478373290263815234593428108426374",
        "digests": digests,
        "model_name": "medcert-unet3d-chest",
        "model_version": "1.0.0",
        "tolerance_id": "chest-ct/cpu-fp32/v1",
    }


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(SEED_TEXT).digest())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    evd = evidence_digest(EVIDENCE)
    args = core_input(evd)
    signed = sign_core(build_core(**args), key)
    blob = core_bytes(signed)
    expected = {
        "kid": key_id(key.public_key()),
        "sig": signed["sig"],
        "core_digest": core_digest(signed),
        "evidence_digest": evd,
        "core_bytes_len": len(blob),
        "payload_type": "application/vnd.medcert.core+json",
    }

    def write(name: str, data: bytes, mode: int = 0o644) -> None:
        atomic_write_bytes(out / name, data, mode=mode)

    write("TEST-ONLY-signing-key.pem", pem, 0o600)
    write("TEST-ONLY-signing-key.pub.pem", pub)
    write("core-input.json", (json.dumps(args, indent=2) + "\n").encode())
    write("evidence.json", (json.dumps(EVIDENCE, indent=2, ensure_ascii=False) + "\n").encode())
    write("evidence.jcs", canonical_bytes(EVIDENCE))
    write("core.pae.bin", signing_payload(signed))
    write("core.signed.jcs", blob)
    write("expected.json", (json.dumps(expected, indent=2) + "\n").encode())
    record = CertificateRecord(core=signed, evidence=EVIDENCE, annotations={"note": "golden vector"})
    append_certificate(out / "golden.medcert.json", record)
    print(f"wrote golden vectors to {out} (signed core {len(blob)} bytes)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_golden.py OUT_DIR")
    main(Path(sys.argv[1]))
