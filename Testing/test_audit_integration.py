"""Every action writes its audit entry; one trace_id query brings back the whole decision."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import run_cli, synthetic_ct
from dicom_factory import write_ct_series
from medcert.audit import AuditLog
from medcert.certificate import core_digest
from medcert.sidecar import read_sidecar


def _entries(trace_id: str | None = None, action: str | None = None) -> list:
    with AuditLog.open(os.environ["MEDCERT_AUDIT_DB"]) as log:
        return log.query(trace_id=trace_id, action=action)


def test_one_trace_id_links_certify_export_verify_and_inspect(tmp_path: Path, placeholder_weights: Path) -> None:
    keys = tmp_path / "keys"
    proc = run_cli("keygen", "--out", keys)
    assert proc.returncode == 0, proc.stderr
    assert len(_entries(action="keygen")) == 1
    vox, _m = synthetic_ct((48, 40, 12))
    series = tmp_path / "series"
    write_ct_series(series, vox, spacing=(2.5, 2.5, 4.0))
    proc = run_cli("segment", series, "--key", keys / "signing-key.pem", "--out", tmp_path / "out", "--weights",
                   placeholder_weights, "--dicom-seg", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    tid, sidecar = out["trace_id"], Path(out["sidecar"])
    assert run_cli("verify", series, "--cert", sidecar, "--weights", placeholder_weights, "--trust",
                   keys / "signing-key.pub.pem").returncode == 0
    assert run_cli("inspect", sidecar).returncode == 0

    actions = [e.action for e in _entries(trace_id=tid)]
    assert actions == ["certify", "export", "verify", "inspect"]
    certify_entry = _entries(trace_id=tid, action="certify")[0]
    rec = read_sidecar(sidecar)[0]
    # The certificate and its log entry point at each other.
    assert rec.annotations["audit_anchor"] == certify_entry.entry_hash
    assert certify_entry.digests["core"] == core_digest(rec.core)
    assert _entries(trace_id=tid, action="verify")[0].outcome == "PASS"
    show = run_cli("audit", "show", "--trace-id", tid, "--json")
    assert show.returncode == 0 and tid in show.stdout
    assert run_cli("audit", "verify").returncode == 0


def test_refused_audit_entry_leaves_no_outputs(tmp_path: Path, small_study: Path, keypair,
                                               placeholder_weights: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the audit folder should be")
    out = tmp_path / "out"
    proc = run_cli("segment", small_study, "--key", keypair[0], "--out", out, "--weights", placeholder_weights,
                   env={"MEDCERT_AUDIT_DB": str(blocker / "audit.sqlite"), "MEDCERT_AUDIT_POLICY": "refuse"})
    assert proc.returncode == 65, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("[medcert")]  # progress lines aside
    assert "Traceback" not in proc.stderr and len(errors) == 1 and errors[0].startswith("medcert: error:")
    assert "[medcert" not in proc.stderr or "inference" not in proc.stderr, "the log is checked before inference"
    assert not out.exists() or not any(out.iterdir()), "a refused audit entry must not leave outputs behind"


def test_keygen_refused_by_the_audit_log_removes_the_new_keys(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    proc = run_cli("keygen", "--out", tmp_path / "keys", env={"MEDCERT_AUDIT_DB": str(blocker / "a.sqlite")})
    assert proc.returncode == 65
    assert not (tmp_path / "keys" / "signing-key.pem").exists()


def test_warn_policy_proceeds_and_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    proc = run_cli("keygen", "--out", tmp_path / "keys",
                   env={"MEDCERT_AUDIT_DB": str(blocker / "a.sqlite"), "MEDCERT_AUDIT_POLICY": "warn"})
    assert proc.returncode == 0
    assert "not recorded in the audit log" in proc.stderr
    assert (tmp_path / "keys" / "signing-key.pem").exists()
