"""Audit log under stress: concurrent writers, SIGKILL, full disk, read-only storage, locks, failure policy.

Failures are produced for real: ENOSPC on a tiny tmpfs and EROFS on a read-only bind mount (both inside a
private user+mount namespace made with ``unshare``; skipped where the kernel forbids it), an unprivileged
user (``setpriv``, when the tests run as root, where chmod alone does not stop writes), SQLite's own
SQLITE_FULL through ``PRAGMA max_page_count``, and a path whose folder is a regular file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from functools import cache
from pathlib import Path

import pytest
from medcert.audit import AuditLog, AuditStorageError, record
from medcert.errors import AuditError
from medcert.keys import generate_keypair, load_trusted_keys

PY = sys.executable


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCERT_HOME", str(tmp_path / "home"))
    for var in ("MEDCERT_AUDIT_DB", "MEDCERT_AUDIT_POLICY", "MEDCERT_AUDIT_CHECKPOINT_KEY",
                "MEDCERT_AUDIT_CHECKPOINT_EVERY", "MEDCERT_OPERATOR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    priv, pub = generate_keypair(tmp_path_factory.mktemp("keys"))
    return priv, pub, load_trusted_keys([pub])


@cache
def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs "$d" && umount "$d"; rc=$?; rmdir "$d"; ' \
            'exit $rc'
    return subprocess.run(["unshare", "-Urm", "sh", "-c", probe], capture_output=True).returncode == 0


needs_unshare = pytest.mark.skipif(not _can_unshare(), reason="no user+mount namespaces here (unshare -Urm)")


def _in_namespace(setup: str, code: str, **env: str) -> dict:
    """Run ``code`` with Python in a private mount namespace after the shell ``setup``; return its JSON."""
    environ = {**os.environ, **env, "AUDIT_CODE": textwrap.dedent(code)}
    script = f'{setup} && exec "{PY}" -c "$AUDIT_CODE"'
    out = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, env=environ,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ concurrency
WRITER = """
import sys
from medcert.audit import AuditLog
path, worker, n, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with AuditLog.open(path, checkpoint_key=key, checkpoint_every=50) as log:
    for i in range(n):
        log.append("certify", outcome="issued", trace_id=f"{worker}-{i:04d}", details={"i": i})
"""


def test_three_processes_append_200_each_into_one_chain(tmp_path, keys):
    path = tmp_path / "audit.sqlite"  # created by whichever writer comes first
    t0 = time.perf_counter()
    procs = [subprocess.Popen([PY, "-c", WRITER, str(path), f"w{w}", "200", str(keys[0])]) for w in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    elapsed = time.perf_counter() - t0
    with AuditLog.open(path, readonly=True) as log:
        report = log.verify(keys[2])
        entries = log.query(action="certify")
        all_seqs = [e.seq for e in log.query()]
    assert report.ok, report.reason
    assert len(entries) == 600 and report.n_checkpoints >= 11
    assert all_seqs == list(range(1, report.n_entries + 1))
    assert report.n_entries == 600 + report.n_checkpoints
    for w in range(3):
        mine = [e for e in entries if e.trace_id.startswith(f"w{w}-")]
        assert [e.details["i"] for e in mine] == list(range(200))  # none lost, order kept per writer
    print(f"\n3x200 concurrent appends: {elapsed:.2f} s including 3 interpreter starts")


# ------------------------------------------------------------------ crash safety
CRASHER = """
import sys
from medcert.audit import AuditLog
with AuditLog.open(sys.argv[1], checkpoint_key=sys.argv[2], checkpoint_every=5) as log:
    i = 0
    while True:
        e = log.append("certify", outcome="issued", trace_id=f"crash-{i}", details={"pad": "x" * 500})
        print(e.seq, e.entry_hash, flush=True)  # printed only after COMMIT returned
        i += 1
