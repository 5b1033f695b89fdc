"""Sidecar: UIDs and file names, schema refusals, append-only writes, concurrency, crash safety."""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from medcert.certificate import (
    UnknownSchemaError,
    build_core,
    core_bytes,
    evidence_digest,
    new_trace_id,
    sign_core,
    verify_signature,
)
from medcert.digests import b64u_sha256
from medcert.errors import CertificateError, MedCertError
from medcert.keys import key_id, load_public_key
from medcert.sidecar import (
    MAX_JSON_DEPTH,
    MAX_SIDECAR_BYTES,
    SIDECAR_FORMAT,
    CertificateRecord,
    append_certificate,
    find_certificate,
    json_depth,
    read_sidecar,
    record_to_json,
    sidecar_name,
)
from medcert.uids import is_valid_uid, require_uid, safe_stem

GOLDEN = Path(__file__).parent / "golden"
STUDY = "1.2.826.0.1.3680043.8.498.12345"
SEED = hashlib.sha256(b"sidecar test key").digest()


def make_record(key: Ed25519PrivateKey, n: int = 0, **evidence) -> CertificateRecord:
    ev = evidence or {"input": {"n": n, "spacing": [0.5, 0.5, 1.25]}, "operator": {"name": "tester"}}
    d = {k: b64u_sha256(f"{k}/{n}".encode()) for k in ("src", "inp", "pre", "wts", "trj", "msk", "lgt")}
    d["evd"] = evidence_digest(ev)
    core = build_core(trace_id=new_trace_id(), issued="2025-03-04T05:06:07Z", study_uid=STUDY,
                      series_uid=None, digests=d, model_name="m", model_version="1", tolerance_id="t/1")
    return CertificateRecord(core=sign_core(core, key), evidence=ev, annotations={"audit_seq": n})


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(SEED)


@pytest.fixture
def sidecar(tmp_path, key) -> Path:
    path = tmp_path / sidecar_name(STUDY, "x")
    append_certificate(path, make_record(key, 1))
    return path


def write_doc(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def refused(path: Path, match: str, cls: type[Exception] = CertificateError) -> str:
    with pytest.raises(cls, match=match) as exc:
        read_sidecar(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


# --- UIDs and names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", ["0", "1.2.3", "1.0.2", "2.25.0", "1.2.840.10008.5.1.4.1.1.2",
                                 "1." + "2" * 62])
def test_valid_uids(uid):
    assert is_valid_uid(uid) and require_uid(uid, "f") == uid


@pytest.mark.parametrize("uid", ["", "01.2", "1.02", "1..2", ".1", "1.", "1.2a", "1.2 ", "1." + "2" * 63,
                                 "../../etc", "1.2/../3", "1.2\n", "١.٢", None, 12, "1/2", "1\\2"])
def test_invalid_uids(uid):
    assert not is_valid_uid(uid)
    with pytest.raises(MedCertError, match="StudyInstanceUID is not a valid DICOM UID"):
        require_uid(uid, "StudyInstanceUID")


@pytest.mark.parametrize("uid", ["../../etc", "1.2/../3", "/etc/passwd", "1.2.3/", "..", ".", ""])
def test_sidecar_name_refuses_path_traversal_uids(uid):
    with pytest.raises(MedCertError, match="StudyInstanceUID"):
        sidecar_name(uid, "fallback")


@pytest.mark.parametrize(("name", "stem"), [
    ("chest_ct", "chest_ct"), ("../../etc/passwd", "etc_passwd"), (".hidden", "hidden"), ("a..b", "a.b"),
    ("CT scan (1).nrrd", "CT_scan_1_.nrrd"), ("", "volume"), ("...", "volume"), ("/", "volume"),
    ("Zürich", "Z_rich"), ("-rf", "rf"), ("x" * 300, "x" * 100),
])
def test_safe_stem(name, stem):
    assert safe_stem(name) == stem


