"""`medcert keygen` and `medcert inspect` run as real processes: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_PUB = GOLDEN / "TEST-ONLY-signing-key.pub.pem"
GOLDEN_TID = "0b5e8a4c-6f1d-4e2a-9c3b-7d8e9f0a1b2c"
ENTRY = Path(sys.executable).with_name("medcert")
COMMAND = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "medcert.cli.main"]


def medcert(*args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "MEDCERT_KEY_PASSPHRASE"}
    full_env.update(env or {})
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=120)


def assert_user_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 65, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("medcert: error: ") and fragment in lines[0], lines[0]


@pytest.fixture
def golden_sidecar(tmp_path) -> Path:
    path = tmp_path / "golden.medcert.json"
    shutil.copyfile(GOLDEN / "golden.medcert.json", path)
    return path


# --- keygen -----------------------------------------------------------------------------------------------


def test_keygen_writes_keys_and_prints_key_id(tmp_path):
    from medcert.keys import key_id, load_private_key, load_public_key

    out = tmp_path / "keys"
    proc = medcert("keygen", "--out", out)
    assert proc.returncode == 0, proc.stderr
    priv, pub = out / "signing-key.pem", out / "signing-key.pub.pem"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    kid = key_id(load_public_key(pub))
    assert f"key id:      {kid}" in proc.stdout
    assert str(priv) in proc.stdout and str(pub) in proc.stdout
    assert key_id(load_private_key(priv).public_key()) == kid


def test_keygen_refuses_to_overwrite(tmp_path):
    assert medcert("keygen", "--out", tmp_path).returncode == 0
    before = (tmp_path / "signing-key.pem").read_bytes()
    assert_user_error(medcert("keygen", "--out", tmp_path), "refusing to overwrite existing key file")
    assert (tmp_path / "signing-key.pem").read_bytes() == before


def test_keygen_with_passphrase_from_environment(tmp_path):
    from medcert.keys import load_private_key

    proc = medcert("keygen", "--out", tmp_path, "--passphrase-env", "MY_PASS", env={"MY_PASS": "s3cret"})
    assert proc.returncode == 0, proc.stderr
    assert "encrypted" in proc.stdout
    priv = tmp_path / "signing-key.pem"
    assert b"ENCRYPTED" in priv.read_bytes()
    load_private_key(priv, b"s3cret")


def test_keygen_with_unset_passphrase_variable_is_refused(tmp_path):
    proc = medcert("keygen", "--out", tmp_path / "k", "--passphrase-env", "MEDCERT_TEST_UNSET_VAR")
    assert_user_error(proc, "MEDCERT_TEST_UNSET_VAR")
    assert not (tmp_path / "k" / "signing-key.pem").exists()


def test_keygen_usage_error_without_out():
    proc = medcert("keygen")
    assert proc.returncode == 64 and "--out" in proc.stderr and "Traceback" not in proc.stderr


# --- inspect ----------------------------------------------------------------------------------------------


def test_inspect_text_summary(golden_sidecar):
    proc = medcert("inspect", golden_sidecar)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for fragment in (GOLDEN_TID, "2025-01-02T03:04:05Z", "2.25.329800735698586629295641978511506172918",
                     "medcert-unet3d-chest 1.0.0", "chest-ct/cpu-fp32/v1",
                     "5AI9HpWDubk7qwUf-A_6nqxuTaPDRbmsH8Nnw6bn-r4", "not checked (no --trust given)",
                     "matches d.evd", "src=1ROvoqc4Hy...", "950 bytes", "golden vector"):
        assert fragment in out, fragment


def test_inspect_with_trusted_key_reports_valid(golden_sidecar):
    proc = medcert("inspect", golden_sidecar, "--trust", GOLDEN_PUB)
    assert proc.returncode == 0, proc.stderr
    assert "signature:  VALID" in proc.stdout


def test_inspect_json(golden_sidecar):
    proc = medcert("inspect", golden_sidecar, "--json", "--trust", GOLDEN_PUB)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    expected = json.loads((GOLDEN / "expected.json").read_text())
    (cert,) = doc["certificates"]
    assert cert["trace_id"] == GOLDEN_TID
    assert cert["signature"]["status"] == "valid" and cert["signature"]["key_id"] == expected["kid"]
    assert cert["core_digest"] == expected["core_digest"] and cert["core_bytes"] == 950
    assert cert["evidence_matches"] is True
    assert cert["digests"]["evd"] == expected["evidence_digest"]
    assert cert["model"] == {"name": "medcert-unet3d-chest", "version": "1.0.0"}


def test_inspect_with_other_key_reports_untrusted(golden_sidecar, tmp_path):
    assert medcert("keygen", "--out", tmp_path / "other").returncode == 0
    proc = medcert("inspect", golden_sidecar, "--json", "--trust", tmp_path / "other")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["certificates"][0]["signature"]["status"] == "untrusted"


def test_inspect_flags_tampered_core_and_evidence(golden_sidecar):
    doc = json.loads(golden_sidecar.read_text())
    doc["certificates"][0]["core"]["tol"] = "chest-ct/cpu-fp32/v2"
    golden_sidecar.write_text(json.dumps(doc))
    proc = medcert("inspect", golden_sidecar, "--trust", GOLDEN_PUB)
    assert proc.returncode == 1
    assert "signature:  INVALID" in proc.stdout

    doc["certificates"][0]["core"]["tol"] = "chest-ct/cpu-fp32/v1"
    doc["certificates"][0]["evidence"]["input"]["modality"] = "MR"
    golden_sidecar.write_text(json.dumps(doc))
    proc = medcert("inspect", golden_sidecar, "--json", "--trust", GOLDEN_PUB)
    assert proc.returncode == 1
    cert = json.loads(proc.stdout)["certificates"][0]
    assert cert["signature"]["status"] == "valid" and cert["evidence_matches"] is False
    assert "MISMATCH" in medcert("inspect", golden_sidecar).stdout


def test_inspect_neutralizes_control_characters_in_unsigned_note(golden_sidecar):
    doc = json.loads(golden_sidecar.read_text())
    doc["certificates"][0]["annotations"]["note"] = "ok\x1b[2J\nforged line"
    golden_sidecar.write_text(json.dumps(doc))
    proc = medcert("inspect", golden_sidecar)
    assert proc.returncode == 0
    assert "\x1b" not in proc.stdout and "\nforged line" not in proc.stdout
    assert "ok\\x1b[2J\\nforged line" in proc.stdout


@pytest.mark.parametrize(("content", "fragment"), [
    (None, "file not found"),
    ("{not json", "not valid JSON"),
    ('{"format": "medcert-sidecar/9", "certificates": []}', "is newer or unknown"),
    ('{"format": "medcert-sidecar/1", "format": "x"}', "duplicate key"),
])
def test_inspect_user_errors_are_one_line(tmp_path, content, fragment):
    path = tmp_path / "s.medcert.json"
    if content is not None:
        path.write_text(content)
    assert_user_error(medcert("inspect", path), fragment)


def test_inspect_with_missing_trust_file(golden_sidecar, tmp_path):
    assert_user_error(medcert("inspect", golden_sidecar, "--trust", tmp_path / "none.pub.pem"),
                      "key file not found")