"""


def test_sigkill_mid_append_keeps_every_committed_entry(tmp_path, keys):
    path = tmp_path / "audit.sqlite"
    committed: dict[int, str] = {}
    for round_ in range(2):
        child = subprocess.Popen([PY, "-c", CRASHER, str(path), str(keys[0])], stdout=subprocess.PIPE,
                                 text=True)
        assert child.stdout is not None
        for seen, line in enumerate(child.stdout, 1):
            seq, h = line.split()
            committed[int(seq)] = h
            if seen >= 60 + 17 * round_:
                break
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        for line in rest.splitlines():
            seq, h = line.split()
            committed[int(seq)] = h
        with AuditLog.open(path) as log:
            report = log.verify(keys[2])
            assert report.ok, report.reason
            assert report.n_entries >= max(committed)
            for seq, h in committed.items():
                assert log.get(seq).entry_hash == h
            log.append("verify", outcome="PASS", trace_id=f"after-kill-{round_}")  # writable again
    with AuditLog.open(path, readonly=True) as log:
        assert log.verify(keys[2]).ok


# ------------------------------------------------------------------ full disk
def test_sqlite_full_via_max_page_count_leaves_a_valid_chain(tmp_path):
    path = tmp_path / "audit.sqlite"
    with AuditLog.open(path) as log:
        for i in range(3):
            log.append("certify", outcome="issued", trace_id=f"t{i}")
        pages = log._conn.execute("PRAGMA page_count").fetchone()[0]
        log._conn.execute(f"PRAGMA max_page_count = {pages}")  # the database is now "full"
        ok = 3
        with pytest.raises(AuditStorageError, match="the disk or the database is full"):
            for _ in range(200):
                log.append("certify", outcome="issued", details={"pad": "x" * 3000})
                ok += 1
        assert log.head()[0] == ok
        report = log.verify()
        assert report.ok and report.n_entries == ok
    with AuditLog.open(path) as log:  # room again: the chain simply continues
        assert log.append("verify", outcome="PASS").seq == ok + 1
        assert log.verify().ok


@needs_unshare
def test_full_filesystem_enospc(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    result = _in_namespace(f'mount -t tmpfs -o size=256k tmpfs "{mnt}"', f"""
        import contextlib, io, json
        from medcert.audit import AuditLog, record
        from medcert.errors import AuditError
        db = "{mnt}/audit.sqlite"
        n, msg = 0, None
        try:
            while True:
                record("certify", outcome="issued", db=db, details={{"pad": "x" * 4000}})
                n += 1
        except AuditError as exc:
            msg = str(exc)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            warned = record("certify", outcome="issued", db=db, details={{"pad": "x" * 4000}}, policy="warn")
        with AuditLog.open(db) as log:
            rep = log.verify()
        print(json.dumps({{"n": n, "msg": msg, "warned": warned, "stderr": err.getvalue(),
                           "ok": rep.ok, "entries": rep.n_entries}}))
    """)
    assert result["n"] >= 1 and result["ok"] and result["entries"] == result["n"]
    assert result["msg"].endswith("cannot append an entry: the disk or the database is full")
    assert "\n" not in result["msg"]
    assert result["warned"] is None
    assert result["stderr"].count("\n") == 1 and "was not recorded in the audit log" in result["stderr"]


# ------------------------------------------------------------------ read-only storage
def _seed(path: Path) -> None:
    with AuditLog.open(path) as log:
        log.append("keygen", outcome="issued")
        log.append("certify", outcome="issued", trace_id="seed")


@needs_unshare
def test_read_only_mount_erofs(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    _seed(folder / "audit.sqlite")
    result = _in_namespace(f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}"', f"""
        import contextlib, io, json
        from medcert.audit import AuditLog, record
        from medcert.errors import AuditError
        db = "{folder}/audit.sqlite"
        try:
            record("certify", outcome="issued", db=db)
            msg = None
        except AuditError as exc:
            msg = str(exc)
        try:
            record("certify", outcome="issued", db="{folder}/new/audit.sqlite")
            msg_new = None
        except AuditError as exc:
            msg_new = str(exc)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            warned = record("certify", outcome="issued", db=db, policy="warn")
        with AuditLog.open(db, readonly=True) as log:
            rep = log.verify()
        print(json.dumps({{"msg": msg, "msg_new": msg_new, "warned": warned, "stderr": err.getvalue(),
                           "ok": rep.ok, "entries": rep.n_entries}}))
    """)
    assert result["msg"] and "cannot open the database" in result["msg"]
    assert "cannot create its folder" in result["msg_new"] and "Read-only file system" in result["msg_new"]
    assert result["warned"] is None and result["stderr"].count("\n") == 1
    assert result["ok"] and result["entries"] == 2  # an auditor can still verify the read-only copy


def test_unprivileged_user_cannot_write(tmp_path):
    folder = Path(tempfile.mkdtemp(prefix="medcert-ro-", dir="/tmp"))
    try:
        db = folder / "audit.sqlite"
        _seed(db)
        code = textwrap.dedent(f"""
            import json
            from medcert.audit import AuditLog, record
            from medcert.errors import AuditError
            try:
                record("certify", outcome="issued", db="{db}")
                msg = None
            except AuditError as exc:
                msg = str(exc)
            with AuditLog.open("{db}", readonly=True) as log:
                rep = log.verify()
            print(json.dumps({{"msg": msg, "ok": rep.ok, "entries": rep.n_entries}}))
        """)
        if os.geteuid() == 0:  # root ignores file modes: drop to an unprivileged user for real
            drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            if not shutil.which("setpriv") or subprocess.run([*drop, PY, "-c", "pass"]).returncode != 0:
                pytest.skip("running as root and cannot run Python as an unprivileged user")
            folder.chmod(0o755)
            cmd = [*drop, PY, "-c", code]
        else:
            folder.chmod(0o555)
            db.chmod(0o444)
            cmd = [PY, "-c", code]
        env = {**os.environ, "HOME": str(folder), "PYTHONDONTWRITEBYTECODE": "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["msg"].endswith("cannot open the database: the database is read-only")
        assert result["ok"] and result["entries"] == 2
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_unwritable_location_and_folder_path(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(AuditStorageError, match=r"cannot create its folder .*: a file that is not a folder"):
        record("certify", outcome="issued", db=blocker / "audit.sqlite")
    with pytest.raises(AuditStorageError, match="is a folder, not a file"):
        AuditLog.open(tmp_path)
    assert record("certify", outcome="issued", db=blocker / "audit.sqlite", policy="warn") is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("medcert: warning: action 'certify' was not recorded")


# ------------------------------------------------------------------ locks
def test_busy_writer_waits_or_fails_cleanly(tmp_path):
    path = tmp_path / "audit.sqlite"
    _seed(path)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with AuditLog.open(path, busy_timeout=0.2) as log, \
                pytest.raises(AuditStorageError, match="kept the database locked"):
            log.append("certify", outcome="issued")
        timer = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
        timer.start()
        t0 = time.perf_counter()
        with AuditLog.open(path, busy_timeout=10) as log:
            assert log.append("certify", outcome="issued").seq == 3
        assert time.perf_counter() - t0 >= 0.4
        timer.join()
    finally:
        holder.close()


# ------------------------------------------------------------------ record() and its policy
def test_record_uses_the_configured_log_and_policy(tmp_path, monkeypatch, capsys, keys):
    e = record("certify", outcome="issued", trace_id="t-1", digests={"core": "Q29yZQ"})
    assert e is not None and e.seq == 1
    assert (tmp_path / "home" / "audit.sqlite").is_file()
    monkeypatch.setenv("MEDCERT_AUDIT_DB", str(tmp_path / "env.sqlite"))
    monkeypatch.setenv("MEDCERT_OPERATOR", "dr.env")
    monkeypatch.setenv("MEDCERT_AUDIT_CHECKPOINT_KEY", str(keys[0]))
    monkeypatch.setenv("MEDCERT_AUDIT_CHECKPOINT_EVERY", "3")
    for i in range(7):
        record("verify", outcome="PASS", trace_id=f"v{i}")
    fix = record("correction", outcome="recorded", corrects=2, reason="operator typo")
    assert fix.trace_id == "v1" and fix.operator == "dr.env"
    with AuditLog.open(tmp_path / "env.sqlite") as log:
        report = log.verify(keys[2])
        assert report.ok and report.n_checkpoints == 2 and report.n_entries == 10
    # caller mistakes raise whatever the policy
    monkeypatch.setenv("MEDCERT_AUDIT_POLICY", "warn")
    with pytest.raises(AuditError, match="reason is required"):
        record("correction", outcome="recorded", corrects=1)
    monkeypatch.setenv("MEDCERT_AUDIT_POLICY", "sometimes")
    with pytest.raises(AuditError, match="must be 'refuse' or 'warn'"):
        record("certify", outcome="issued")
    monkeypatch.setenv("MEDCERT_AUDIT_POLICY", "warn")
    monkeypatch.setenv("MEDCERT_AUDIT_DB", str(tmp_path))  # a folder: cannot be the log
    capsys.readouterr()
    assert record("certify", outcome="issued") is None
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.delenv("MEDCERT_AUDIT_POLICY")
    with pytest.raises(AuditStorageError):
        record("certify", outcome="issued")


def test_verify_time_and_append_throughput(tmp_path):
    """Measured figures (printed with -s); bounds are loose so slow CI disks pass."""
    path = tmp_path / "audit.sqlite"
    n = 1000
    with AuditLog.open(path) as log:
        t0 = time.perf_counter()
        for i in range(n):
            log.append("certify", outcome="issued", trace_id=f"t{i}", digests={"core": "Q29yZQ"})
        t_append = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = log.verify()
        t_verify = time.perf_counter() - t0
    assert report.ok and report.n_entries == n
    print(f"\nappend: {n / t_append:.0f} entries/s (synchronous=FULL); verify: {n / t_verify:.0f} entries/s")
    assert t_verify < 10