def test_sidecar_name():
    assert sidecar_name(STUDY, "ignored") == f"{STUDY}.medcert.json"
    assert sidecar_name(None, "../scan 1") == "scan_1.medcert.json"
    for name in (sidecar_name(None, n) for n in ("..", "a/../../b", "\x00x", "." * 200)):
        assert "/" not in name and not name.startswith(".") and ".." not in name and name != ".medcert.json"


# --- append and read --------------------------------------------------------------------------------------


def test_append_creates_then_keeps_earlier_records(tmp_path, key):
    path = tmp_path / sidecar_name(STUDY, "x")
    first, second = make_record(key, 1), make_record(key, 2)
    assert append_certificate(path, first) == path
    assert read_sidecar(path) == [first]
    before = path.read_bytes()
    append_certificate(path, second)
    assert read_sidecar(path) == [first, second]
    doc = json.loads(path.read_bytes())
    assert doc["format"] == SIDECAR_FORMAT
    assert doc["certificates"][0] == json.loads(before)["certificates"][0]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no lock or temp file left behind


def test_read_back_signature_and_evidence_still_bind(sidecar, key):
    rec = read_sidecar(sidecar)[0]
    assert verify_signature(rec.core, {key_id(key.public_key()): key.public_key()}).status == "valid"
    assert evidence_digest(rec.evidence) == rec.core["d"]["evd"]


def test_append_refuses_duplicate_trace_id(sidecar, key):
    existing = read_sidecar(sidecar)[0]
    before = sidecar.read_bytes()
    with pytest.raises(CertificateError,
                       match=f"already holds a certificate with trace id {existing.trace_id}$"):
        append_certificate(sidecar, existing)
    assert sidecar.read_bytes() == before


def test_append_refuses_evidence_not_matching_its_digest(sidecar, key):
    rec = make_record(key, 2)
    bad = CertificateRecord(rec.core, {**rec.evidence, "findings": {"x": 1}}, {})
    before = sidecar.read_bytes()
    with pytest.raises(CertificateError, match=r'evidence does not match its digest "d\.evd"'):
        append_certificate(sidecar, bad)
    assert sidecar.read_bytes() == before


@pytest.mark.parametrize(("change", "match"), [
    (lambda r: CertificateRecord({k: v for k, v in r.core.items() if k != "sig"}, r.evidence, {}),
     r'missing field "certificates\[0\]\.core\.sig"'),
    (lambda r: CertificateRecord(r.core, {"secret": 1}, {}),
     r'unexpected field "certificates\[0\]\.evidence\.secret"'),
    (lambda r: CertificateRecord(r.core, r.evidence, {"audit_seq": -1}), "out of range"),
    (lambda r: CertificateRecord(r.core, r.evidence, {"audit_seq": True}), "must be an integer"),
    (lambda r: CertificateRecord(r.core, r.evidence, {"note": "x" * 1025}), "annotations.note"),
    (lambda r: CertificateRecord(r.core, r.evidence, {"other": 1}), "unexpected field"),
    (lambda r: CertificateRecord(r.core, {"model": float("inf")}, {}), "cannot be canonicalized"),
    (lambda r: CertificateRecord(dict(r.core, v="medcert/7"), r.evidence, {}), "newer or unknown"),
])
def test_append_refuses_invalid_record(tmp_path, key, change, match):
    path = tmp_path / "s.medcert.json"
    with pytest.raises(CertificateError, match=match):
        append_certificate(path, change(make_record(key)))
    assert not path.exists()


def test_append_refuses_too_deep_evidence(tmp_path, key):
    deep: dict = {}
    node = deep
    for _ in range(MAX_JSON_DEPTH):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(CertificateError, match="nested deeper than 32"):
        append_certificate(tmp_path / "s.json", make_record(key, input=deep))


