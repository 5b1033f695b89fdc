"""``segment --dicom-seg`` and ``verify --cert SEG``: the SEG as certificate carrier and stored mask.

One real run (untrained placeholder model, oblique 48x48x16 series, real Ed25519 key) is segmented once;
every test verifies that SEG, or an altered copy of it, against the real series. Source files are hashed
before and after everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import write_ct_series as write_test_series
from medcert.canonical import canonical_bytes
from medcert.certificate import core_digest, sign_core
from medcert.cli.main import main
from medcert.dicomseg import dicom_bytes, read_seg, remove_certificate_block, seg_stored_mask
from medcert.dicomseg.private_block import GROUP
from medcert.evidence import mask_digest
from medcert.io import load_volume, read_labelmap_nrrd
from medcert.keys import load_private_key
from medcert.pipeline import verify_files
from medcert.sidecar import CertificateRecord, append_certificate, read_sidecar
from pydicom.uid import ImplicitVRLittleEndian

SHAPE = (48, 48, 16)
ROW, COL = (0.8, 0.6, 0.0), (0.0, 0.0, -1.0)  # oblique in the axial plane, slices along -y


def _file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Series, weights, keys and one ``segment --dicom-seg`` run through the CLI."""
    from medcert.keys import generate_keypair
    from medcert.models.placeholder import write_placeholder_weights

    root = tmp_path_factory.mktemp("seg-verify")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDCERT_HOME", str(root / "home"))
        mp.delenv("MEDCERT_PSEUDONYM_KEY", raising=False)
        rng = np.random.default_rng(8)
        px = rng.integers(0, 1800, size=SHAPE).astype(np.int16)
        series = write_test_series(root / "ct", px, row_dir=ROW, col_dir=COL, spacing=(1.5, 1.5, 3.0))
        key, pub = generate_keypair(root / "keys")
        weights = write_placeholder_weights(root / "w.safetensors")
        before = _file_hashes(series.folder)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["segment", str(series.folder), "--key", str(key), "--out", str(root / "out"),
                         "--weights", str(weights), "--threads", "1", "--audit-db", str(root / "audit.sqlite"),
                         "--dicom-seg", "--json"])
        assert code == 0
        summary = json.loads(out.getvalue())
        assert _file_hashes(series.folder) == before
        yield {"root": root, "series": series, "key": key, "pub": pub, "weights": weights, "before": before,
               "summary": summary, "seg": Path(summary["dicom_seg"]), "sidecar": Path(summary["sidecar"]),
               "audit": root / "audit.sqlite"}


def verify(run, cert, *extra, weights=True) -> tuple[int, dict]:
    """``medcert verify --json`` in process: (exit code, report)."""
    args = ["verify", str(run["series"].folder), "--cert", str(cert), "--trust", str(run["pub"]),
            "--threads", "1", "--audit-db", str(run["audit"]), "--json", *extra]
    if weights:
        args += ["--weights", str(run["weights"])]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    return code, json.loads(out.getvalue()) if out.getvalue().strip() else {}


def altered(run, name: str, change) -> Path:
    """A copy of the SEG with ``change(ds)`` applied, written next to it."""
    ds = pydicom.dcmread(run["seg"])
    change(ds)
    path = run["root"] / name
    path.write_bytes(dicom_bytes(ds))
    return path


def statuses(report: dict) -> dict[str, str]:
    return {n: c["status"] for n, c in report["checks"].items()}


# --- what segment writes ----------------------------------------------------------------------------------

