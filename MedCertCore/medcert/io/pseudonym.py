"""Patient pseudonyms: a keyed hash of the patient ID, so certificates never hold the ID in clear.

The key is per site: ``MEDCERT_PSEUDONYM_KEY`` (hex, or standard/url-safe base64, at least 16 bytes) or a
32-byte random key created once, mode 0600, at ``$MEDCERT_HOME/pseudonym.key``
(``MEDCERT_HOME`` defaults to ``~/.local/share/medcert``). The same ID gives the same pseudonym at one
site and unrelated pseudonyms at sites with other keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

from medcert.atomic import atomic_write_bytes
from medcert.digests import b64u
from medcert.errors import KeyFileError, MedCertError

ENV_KEY = "MEDCERT_PSEUDONYM_KEY"
ENV_HOME = "MEDCERT_HOME"
KEY_FILE_NAME = "pseudonym.key"
KEY_BYTES = 32
MIN_KEY_BYTES = 16
PREFIX = "p1:"
_DOMAIN = b"medcert/pseudonym/1\x00"
_HEX = re.compile(r"[0-9a-fA-F]+")


def medcert_home() -> Path:
    """``$MEDCERT_HOME`` or ``~/.local/share/medcert``."""
    env = os.environ.get(ENV_HOME, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "medcert"


def _decode_env_key(text: str) -> bytes:
    text = text.strip()
    if _HEX.fullmatch(text) and len(text) % 2 == 0:
        key = bytes.fromhex(text)
    else:
        padded = (text + "=" * (-len(text) % 4)).encode("ascii", "replace")
        altchars = b"-_" if b"-" in padded or b"_" in padded else None
        try:
            key = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{ENV_KEY} is neither hex nor base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(f"{ENV_KEY} holds {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read pseudonym key {path}: {exc.strerror or exc}") from exc
    if mode & 0o077:
        raise KeyFileError(f"pseudonym key {path} is accessible by others (mode {mode:o}); "
                           "run chmod 600 on it")
    if len(data) != KEY_BYTES:
        raise KeyFileError(f"pseudonym key {path} must hold exactly {KEY_BYTES} bytes, found {len(data)}")
    return data


def site_key() -> bytes:
    """The per-site pseudonym key: from the environment, else the key file (created on first use)."""
    env = os.environ.get(ENV_KEY)
    if env:
        return _decode_env_key(env)
    home = medcert_home()
    path = home / KEY_FILE_NAME
    if path.exists():
        return _read_key_file(path)
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise KeyFileError(f"cannot create {home} for the pseudonym key: {exc.strerror or exc}") from exc
    try:
        atomic_write_bytes(path, secrets.token_bytes(KEY_BYTES), mode=0o600)
    except MedCertError:
        if not path.exists():  # not a race with another process creating it
            raise
    return _read_key_file(path)


def patient_pseudonym(patient_id: str | None, issuer: str | None = None) -> str | None:
    """``'p1:'`` + 22 base64url characters of HMAC-SHA256(site key, issuer, patient ID).

    None for a missing or empty patient ID.
    """
    pid = (patient_id or "").strip()
    if not pid:
        return None
    message = _DOMAIN + (issuer or "").strip().encode("utf-8") + b"\x00" + pid.encode("utf-8")
    mac = hmac.new(site_key(), message, hashlib.sha256).digest()
    return PREFIX + b64u(mac)[:22]
