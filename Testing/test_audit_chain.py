"""Audit log: entry hashing, chain verification, tamper detection, checkpoints, queries, JSONL exports."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rfc8785
from medcert.audit import GENESIS_HASH, AuditLog, load_anchors, resolve_db_path, verify_jsonl
from medcert.audit.entry import entry_hash_of
from medcert.audit.schema import ENTRY_COLUMNS
from medcert.errors import AuditError
from medcert.keys import generate_keypair, load_trusted_keys

TRACE = "6f1c2a8e-3b4d-4c5e-8f90-123456789abc"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCERT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDCERT_OPERATOR", "dr.tester")
    for var in ("MEDCERT_AUDIT_DB", "MEDCERT_AUDIT_POLICY", "MEDCERT_AUDIT_CHECKPOINT_KEY",
                "MEDCERT_AUDIT_CHECKPOINT_EVERY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    priv, pub = generate_keypair(tmp_path_factory.mktemp("keys"))
    return priv, pub, load_trusted_keys([pub])


@pytest.fixture(scope="module")
def template(tmp_path_factory, keys) -> Path:
    """9 entries: 4 is a correction with every field set, 7 is a signed checkpoint."""
    path = tmp_path_factory.mktemp("tpl") / "audit.sqlite"
    steps = [
        lambda log: log.append("keygen", outcome="issued", operator="site-admin"),
        lambda log: log.append("certify", outcome="issued", trace_id=TRACE, study_uid="1.2.840.1",
                               digests={"core": "Q29yZURpZ2VzdA", "weights": "V2VpZ2h0cw"},
                               details={"model": "unet3d"}),
        lambda log: log.append("verify", outcome="PASS", trace_id=TRACE, study_uid="1.2.840.1"),
        lambda log: log.correct(2, "wrong series selected", details={"note": "re-run ordered"}),
        lambda log: log.append("export", outcome="issued", trace_id=TRACE, study_uid="1.2.840.1"),
        lambda log: log.append("inspect", outcome="PASS", study_uid="1.2.840.2"),
        lambda log: log.checkpoint(keys[0]),
        lambda log: log.append("certify", outcome="issued", trace_id="other-trace", study_uid="1.2.840.2"),
        lambda log: log.append("verify", outcome="FAIL", trace_id="other-trace", study_uid="1.2.840.2"),
    ]
    with pytest.MonkeyPatch.context() as mp, AuditLog.open(path) as log:
        mp.setenv("MEDCERT_OPERATOR", "dr.tester")
        for step in steps:
            step(log)
            time.sleep(0.003)  # distinct millisecond timestamps for the time-range queries
    return path


@pytest.fixture
def db(template, tmp_path) -> Path:
    path = tmp_path / "audit.sqlite"
    shutil.copy(template, path)
    return path


def attacker(path: Path) -> sqlite3.Connection:
    """Raw access as an attacker has it: the append-only triggers dropped."""
    conn = sqlite3.connect(path, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def _body(conn: sqlite3.Connection, seq: int) -> dict:
    """The hashed body of row ``seq`` (JSON columns decoded, entry_hash left out)."""
    row = conn.execute("SELECT * FROM entries WHERE seq = ?", (seq,)).fetchone()
    return {k: (json.loads(v) if k in ("digests", "software", "details") else v)
            for k, v in zip(ENTRY_COLUMNS[:-1], row[:-1], strict=True)}


def verify(path: Path, trusted=None, **kw):
    with AuditLog.open(path, readonly=True) as log:
        return log.verify(trusted, **kw)


# ------------------------------------------------------------------ format and hashing
def test_template_chain_is_valid_with_signed_checkpoint(db, keys):
    report = verify(db, keys[2])
    assert report.ok, report.reason
    assert (report.n_entries, report.n_checkpoints, report.signatures_checked) == (9, 1, True)
    assert report.head_seq == 9


def test_entry_hash_is_sha256_of_rfc8785_bytes_and_chain_starts_at_genesis(db):
    with AuditLog.open(db) as log:
        entries = log.query()
    assert GENESIS_HASH == "A" * 43
    assert base64.urlsafe_b64decode(GENESIS_HASH + "=") == bytes(32)
    assert entries[0].prev_hash == GENESIS_HASH
    for prev, e in itertools.pairwise(entries):
        assert e.prev_hash == prev.entry_hash
    e = entries[1]
    body = {k: v for k, v in e.to_dict().items() if k != "entry_hash"}
    digest = hashlib.sha256(rfc8785.dumps(body)).digest()
    assert e.entry_hash == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert set(body) | {"entry_hash"} == set(ENTRY_COLUMNS)
    assert e.time.endswith("Z") and len(e.time) == 24
    assert [x.seq for x in entries] == list(range(1, 10))


def test_entry_records_operator_host_and_software(db):
    with AuditLog.open(db) as log:
        e = log.get(2)
        admin = log.get(1)
    assert e.operator == "dr.tester" and admin.operator == "site-admin"
    assert e.host and e.software["medcert"] and e.software["python"].count(".") == 2
    assert e.digests == {"core": "Q29yZURpZ2VzdA", "weights": "V2VpZ2h0cw"}


def test_software_versions_do_not_import_torch():
    code = ("import sys; from medcert.audit.identity import software_versions; v = software_versions(); "
            "assert 'torch' not in sys.modules; print(sorted(v))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "medcert" in out.stdout and "python" in out.stdout


def test_triggers_refuse_update_and_delete_and_out_of_chain_inserts(db):
    conn = sqlite3.connect(db, isolation_level=None)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE entries SET outcome = 'PASS' WHERE seq = 9")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM entries WHERE seq = 9")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM checkpoints")
    row = conn.execute("SELECT * FROM entries WHERE seq = 9").fetchone()
    with pytest.raises(sqlite3.DatabaseError, match="extend the chain head"):
        conn.execute(f"INSERT INTO entries VALUES ({','.join('?' * 16)})", (12, *row[1:-1], "x" * 43))
    conn.close()
    assert verify(db).ok


# ------------------------------------------------------------------ tampering
def _edited(col: str, old):
    if col == "seq":
        return old + 100
    if col == "v":
        return 2
    if col in ("digests", "software", "details"):
        return json.dumps({**json.loads(old), "forged": "Zm9yZ2Vk"})
    if col == "corrects":
        return 1 if old is None else old + 1
    if col in ("prev_hash", "entry_hash"):
        return ("B" if old[0] != "B" else "C") + old[1:]
    if col == "time":
        return old[:-2] + ("1Z" if old[-2] != "1" else "2Z")
    return "forged" if old is None else old + "x"


@pytest.mark.parametrize("seq", [1, 4, 9])
@pytest.mark.parametrize("col", ENTRY_COLUMNS)
def test_editing_any_column_of_any_row_is_detected(db, col, seq):
    conn = attacker(db)
    old = conn.execute(f"SELECT {col} FROM entries WHERE seq = ?", (seq,)).fetchone()[0]
    conn.execute(f"UPDATE entries SET {col} = ? WHERE seq = ?", (_edited(col, old), seq))
    conn.close()
    report = verify(db)
    assert not report.ok
    assert report.first_bad_seq == seq, report.reason


def test_editing_and_rehashing_an_entry_breaks_the_next_link(db):
    conn = attacker(db)
    body = _body(conn, 3)
    body["outcome"] = "FAIL"
    conn.execute("UPDATE entries SET outcome = 'FAIL', entry_hash = ? WHERE seq = 3", (entry_hash_of(body),))
    conn.close()
    report = verify(db)
    assert (report.ok, report.first_bad_seq) == (False, 4)
    assert "prev_hash mismatch" in report.reason and "seq 3" in report.reason


def test_deleting_a_row_is_a_seq_gap(db):
    conn = attacker(db)
    conn.execute("DELETE FROM entries WHERE seq = 5")
    conn.close()
    report = verify(db)
    assert (report.ok, report.first_bad_seq) == (False, 5)
    assert "seq gap" in report.reason


def test_swapping_two_rows_is_reported_as_reordering(db):
    conn = attacker(db)
    conn.execute("UPDATE entries SET seq = -2 WHERE seq = 2")
    conn.execute("UPDATE entries SET seq = 2 WHERE seq = 5")
    conn.execute("UPDATE entries SET seq = 5 WHERE seq = -2")
    conn.close()
    report = verify(db)
    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert report.reason.startswith("reordering") and "written as seq 5" in report.reason


def test_forged_row_spliced_into_the_middle_is_detected(db):
    # a forged row spliced into the middle, well formed and linked to its predecessor
    conn = attacker(db)
    conn.execute("UPDATE entries SET seq = -seq WHERE seq >= 5")
    conn.execute("UPDATE entries SET seq = 1 - seq WHERE seq < 0")
    body = _body(conn, 2)
    body.update(seq=5, outcome="PASS", prev_hash=conn.execute("SELECT entry_hash FROM entries WHERE seq = 4")
                .fetchone()[0])
    values = [json.dumps(body[c]) if c in ("digests", "software", "details") else body.get(c)
              for c in ENTRY_COLUMNS[:-1]]
    conn.execute(f"INSERT INTO entries VALUES ({','.join('?' * 16)})", (*values, entry_hash_of(body)))
    conn.close()
    report = verify(db)
    assert (report.ok, report.first_bad_seq) == (False, 6)
    assert "reordering" in report.reason


def test_naive_forged_tail_row_is_detected(db):
    conn = attacker(db)
    row = conn.execute("SELECT * FROM entries WHERE seq = 9").fetchone()
    conn.execute(f"INSERT INTO entries VALUES ({','.join('?' * 16)})", (10, *row[1:-2], "Z" * 43, "Y" * 43))
    conn.close()
    report = verify(db)
    assert (report.ok, report.first_bad_seq) == (False, 10)


def test_truncation_below_a_checkpoint_is_detected(db):
    conn = attacker(db)
    conn.execute("DELETE FROM entries WHERE seq >= 6")
    conn.close()
    report = verify(db)
    assert (report.ok, report.first_bad_seq) == (False, 6)
    assert "truncated below checkpoint" in report.reason


def test_truncation_after_the_last_checkpoint_is_not_detectable_locally(db):
    """Documented limit: entries after the last checkpoint can be cut without a trace."""
    conn = attacker(db)
    conn.execute("DELETE FROM entries WHERE seq >= 8")
    conn.close()
    report = verify(db)
    assert report.ok and report.n_entries == 7


def test_external_anchor_catches_truncation_with_the_checkpoints_removed(db, keys, tmp_path):
    with AuditLog.open(db) as log:
        cp = log.checkpoint(keys[0])
    anchor = tmp_path / "anchor.txt"
    anchor.write_text(f"anchor outside this machine: {json.dumps(cp.to_dict())}\n")
    conn = attacker(db)
    conn.execute("DELETE FROM entries WHERE seq >= 5")
    conn.execute("DELETE FROM checkpoints")
    conn.close()
    assert verify(db, keys[2]).ok  # the local evidence is gone
    report = verify(db, keys[2], anchors=load_anchors(anchor))
    assert (report.ok, report.first_bad_seq) == (False, 5)
    assert "truncated below checkpoint" in report.reason


def test_checkpoint_tampering_is_detected(db, keys, tmp_path):
    _, _, trusted = keys
    conn = attacker(db)
    conn.execute("UPDATE checkpoints SET sig = ? WHERE seq = 7", ("A" * 86,))
    conn.close()
    report = verify(db, trusted)
    assert (report.ok, report.first_bad_seq) == (False, 7)
    assert report.reason == "checkpoint at seq 7: bad checkpoint signature"
    other = load_trusted_keys([generate_keypair(tmp_path / "other")[1]])
    report = verify(db, other)
    assert not report.ok and "not in the trusted set" in report.reason


def test_checkpoint_head_edit_and_checkpoint_removal(db, keys):
    conn = attacker(db)
    conn.execute("UPDATE checkpoints SET head = ? WHERE seq = 7", ("B" * 43,))
    conn.close()
    assert verify(db, keys[2]).reason == "checkpoint at seq 7: bad checkpoint signature"
    assert "does not match" in verify(db).reason  # without keys the (seq, head) pair is still checked
    conn = attacker(db)
    conn.execute("DELETE FROM checkpoints")
    conn.close()
    report = verify(db)
    assert (report.ok, report.first_bad_seq) == (False, 7)
    assert "no signed checkpoint" in report.reason


def _rewrite_from(conn: sqlite3.Connection, start: int, edit: dict) -> None:
    """Rewrite entries from ``start`` on with consistent hashes, as a capable attacker would."""
    prev = conn.execute("SELECT entry_hash FROM entries WHERE seq = ?", (start - 1,)).fetchone()[0]
    for r in conn.execute("SELECT * FROM entries WHERE seq >= ? ORDER BY seq", (start,)).fetchall():
        body = {k: (json.loads(v) if k in ("digests", "software", "details") else v)
                for k, v in zip(ENTRY_COLUMNS[:-1], r[:-1], strict=True)}
        body.update(edit if body["seq"] == start else {}, prev_hash=prev)
        prev = entry_hash_of(body)
        conn.execute("UPDATE entries SET outcome = ?, prev_hash = ?, entry_hash = ? WHERE seq = ?",
                     (body["outcome"], body["prev_hash"], prev, body["seq"]))


def test_rewriting_the_chain_is_caught_by_the_signed_checkpoint(db, keys):
    conn = attacker(db)
    _rewrite_from(conn, 3, {"outcome": "FAIL"})
    conn.close()
    report = verify(db, keys[2])
    assert (report.ok, report.first_bad_seq) == (False, 7)
    assert "does not match" in report.reason


def test_rewrite_resigned_with_a_stolen_key_is_not_detectable_locally(db, keys):
    """Documented limit: whoever holds the checkpoint key can rewrite history and re-sign it."""
    from medcert.audit.checkpoint import sign_checkpoint
    from medcert.keys import load_private_key

    conn = attacker(db)
    _rewrite_from(conn, 3, {"outcome": "FAIL"})
    seq, head, time = conn.execute("SELECT seq, entry_hash, time FROM entries WHERE seq = 7").fetchone()
    cp = sign_checkpoint(load_private_key(keys[0]), seq=seq, head=head, time=time)
    conn.execute("UPDATE checkpoints SET head = ?, sig = ? WHERE seq = 7", (cp.head, cp.sig))
    conn.close()
    assert verify(db, keys[2]).ok


def test_damaged_json_column_is_reported_not_raised(db):
    conn = attacker(db)
    conn.execute("UPDATE entries SET details = '{not json' WHERE seq = 2")
    conn.close()
    report = verify(db)
    assert (report.ok, report.first_bad_seq) == (False, 2) and "malformed" in report.reason
    with AuditLog.open(db) as log, pytest.raises(AuditError, match="seq 2 is malformed"):
        log.query(trace_id=TRACE)


# ------------------------------------------------------------------ corrections and queries
def test_one_query_brings_back_the_whole_decision(db):
    with AuditLog.open(db) as log:
        got = log.query(trace_id=TRACE)
        assert [(e.seq, e.action) for e in got] == [(2, "certify"), (3, "verify"), (4, "correction"),
                                                    (5, "export")]
        fix = got[2]
        assert (fix.corrects, fix.reason, fix.study_uid) == (2, "wrong series selected", "1.2.840.1")
        # a correction of an entry shows up with it even when filtered on something else
        assert [e.seq for e in log.query(action="certify", study_uid="1.2.840.1")] == [2, 4]
        assert [e.seq for e in log.query(action="certify", include_corrections=False)] == [2, 8]
        assert [e.seq for e in log.query(operator="site-admin")] == [1]
        assert [e.seq for e in log.query(study_uid="1.2.840.2", action="verify")] == [9]
        t5 = log.get(5).time
        assert [e.seq for e in log.query(since=t5, until=log.get(7).time)] == [5, 6, 7]
        assert [e.seq for e in log.query(since="2000-01-01", limit=2)] == [1, 2]
        assert log.query(until="2000-01-01T00:00:00+02:00") == []
        with pytest.raises(AuditError, match="not an ISO 8601"):
            log.query(since="yesterday")


def test_corrections_need_a_reason_and_an_existing_earlier_entry(db):
    with AuditLog.open(db) as log:
        with pytest.raises(AuditError, match="reason is required"):
            log.append("correction", outcome="recorded", corrects=2)
        with pytest.raises(AuditError, match="no entry seq 99"):
            log.correct(99, "typo")
        with pytest.raises(AuditError, match="must name the seq"):
            log.append("correction", outcome="recorded", reason="x")
        with pytest.raises(AuditError, match="only a 'correction'"):
            log.append("verify", outcome="PASS", corrects=2)
        assert log.head()[0] == 9


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"action": "Certify!"}, "lower-case word"),
    ({"outcome": ""}, "outcome"),
    ({"trace_id": "a\nb"}, "trace_id"),
    ({"digests": {"core": "not base64url!"}}, "digests"),
    ({"details": {"x": float("nan")}}, "canonical"),
    ({"details": {"blob": "x" * 70_000}}, "limit"),
])
def test_malformed_entries_are_refused_before_writing(db, kwargs, match):
    args = {"action": "certify", "outcome": "issued", **kwargs}
    with AuditLog.open(db) as log:
        with pytest.raises(AuditError, match=match):
            log.append(args.pop("action"), **args)
        assert log.head()[0] == 9


# ------------------------------------------------------------------ opening
def test_location_resolution(tmp_path, monkeypatch):
    assert resolve_db_path() == tmp_path / "home" / "audit.sqlite"
    monkeypatch.setenv("MEDCERT_AUDIT_DB", str(tmp_path / "env.sqlite"))
    assert resolve_db_path() == tmp_path / "env.sqlite"
    assert resolve_db_path(tmp_path / "arg.sqlite") == tmp_path / "arg.sqlite"
    monkeypatch.delenv("MEDCERT_AUDIT_DB")
    monkeypatch.delenv("MEDCERT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "u"))
    assert resolve_db_path() == tmp_path / "u" / ".local" / "share" / "medcert" / "audit.sqlite"


def test_new_log_is_wal_mode_at_the_configured_home(tmp_path):
    with AuditLog.open() as log:
        e = log.append("keygen", outcome="issued")
    path = tmp_path / "home" / "audit.sqlite"
    assert (e.seq, e.prev_hash) == (1, GENESIS_HASH) and path.is_file()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_foreign_files_are_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(AuditError, match="not an SQLite database"):
        AuditLog.open(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(AuditError, match="not a MedCert audit log"):
        AuditLog.open(other)
    with pytest.raises(AuditError, match="no audit log at"):
        AuditLog.open(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()


# ------------------------------------------------------------------ JSON Lines export
def test_export_round_trip_and_independent_reverification(db, keys, tmp_path):
    out = tmp_path / "audit.jsonl"
    with AuditLog.open(db) as log:
        assert log.export_jsonl(out) == (9, 1)
        with pytest.raises(AuditError, match="refusing to overwrite"):
            log.export_jsonl(out)
    report = verify_jsonl(out, keys[2])
    assert report.ok and (report.n_entries, report.n_checkpoints, report.signatures_checked) == (9, 1, True)
    # An external system needs only SHA-256 and RFC 8785 to re-check the chain.
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["medcert_audit_export"] == 1
    prev = "A" * 43
    for line in lines[1:10]:
        e = dict(line["entry"])
        h = e.pop("entry_hash")
        assert e["prev_hash"] == prev
        assert h == base64.urlsafe_b64encode(hashlib.sha256(rfc8785.dumps(e)).digest()).rstrip(b"=").decode()
        prev = h
    assert lines[10]["checkpoint"]["seq"] == 7


def _export_lines(db: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    out = tmp_path / "x.jsonl"
    with AuditLog.open(db) as log:
        log.export_jsonl(out)
    return out, out.read_text().splitlines(keepends=True)


def test_tampered_exports_are_detected(db, keys, tmp_path):
    out, lines = _export_lines(db, tmp_path)

    def check(new_lines, seq, word):
        out.write_text("".join(new_lines))
        report = verify_jsonl(out, keys[2])
        assert (report.ok, report.first_bad_seq) == (False, seq), report.reason
        assert word in report.reason

    edited = lines.copy()
    edited[3] = edited[3].replace('"PASS"', '"FAIL"')
    check(edited, 3, "hash mismatch")
    check(lines[:5] + lines[6:], 5, "seq gap")
    check([*lines[:2], lines[5], lines[3], lines[4], lines[2], *lines[6:]], 2, "reordering")
    check(lines[:6], 6, "header declares")
    check([*lines[:4], "{garbage\n", *lines[5:]], 4, "not valid JSON")
    check(lines[:7] + lines[10:], 7, "truncated below checkpoint")
    sig = json.loads(lines[10])
    sig["checkpoint"]["time"] = "2000-01-01T00:00:00.000Z"
    check([*lines[:10], json.dumps(sig) + "\n"], 7, "bad checkpoint signature")
    out.write_text('{"hello": 1}\n')
    with pytest.raises(AuditError, match="not a MedCert audit export"):
        verify_jsonl(out)