def test_seg_carries_the_sidecar_certificate_and_the_certified_mask(run):
    seg = read_seg(run["seg"])
    assert run["seg"].name == f"{run['summary']['trace_id']}.seg.dcm"
    [record] = read_sidecar(run["sidecar"])
    assert seg.certificate is not None and seg.certificate.problems == []
    assert seg.certificate.record == record
    assert record.annotations.get("audit_seq") is not None  # annotations as in the sidecar
    assert seg.certificate.stated_core_digest == core_digest(record.core)
    assert seg.algorithm_parameters == {
        "weights_sha256": record.core["d"]["wts"], "medcert_trace_id": record.trace_id,
        "medcert_core_sha256": core_digest(record.core), "medcert_key_id": record.core["kid"]}
    vol = load_volume(run["series"].folder)
    mask = seg_stored_mask(seg, vol)
    labels, _ = read_labelmap_nrrd(run["summary"]["labelmap"])
    np.testing.assert_array_equal(mask.labels, labels)
    assert mask_digest(mask.labels, mask.ijk_to_ras) == record.core["d"]["msk"]
    assert mask.origin == "dicom-seg"
    ds = seg.dataset
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == run["series"].series_uid
    assert {r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == set(
        run["series"].sop_uids)
    algo = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == (record.core["mdl"]["n"], record.core["mdl"]["v"])
    if shutil.which("dciodvfy"):
        out = subprocess.run(["dciodvfy", str(run["seg"])], capture_output=True, text=True, check=False)
        assert "Error" not in out.stdout + out.stderr, out.stderr


# --- verification with the SEG as carrier -----------------------------------------------------------------

def test_seg_verifies_alone_and_agrees_with_the_sidecar(run):
    code, rep = verify(run, run["seg"])
    assert (code, rep["verdict"]) == (0, "PASS"), rep
    assert rep["checks"]["output_record"]["figures"]["source"] == "dicom-seg"
    assert rep["checks"]["carrier"]["code"] == "carrier.seg"
    code, rep = verify(run, run["seg"], "--sidecar", str(run["sidecar"]))
    assert (code, rep["verdict"]) == (0, "PASS"), rep
    assert rep["checks"]["carrier"]["code"] == "carrier.agree"
    assert set(statuses(rep).values()) == {"pass"}


def test_implicit_vr_reencoded_seg_still_verifies(run):
    def implicit(ds):
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian

    path = altered(run, "implicit.seg.dcm", implicit)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert pydicom.dcmread(path)[GROUP, 0x1010].VR == "UN"
    report = verify_files(run["series"].folder, path, trust=[run["pub"]], weights_path=run["weights"],
                          threads=1, audit_db=run["audit"])
    assert report.verdict == "PASS", report.render()
    assert report.checks["output_record"].status == "pass"


def test_stripped_private_block_needs_the_sidecar_and_then_verifies(run, capsys):
    path = altered(run, "stripped.seg.dcm", remove_certificate_block)
    code, _ = verify(run, path, weights=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 65 and len(err) == 1 and "carries no MedCert certificate" in err[0]
    assert "--sidecar" in err[0]
    code, rep = verify(run, path, "--sidecar", str(run["sidecar"]))
    assert (code, rep["verdict"]) == (0, "PASS"), rep
    assert rep["checks"]["carrier"]["code"] == "carrier.absent"
    assert "no MedCert private block" in rep["note"]
    assert rep["checks"]["output_record"]["status"] == "pass"  # the mask itself is still checked


def test_edited_core_in_the_private_block_fails_the_signature(run):
    def edit(ds):
        core = json.loads(ds[GROUP, 0x1010].value.rstrip(b"\0"))
        core["mdl"]["v"] = "9.9.9"
        ds[GROUP, 0x1010].value = canonical_bytes(core)

    code, rep = verify(run, altered(run, "edited-core.seg.dcm", edit), weights=False)
    assert (code, rep["verdict"]) == (1, "FAIL")
    assert rep["checks"]["signature"]["code"] == "claimSignature.mismatch"
    assert "core digest element does not match" in rep["note"]


def test_edited_evidence_in_the_private_block_fails_evidence_only(run):
    def edit(ds):
        evidence = json.loads(zlib.decompress(ds[GROUP, 0x1013].value))
        evidence["operator"]["name"] = "somebody else"
        data = canonical_bytes(evidence)
        ds[GROUP, 0x1012].value = len(data)
        ds[GROUP, 0x1013].value = zlib.compress(data)

    code, rep = verify(run, altered(run, "edited-evidence.seg.dcm", edit), weights=False)
    assert (code, rep["verdict"]) == (1, "FAIL")
    assert statuses(rep)["signature"] == "pass"
    assert rep["checks"]["evidence"]["code"] == "evidence.mismatch"


def test_seg_and_sidecar_that_disagree_fail_with_a_note(run):
    [record] = read_sidecar(run["sidecar"])
    key = load_private_key(run["key"])
    # Same trace id, validly signed, different content: one of the two copies is not the issued one.
    resigned = sign_core({**record.core, "iat": "2020-01-01T00:00:00Z"}, key)
    (run["root"] / "other").mkdir()
    other = append_certificate(run["root"] / "other" / run["sidecar"].name,
                               CertificateRecord(resigned, record.evidence, {}))
    code, rep = verify(run, run["seg"], "--sidecar", str(other), weights=False)
    assert (code, rep["verdict"]) == (1, "FAIL")
    assert rep["checks"]["carrier"]["code"] == "carrier.disagree"
    assert "SEG and sidecar disagree" in rep["note"]
    assert core_digest(record.core) in rep["note"] and core_digest(resigned) in rep["note"]
    assert statuses(rep)["signature"] == "pass"  # the SEG's own certificate is intact
    # A sidecar that lacks the SEG's certificate altogether
    lone = sign_core({**record.core, "tid": "00000000-0000-4000-8000-000000000000"}, key)
    (run["root"] / "lone").mkdir()
    lonely = append_certificate(run["root"] / "lone" / run["sidecar"].name,
                                CertificateRecord(lone, record.evidence, {}))
    code, rep = verify(run, run["seg"], "--sidecar", str(lonely), weights=False)
    assert (code, rep["checks"]["carrier"]["code"]) == (1, "carrier.sidecar_missing")


def test_seg_verified_against_another_series_fails_input_and_output(run, tmp_path):
    px = np.random.default_rng(1).integers(0, 1800, size=SHAPE).astype(np.int16)
    other = write_test_series(tmp_path / "other", px, row_dir=ROW, col_dir=COL, spacing=(1.5, 1.5, 3.0))
    for cert, mask in ((run["seg"], None), (run["sidecar"], run["seg"])):
        report = verify_files(other.folder, cert, mask_path=mask, trust=[run["pub"]], audit_db=run["audit"])
        assert report.verdict == "FAIL"
        assert report.checks["input_hash"].code == "input.source.mismatch"
        assert report.checks["output_record"].code == "output.seg.grid"
        assert "Frame of Reference" in report.checks["output_record"].reason


def test_sidecar_with_a_seg_as_mask(run, capsys):
    code, rep = verify(run, run["sidecar"], "--mask", str(run["seg"]), weights=False)
    assert (code, rep["verdict"]) == (2, "INCONCLUSIVE")  # no weights: no replay
    assert rep["checks"]["output_record"]["status"] == "pass"
    code, _ = verify(run, run["sidecar"], "--sidecar", str(run["sidecar"]), weights=False)
    assert code == 65 and "--sidecar only applies" in capsys.readouterr().err
    code, _ = verify(run, run["seg"], "--mask", str(run["seg"]), weights=False)
    assert code == 65 and "the SEG is the stored mask" in capsys.readouterr().err
    code, _ = verify(run, run["seg"], "--trace-id", "00000000-0000-4000-8000-000000000000", weights=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 65 and len(err) == 1 and "carries certificate" in err[0]


def test_source_files_are_byte_identical_after_everything(run):
    assert _file_hashes(run["series"].folder) == run["before"]
