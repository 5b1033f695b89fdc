"""`medcert audit` subcommands: verify, show, export, correct, checkpoint, head; exit codes and messages."""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from medcert.audit import AuditLog, add_audit_db_option
from medcert.cli.main import main
from medcert.keys import generate_keypair

TRACE = "0b9e7f1c-1d2e-4f3a-9b8c-7d6e5f4a3b2c"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCERT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDCERT_OPERATOR", "dr.cli")
    for var in ("MEDCERT_AUDIT_DB", "MEDCERT_AUDIT_POLICY", "MEDCERT_AUDIT_CHECKPOINT_KEY",
                "MEDCERT_AUDIT_CHECKPOINT_EVERY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "audit.sqlite"
    with AuditLog.open(path) as log:
        log.append("keygen", outcome="issued", operator="site-admin")
        log.append("certify", outcome="issued", trace_id=TRACE, study_uid="1.2.3.4",
                   digests={"core": "Q29yZQ"})
        log.append("verify", outcome="PASS", trace_id=TRACE, study_uid="1.2.3.4")
        log.append("certify", outcome="issued", trace_id="other", study_uid="9.8.7")
    return path


@pytest.fixture
def key(tmp_path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["audit", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def tamper(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute(sql)
    conn.close()


def test_verify_ok_and_broken(db, capsys):
    rc, out, err = run(capsys, "verify", "--audit-db", str(db))
    assert rc == 0 and out.startswith("OK: 4 entries, 0 checkpoints")
    assert "truncation of the log cannot be detected" in err
    tamper(db, "UPDATE entries SET outcome = 'FAIL' WHERE seq = 3")
    rc, out, _ = run(capsys, "verify", "--audit-db", str(db))
    assert rc == 1
    assert out.strip() == ("BROKEN at seq 3: hash mismatch: the entry's content does not match its "
                           "entry_hash (entry edited)")
    rc, out, _ = run(capsys, "verify", "--audit-db", str(db), "--json")
    report = json.loads(out)
    assert rc == 1 and (report["ok"], report["first_bad_seq"]) == (False, 3)


def test_verify_in_a_real_process_exit_codes(db, tmp_path):
    cmd = [sys.executable, "-m", "medcert.cli.main", "audit", "verify", "--audit-db", str(db)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    tamper(db, "DELETE FROM entries WHERE seq = 2")
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout.startswith("BROKEN at seq 2: seq gap")
    missing = subprocess.run([*cmd[:-1], str(tmp_path / "none.sqlite")], capture_output=True, text=True)
    assert missing.returncode == 65
    assert missing.stderr.strip() == f"medcert: error: no audit log at {tmp_path / 'none.sqlite'}"


def test_show_filters_and_json(db, capsys):
    rc, out, err = run(capsys, "show", "--audit-db", str(db), "--trace-id", TRACE)
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2 and err.strip() == "2 entries"
    assert lines[0].startswith("#2 ") and "certify" in lines[0] and "core:Q29yZQ" in lines[0]
    rc, out, _ = run(capsys, "show", "--audit-db", str(db), "--study", "9.8.7", "--json")
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["seq"] for r in rows] == [4] and rows[0]["entry_hash"]
    rc, out, _ = run(capsys, "show", "--audit-db", str(db), "--operator", "site-admin")
    assert out.startswith("#1 ")
    with AuditLog.open(db) as log:
        anchor = log.get(3).entry_hash
        assert log.by_hash(anchor).seq == 3 and log.by_hash("A" * 43) is None
    rc, out, _ = run(capsys, "show", "--audit-db", str(db), "--hash", anchor)
    assert [x.split()[0] for x in out.splitlines()] == ["#3"]
    rc, out, _ = run(capsys, "show", "--audit-db", str(db), "--action", "certify", "--since", "2000-01-01",
                     "--until", "2999-01-01T00:00:00Z")
    assert [x.split()[0] for x in out.splitlines()] == ["#2", "#4"]
    rc, out, err = run(capsys, "show", "--audit-db", str(db), "--since", "last week")
    assert rc == 65 and err.count("\n") == 1 and "not an ISO 8601" in err


def test_correct_then_one_query_shows_the_decision(db, capsys):
    rc, out, _ = run(capsys, "correct", "--audit-db", str(db), "--seq", "3", "--reason", "wrong reference")
    assert rc == 0 and "seq 5 (corrects seq 3)" in out
    rc, out, _ = run(capsys, "show", "--audit-db", str(db), "--trace-id", TRACE, "--json")
    rows = [json.loads(x) for x in out.splitlines()]
    assert [(r["seq"], r["action"]) for r in rows] == [(2, "certify"), (3, "verify"), (5, "correction")]
    assert rows[2]["corrects"] == 3 and rows[2]["reason"] == "wrong reference"
    assert rows[2]["operator"] == "dr.cli"
    rc, _, err = run(capsys, "correct", "--audit-db", str(db), "--seq", "42", "--reason", "x")
    assert rc == 65 and "no entry seq 42" in err
    with pytest.raises(SystemExit) as exc:
        main(["audit", "correct", "--audit-db", str(db), "--seq", "3"])
    assert exc.value.code == 64
    capsys.readouterr()


def test_export_and_verify_jsonl(db, tmp_path, capsys):
    out_file = tmp_path / "audit.jsonl"
    rc, out, _ = run(capsys, "export", "--audit-db", str(db), "--out", str(out_file))
    assert rc == 0 and "exported 4 entries and 0 checkpoints" in out
    rc, out, _ = run(capsys, "verify", "--jsonl", str(out_file))
    assert rc == 0 and out.startswith("OK: 4 entries")
    rc, _, err = run(capsys, "export", "--audit-db", str(db), "--out", str(out_file))
    assert rc == 65 and "refusing to overwrite" in err
    lines = out_file.read_text().splitlines(keepends=True)
    out_file.write_text("".join(lines[:2] + lines[3:]))
    rc, out, _ = run(capsys, "verify", "--jsonl", str(out_file))
    assert rc == 1 and out.startswith("BROKEN at seq 2: seq gap")


def test_checkpoint_trust_and_anchor(db, key, tmp_path, capsys):
    priv, pub = key
    rc, out, _ = run(capsys, "checkpoint", "--audit-db", str(db), "--key", str(priv))
    assert rc == 0 and out.startswith("checkpoint seq 5 head ")
    anchor = tmp_path / "anchor.txt"
    anchor.write_text(out.splitlines()[1] + "\n")  # the line a site e-mails or prints
    rc, out, _ = run(capsys, "verify", "--audit-db", str(db), "--trust", str(pub))
    assert rc == 0 and "1 checkpoint (signatures verified)" in out
    stranger = generate_keypair(tmp_path / "k2")[1]
    rc, out, _ = run(capsys, "verify", "--audit-db", str(db), "--trust", str(stranger))
    assert rc == 1 and "not in the trusted set" in out
    tamper(db, "DELETE FROM entries WHERE seq >= 4")
    rc, out, _ = run(capsys, "verify", "--audit-db", str(db), "--trust", str(pub))
    assert rc == 1 and out.startswith("BROKEN at seq 4: truncated below checkpoint")
    tamper(db, "DELETE FROM checkpoints")
    rc, out, _ = run(capsys, "verify", "--audit-db", str(db), "--trust", str(pub))
    assert rc == 0  # local evidence removed: only the external anchor tells
    rc, out, _ = run(capsys, "verify", "--audit-db", str(db), "--trust", str(pub), "--anchor", str(anchor))
    assert rc == 1 and "truncated below checkpoint" in out
    rc, _, err = run(capsys, "checkpoint", "--audit-db", str(db), "--key", str(tmp_path / "nokey.pem"))
    assert rc == 65 and "key file not found" in err


def test_head_env_location_and_usage(db, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDCERT_AUDIT_DB", str(db))
    rc, out, _ = run(capsys, "head")
    with AuditLog.open(db) as log:
        seq, h = log.head()
    assert rc == 0 and f"head seq {seq} entry_hash {h}" in out
    rc, _, err = run(capsys)
    assert rc == 64 and "verify" in err
    rc, _, err = run(capsys, "verify", "--trust", str(tmp_path / "missing.pub.pem"))
    assert rc == 65 and err.count("\n") == 1 and "key file not found" in err


def test_add_audit_db_option_for_other_commands(tmp_path):
    parser = argparse.ArgumentParser()
    add_audit_db_option(parser)
    assert parser.parse_args([]).audit_db is None
    target = str(tmp_path / "x.sqlite")
    assert parser.parse_args(["--audit-db", target]).audit_db == target
