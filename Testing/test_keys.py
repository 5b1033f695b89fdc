"""Signing keys: file modes, passphrases, refusals, key ids, trust sets."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from medcert.digests import b64u
from medcert.errors import KeyFileError
from medcert.keys import (
    PRIVATE_NAME,
    PUBLIC_NAME,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    load_trusted_keys,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_writes_private_0600_and_public(tmp_path):
    priv, pub = generate_keypair(tmp_path / "keys")
    assert (priv.name, pub.name) == (PRIVATE_NAME, PUBLIC_NAME)
    assert mode(priv) == 0o600
    assert mode(pub) & 0o077 == 0o044
    assert b"PRIVATE KEY" in priv.read_bytes() and b"ENCRYPTED" not in priv.read_bytes()
    key = load_private_key(priv)
    assert key_id(key.public_key()) == key_id(load_public_key(pub))
    signature = key.sign(b"payload")
    load_public_key(pub).verify(signature, b"payload")


def test_key_id_is_sha256_of_raw_public_key(tmp_path):
    _, pub = generate_keypair(tmp_path)
    public = load_public_key(pub)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert key_id(public) == b64u(hashlib.sha256(raw).digest())
    assert len(key_id(public)) == 43


@pytest.mark.parametrize("bad_mode", [0o640, 0o604, 0o644, 0o660, 0o700 | 0o004])
def test_private_key_readable_by_others_is_refused(tmp_path, bad_mode):
    priv, _ = generate_keypair(tmp_path)
    priv.chmod(bad_mode)
    with pytest.raises(KeyFileError, match=f"accessible by others \\(mode {bad_mode:o}\\); run chmod 600"):
        load_private_key(priv)
    priv.chmod(0o600)
    load_private_key(priv)


def test_passphrase_round_trip(tmp_path):
    priv, pub = generate_keypair(tmp_path, passphrase=b"correct horse")
    assert b"ENCRYPTED" in priv.read_bytes()
    key = load_private_key(priv, b"correct horse")
    assert key_id(key.public_key()) == key_id(load_public_key(pub))


def test_wrong_passphrase_message(tmp_path):
    priv, _ = generate_keypair(tmp_path, passphrase=b"correct horse")
    with pytest.raises(KeyFileError, match="wrong passphrase") as exc:
        load_private_key(priv, b"battery staple")
    assert str(priv) in str(exc.value) and "\n" not in str(exc.value)


def test_encrypted_key_without_passphrase_uses_environment(tmp_path, monkeypatch):
    priv, pub = generate_keypair(tmp_path, passphrase=b"from env")
    monkeypatch.delenv("MEDCERT_KEY_PASSPHRASE", raising=False)
    with pytest.raises(KeyFileError, match="is encrypted: set MEDCERT_KEY_PASSPHRASE"):
        load_private_key(priv)
    monkeypatch.setenv("MEDCERT_KEY_PASSPHRASE", "from env")
    assert key_id(load_private_key(priv).public_key()) == key_id(load_public_key(pub))
    monkeypatch.setenv("MEDCERT_KEY_PASSPHRASE", "wrong")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(priv)


def test_generate_refuses_to_overwrite(tmp_path):
    priv, pub = generate_keypair(tmp_path)
    before = (priv.read_bytes(), pub.read_bytes())
    with pytest.raises(KeyFileError, match="refusing to overwrite existing key file"):
        generate_keypair(tmp_path)
    assert (priv.read_bytes(), pub.read_bytes()) == before
    priv.unlink()  # only the public half left: still refused, the public key is not replaced
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_keypair(tmp_path)
    assert pub.read_bytes() == before[1] and not priv.exists()


def test_generate_into_a_file_path_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KeyFileError, match="cannot create key folder"):
        generate_keypair(blocker)
    with pytest.raises(KeyFileError, match="cannot create key folder"):
        generate_keypair(blocker / "sub")


def test_load_refusals(tmp_path):
    priv, _ = generate_keypair(tmp_path / "k")
    with pytest.raises(KeyFileError, match="key file not found"):
        load_private_key(tmp_path / "absent.pem")
    with pytest.raises(KeyFileError, match=r"key file .* is a folder, not a file"):
        load_public_key(tmp_path)
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(priv)
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    junk.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_private_key(junk)
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(KeyFileError, match="larger than 65536 bytes"):
        load_public_key(big)


def test_non_ed25519_keys_refused(tmp_path):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    priv = tmp_path / "ec.pem"
    priv.write_bytes(ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    priv.chmod(0o600)
    pub = tmp_path / "ec.pub.pem"
    pub.write_bytes(ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_private_key(priv)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_public_key(pub)


def test_trust_set_from_files_and_folders(tmp_path):
    _, pub_a = generate_keypair(tmp_path / "a")
    _, pub_b = generate_keypair(tmp_path / "b")
    folder = tmp_path / "trust"
    folder.mkdir()
    (folder / "a.pub.pem").write_bytes(pub_a.read_bytes())
    (folder / "b.pub.pem").write_bytes(pub_b.read_bytes())
    kids = {key_id(load_public_key(pub_a)), key_id(load_public_key(pub_b))}
    assert set(load_trusted_keys([folder])) == kids
    assert set(load_trusted_keys([pub_a, pub_b])) == kids
    assert set(load_trusted_keys([pub_a])) == {key_id(load_public_key(pub_a))}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyFileError, match=r"holds no \*\.pub\.pem files"):
        load_trusted_keys([empty])
    with pytest.raises(KeyFileError, match="not found"):
        load_trusted_keys([tmp_path / "missing.pub.pem"])