def test_append_refuses_to_extend_an_invalid_sidecar(sidecar, key):
    sidecar.write_text('{"format": "medcert-sidecar/1", "certificates": []}')
    with pytest.raises(CertificateError, match="must not be empty"):
        append_certificate(sidecar, make_record(key, 5))
    assert sidecar.read_text() == '{"format": "medcert-sidecar/1", "certificates": []}'


def test_append_into_missing_folder_is_a_user_error(tmp_path, key):
    with pytest.raises(MedCertError, match="output folder does not exist"):
        append_certificate(tmp_path / "nope" / "s.medcert.json", make_record(key))


def test_golden_sidecar_reads_and_verifies():
    records = read_sidecar(GOLDEN / "golden.medcert.json")
    assert len(records) == 1
    rec = records[0]
    assert core_bytes(rec.core) == (GOLDEN / "core.signed.jcs").read_bytes()
    assert rec.evidence == json.loads((GOLDEN / "evidence.json").read_text())
    assert rec.annotations == {"note": "golden vector"}
    pub = load_public_key(GOLDEN / "TEST-ONLY-signing-key.pub.pem")
    assert verify_signature(rec.core, {key_id(pub): pub}).status == "valid"
    assert evidence_digest(rec.evidence) == rec.core["d"]["evd"]


def test_appending_to_golden_copy_keeps_its_bytes_meaningful(tmp_path, key):
    path = tmp_path / "g.medcert.json"
    shutil.copyfile(GOLDEN / "golden.medcert.json", path)
    append_certificate(path, make_record(key, 3))
    first, second = read_sidecar(path)
    assert core_bytes(first.core) == (GOLDEN / "core.signed.jcs").read_bytes()
    assert evidence_digest(first.evidence) == first.core["d"]["evd"]
    assert second.annotations == {"audit_seq": 3}


def test_find_certificate(key):
    a, b = make_record(key, 1), make_record(key, 2)
    assert find_certificate([a]) is a
    assert find_certificate([a, b], b.trace_id) is b
    with pytest.raises(CertificateError,
                       match=f"2 certificates; choose one by trace id: {a.trace_id}, {b.trace_id}$"):
        find_certificate([a, b])
    with pytest.raises(CertificateError, match=f"no certificate with trace id nope; present: {a.trace_id}"):
        find_certificate([a], "nope")
    with pytest.raises(CertificateError, match="holds no certificate"):
        find_certificate([])
    many = [make_record(key, i) for i in range(12)]
    with pytest.raises(CertificateError, match="and 2 more"):
        find_certificate(many)


def test_record_to_json_round_trip(key):
    rec = make_record(key, 4)
    assert CertificateRecord(**record_to_json(rec)) == rec
    assert set(record_to_json(rec)) == {"core", "evidence", "annotations"}


# --- read refusals ----------------------------------------------------------------------------------------


def test_missing_field(sidecar):
    doc = json.loads(sidecar.read_text())
    del doc["certificates"][0]["core"]["tid"]
    refused(write_doc(sidecar, doc), r'missing field "certificates\[0\]\.core\.tid"')
    refused(write_doc(sidecar, {"format": SIDECAR_FORMAT}), 'missing field "certificates"')
    doc = json.loads((GOLDEN / "golden.medcert.json").read_text())
    del doc["certificates"][0]["evidence"]
    refused(write_doc(sidecar, doc), r'missing field "certificates\[0\]\.evidence"')


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda d: d.update(certificates={}), 'field "certificates" must be an array'),
    (lambda d: d["certificates"][0].update(evidence=[1]), r'"certificates\[0\]\.evidence" must be an object'),
    (lambda d: d["certificates"][0]["core"].update(study=1), r'"certificates\[0\]\.core\.study"'),
    (lambda d: d["certificates"][0]["core"]["d"].update(src=None),
     r'"certificates\[0\]\.core\.d\.src" must be'),
    (lambda d: d["certificates"][0].update(annotations="x"), r'"certificates\[0\]\.annotations" must be'),
    (lambda d: d["certificates"][0].update(extra=1), r'unexpected field "certificates\[0\]\.extra"'),
    (lambda d: d.update(format=1), 'field "format" must be a string'),
    (lambda d: d["certificates"][0]["core"].update(iat="2025-13-01T00:00:00Z"), r'"iat" is not a real time'),
    (lambda d: d["certificates"].append(d["certificates"][0]), "appears twice"),
])
def test_wrong_type_or_shape(sidecar, mutate, match):
    doc = json.loads(sidecar.read_text())
    mutate(doc)
    refused(write_doc(sidecar, doc), match)


