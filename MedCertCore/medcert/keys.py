"""Ed25519 signing keys: generation (private key 0600), loading, key ids and trust sets."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from medcert.atomic import atomic_write_bytes
from medcert.digests import b64u_sha256
from medcert.errors import KeyFileError, MedCertError
from medcert.fileio import read_limited

PRIVATE_NAME = "signing-key.pem"
PUBLIC_NAME = "signing-key.pub.pem"
MAX_KEY_FILE = 64 * 1024


def key_id(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, unpadded base64url."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b64u_sha256(raw)


def generate_keypair(out_dir: str | Path, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """Write ``signing-key.pem`` (0600, optionally encrypted) and ``signing-key.pub.pem``; never overwrite."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create key folder {out}: {exc.strerror or exc}") from exc
    priv_path, pub_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    for p in (priv_path, pub_path):
        if p.exists():
            raise KeyFileError(f"refusing to overwrite existing key file: {p}")
    key = Ed25519PrivateKey.generate()
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        atomic_write_bytes(priv_path, pem, mode=0o600)
        atomic_write_bytes(pub_path, pub, mode=0o644)
    except MedCertError as exc:
        raise KeyFileError(str(exc)) from exc
    return priv_path, pub_path


def load_private_key(path: str | Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Load an Ed25519 private key; refuses keys readable by group or others."""
    path = Path(path)
    data = read_limited(path, MAX_KEY_FILE, what="key file", error=KeyFileError)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise KeyFileError(f"private key {path} is accessible by others (mode {mode:o}); run chmod 600 on it")
    if passphrase is None and b"ENCRYPTED" in data:
        passphrase = os.environ.get("MEDCERT_KEY_PASSPHRASE", "").encode() or None
        if passphrase is None:
            raise KeyFileError(f"private key {path} is encrypted: set MEDCERT_KEY_PASSPHRASE "
                               "or pass a passphrase")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"cannot load private key {path}: wrong passphrase "
                           "or not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"private key {path} is not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM."""
    path = Path(path)
    data = read_limited(path, MAX_KEY_FILE, what="key file", error=KeyFileError)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"not a PEM public key: {path}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"public key {path} is not an Ed25519 key")
    return key


def load_trusted_keys(paths: Iterable[str | Path]) -> dict[str, Ed25519PublicKey]:
    """Trust set from files and folders (every ``*.pub.pem`` in a folder), keyed by key id."""
    trusted: dict[str, Ed25519PublicKey] = {}
    for p in map(Path, paths):
        files = sorted(p.glob("*.pub.pem")) if p.is_dir() else [p]
        if p.is_dir() and not files:
            raise KeyFileError(f"trust folder holds no *.pub.pem files: {p}")
        for f in files:
            k = load_public_key(f)
            trusted[key_id(k)] = k
    return trusted