def test_unknown_sidecar_format_version(sidecar):
    doc = json.loads(sidecar.read_text())
    doc["format"] = "medcert-sidecar/2"
    doc["something_new"] = {}
    refused(write_doc(sidecar, doc), "format 'medcert-sidecar/2' is newer or unknown", UnknownSchemaError)


def test_unknown_core_version(sidecar):
    doc = json.loads(sidecar.read_text())
    doc["certificates"][0]["core"] = {"v": "medcert/2", "new_field": [1, 2]}
    msg = refused(write_doc(sidecar, doc), "certificate schema 'medcert/2' is newer or unknown",
                  UnknownSchemaError)
    assert "certificates[0]" in msg


def test_oversize_file_refused_before_parsing(tmp_path):
    path = tmp_path / "big.medcert.json"
    with path.open("wb") as fh:
        fh.write(b"[")
        fh.truncate(MAX_SIDECAR_BYTES + 1)  # sparse: costs no disk, would take long to parse
    start = time.perf_counter()
    refused(path, f"larger than {MAX_SIDECAR_BYTES} bytes")
    assert time.perf_counter() - start < 0.5


def test_deeply_nested_json_refused(sidecar):
    doc = json.loads(sidecar.read_text())
    deep: list = []
    node = deep
    for _ in range(MAX_JSON_DEPTH):
        node.append([])
        node = node[0]
    doc["certificates"][0]["evidence"]["findings"] = deep
    refused(write_doc(sidecar, doc), "nested deeper than 32 levels")
    sidecar.write_text("[" * 200_000 + "]" * 200_000)  # would overflow a recursive parser
    refused(sidecar, "nested deeper than 32 levels")


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth('{"a": "[[[[{{{{\\"]]]]", "b": [[1]]}') == 3
    assert json_depth("[]") == 1 and json_depth('"x"') == 0


def test_depth_exactly_at_limit_is_accepted(sidecar):
    doc = json.loads(sidecar.read_text())
    deep: dict = {}
    node = deep
    for _ in range(MAX_JSON_DEPTH - 5):  # root, certificates, record, evidence, findings = 5 levels
        node["x"] = {}
        node = node["x"]
    doc["certificates"][0]["evidence"]["findings"] = deep
    text = json.dumps(doc)
    assert json_depth(text) == MAX_JSON_DEPTH
    sidecar.write_text(text)
    rec = read_sidecar(sidecar)[0]  # structure fine; the evidence digest no longer matches (a verifier FAIL)
    assert evidence_digest(rec.evidence) != rec.core["d"]["evd"]


def test_duplicate_keys_refused(sidecar):
    text = sidecar.read_text()
    tid = json.loads(text)["certificates"][0]["core"]["tid"]
    forged = text.replace(f'"tid": "{tid}"', f'"tid": "{tid}", "tid": "{new_trace_id()}"', 1)
    assert forged != text
    refused(write_doc_text(sidecar, forged), "duplicate key 'tid'")
    refused(write_doc_text(sidecar, '{"format": "medcert-sidecar/1", "format": "medcert-sidecar/1"}'),
            "duplicate key 'format'")


def write_doc_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("tail", "match"), [
    ("garbage", "Extra data"), ("{}", "Extra data"), ("\x00", "Extra data"),
])
def test_trailing_garbage_refused(sidecar, tail, match):
    refused(write_doc_text(sidecar, sidecar.read_text() + tail), match)


@pytest.mark.parametrize(("data", "match"), [
    (b"", "not valid JSON"), (b"\xff\xfe{}", "not UTF-8"), (b'\xef\xbb\xbf{"format": 1}', "not valid JSON"),
    (b'{"x": NaN}', "NaN is not allowed"), (b'{"x": -Infinity}', "-Infinity is not allowed"),
    (b'{"x": 1e400}', "out of range"), (b'{"x": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"format": "medcert-sidecar/1", "certificates": []}', "must not be empty"),
])
def test_malformed_bytes_refused(tmp_path, data, match):
    path = tmp_path / "s.medcert.json"
    path.write_bytes(data)
    refused(path, match)


def test_missing_file_and_folder(tmp_path):
    refused(tmp_path / "absent.medcert.json", "file not found")
    refused(tmp_path, "is a folder")


# --- concurrency and crash safety -------------------------------------------------------------------------


def _append_many(path: str, n: int, base: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    for i in range(n):
        append_certificate(path, make_record(key, base + i))


def test_concurrent_appends_from_two_processes_lose_nothing(tmp_path):
    path = tmp_path / sidecar_name(STUDY, "x")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), 20, base)) for base in (0, 1000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    records = read_sidecar(path)
    assert len(records) == 40
    seqs = sorted(r.annotations["audit_seq"] for r in records)
    assert seqs == [*range(20), *range(1000, 1020)]
    assert len({r.trace_id for r in records}) == 40
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


CRASH_CHILD = r"""
import json, os, signal, sys
from medcert.sidecar import CertificateRecord, append_certificate
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)   # the process dies here: after the temp file is written and fsynced
os.{target} = die
append_certificate(sys.argv[1], CertificateRecord(**json.loads(sys.argv[2])))
print("not reached")
"""


def crash_append(path: Path, record: CertificateRecord, target: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CRASH_CHILD.replace("{target}", target), str(path),
                           json.dumps(record_to_json(record))], capture_output=True, text=True, timeout=60)


def test_killed_writer_between_write_and_rename_leaves_old_sidecar_intact(sidecar, key):
    before = sidecar.read_bytes()
    new = make_record(key, 2)
    proc = crash_append(sidecar, new, "replace")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "not reached" not in proc.stdout
    assert sidecar.read_bytes() == before
    assert len(read_sidecar(sidecar)) == 1
    # the new content had been written completely to a temp file when the process died
    temps = [p for p in sidecar.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1
    assert [r.trace_id for r in read_sidecar(temps[0])][-1] == new.trace_id
    # the lock of the dead writer does not block the next one
    append_certificate(sidecar, new)
    assert [r.trace_id for r in read_sidecar(sidecar)][-1] == new.trace_id


def test_killed_writer_creating_a_sidecar_leaves_none(tmp_path, key):
    path = tmp_path / "s.medcert.json"
    proc = crash_append(path, make_record(key, 1), "link")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not path.exists()
    with pytest.raises(CertificateError, match="file not found"):
        read_sidecar(path)


def test_failed_rename_in_process_keeps_old_sidecar(sidecar, key, monkeypatch):
    before = sidecar.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(MedCertError, match="No space left on device"):
        append_certificate(sidecar, make_record(key, 2))
    monkeypatch.undo()
    assert sidecar.read_bytes() == before
    assert sorted(p.name for p in sidecar.parent.iterdir()) == [sidecar.name]


def test_records_are_independent_copies(sidecar):
    a = read_sidecar(sidecar)[0]
    b = copy.deepcopy(a)
    b.core["tol"] = "changed"
    assert read_sidecar(sidecar)[0].core["tol"] == "t/1" == a.core["tol"]
