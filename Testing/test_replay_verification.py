"""Replay verification: honest variation passes, each tamper fails the right check and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, synthetic_ct
from medcert.calibration import LEGIT_VARIANTS, dishonest_record, finetune_one_step
from medcert.certificate import evidence_digest, sign_core
from medcert.io import load_volume, read_labelmap_nrrd, write_labelmap_nrrd, write_scalar_nrrd
from medcert.keys import load_private_key, load_trusted_keys
from medcert.pipeline import segment_to_files
from medcert.sidecar import CertificateRecord, read_sidecar
from medcert.verify import StoredMask, verify_record
from medcert.volume import Volume
from medcert.weights import load_weights

SHAPE = (80, 56, 24)  # 2 tiles along x at the placeholder's 96³ patch: blending and aggregation are exercised


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory, keypair, placeholder_weights) -> dict:
    tmp = tmp_path_factory.mktemp("issued")
    vox, m = synthetic_ct(SHAPE)
    study = write_scalar_nrrd(tmp / "chest.nrrd", vox, m)
    res = segment_to_files(study, keypair[0], tmp / "out", weights_path=placeholder_weights)
    return {"study": study, "res": res, "record": res.certified.record, "tmp": tmp, "vox": vox, "m": m}


def _verify(volume: Volume, record: CertificateRecord, trusted_pub: Path, weights: Path | None,
            mask: StoredMask | None = None):
    return verify_record(volume, record, trusted=load_trusted_keys([trusted_pub]), weights_path=weights,
                         stored_mask=mask)


def _statuses(report) -> dict[str, str]:
    return {n: c.status for n, c in report.checks.items()}


def test_honest_replay_passes_every_check(issued, keypair, placeholder_weights) -> None:
    vol = load_volume(issued["study"])
    labels, m = read_labelmap_nrrd(issued["res"].labelmap)
    rep = _verify(vol, issued["record"], keypair[1], placeholder_weights, StoredMask(labels, m))
    assert rep.verdict == "PASS", rep.render()
    assert set(_statuses(rep).values()) == {"pass"}
    assert rep.checks["trajectory"].figures["max_deviation"] == 0.0  # same process settings: bit-identical


@pytest.mark.parametrize("variant", sorted(LEGIT_VARIANTS))
def test_other_cpu_kernel_paths_and_threads_pass(issued, keypair, placeholder_weights, variant: str) -> None:
    proc = run_cli("verify", issued["study"], "--cert", issued["res"].sidecar, "--weights", placeholder_weights,
                   "--trust", keypair[1], "--mask", issued["res"].labelmap, "--json", env=LEGIT_VARIANTS[variant])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["verdict"] == "PASS"
    assert all(c["status"] == "pass" for c in rep["checks"].values())


def test_one_voxel_changed_fails_input_only(issued, keypair, placeholder_weights) -> None:
    vox = issued["vox"].copy()
    vox[10, 10, 10] += 1
    vol = Volume(vox, issued["m"], load_volume(issued["study"]).identity)
    rep = _verify(vol, issued["record"], keypair[1], placeholder_weights)
    s = _statuses(rep)
    assert rep.verdict == "FAIL"
    assert s["input_hash"] == "fail" and rep.checks["input_hash"].code == "input.source.mismatch"
    assert s["signature"] == s["evidence"] == s["weights_hash"] == "pass"
    assert s["trajectory"] == s["final_logits"] == "skipped"


def test_origin_shift_fails_input_only(issued, keypair, placeholder_weights) -> None:
    m = issued["m"].copy()
    m[0, 3] += 1.0
    vol = Volume(issued["vox"], m, load_volume(issued["study"]).identity)
    rep = _verify(vol, issued["record"], keypair[1], placeholder_weights)
    s = _statuses(rep)
    assert s["input_hash"] == "fail" and "fail" not in {s[n] for n in s if n != "input_hash"}


def test_other_weights_file_fails_weights_only(issued, keypair, tmp_path) -> None:
    from medcert.models.placeholder import write_placeholder_weights

    other = write_placeholder_weights(tmp_path / "other.safetensors", seed=99)
    rep = _verify(load_volume(issued["study"]), issued["record"], keypair[1], other)
    s = _statuses(rep)
    assert s["weights_hash"] == "fail" and rep.checks["weights_hash"].code == "weights.mismatch"
    assert s["signature"] == s["input_hash"] == s["evidence"] == "pass"
    assert s["trajectory"] == "skipped"


def test_dishonest_issuer_with_finetuned_model_is_caught(issued, keypair, placeholder_weights, tmp_path) -> None:
    tuned = finetune_one_step(placeholder_weights, tmp_path / "tuned.safetensors")
    vol = load_volume(issued["study"])
    official = load_weights(placeholder_weights).digest
    rec = dishonest_record(vol, tuned, official, load_private_key(keypair[0]))
    rep = _verify(vol, rec, keypair[1], placeholder_weights)
    s = _statuses(rep)
    assert rep.verdict == "FAIL", rep.render()
    assert s["weights_hash"] == "pass" and s["signature"] == "pass" and s["input_hash"] == "pass"
    assert s["trajectory"] == "fail"
    assert rep.checks["trajectory"].figures["first_divergent_layer"] == "enc0"
    # The tamper deviation sits far above the largest legitimate one measured across kernel paths.
    tol = issued["record"].evidence["tolerance"]["layer_rel"]
    assert min(d for _, d, _ in rep.layer_deviations) > tol


def test_flipped_mask_voxel_fails_output_record_only(issued, keypair, placeholder_weights, tmp_path) -> None:
    labels, m = read_labelmap_nrrd(issued["res"].labelmap)
    labels = labels.copy()
    labels[40, 28, 12] = 3 if labels[40, 28, 12] != 3 else 0
    edited = write_labelmap_nrrd(tmp_path / "edited.seg.nrrd", labels, m, [(1, "right lung", (1, 0, 0)),
                                                                           (2, "left lung", (0, 0, 1)),
                                                                           (3, "lung nodule", (1, 1, 0))])
    proc = run_cli("verify", issued["study"], "--cert", issued["res"].sidecar, "--weights", placeholder_weights,
                   "--trust", keypair[1], "--mask", edited, "--json")
    assert proc.returncode == 1, proc.stderr
    rep = json.loads(proc.stdout)
    failing = {n for n, c in rep["checks"].items() if c["status"] == "fail"}
    assert failing == {"output_record"}
    assert rep["checks"]["output_record"]["figures"]["voxels_differing_from_replay"] == 1


def _mutate(value: str) -> str:
    """Change one character while keeping the field well-formed (first digit, else last letter)."""
    for pos in range(len(value)):
        if value[pos].isdigit():
            return value[:pos] + str((int(value[pos]) + 1) % 10) + value[pos + 1:]
    return value[:-1] + ("A" if value[-1] != "A" else "B")


@pytest.mark.parametrize("field", ["tid", "iat", "d.src", "d.wts", "d.msk", "mdl.v", "tol"])
def test_edited_signed_field_fails_signature_only(issued, keypair, placeholder_weights, field: str) -> None:
    core = json.loads(json.dumps(issued["record"].core))
    node, key = (core["d"], field[2:]) if field.startswith("d.") else (
        (core["mdl"], field[4:]) if field.startswith("mdl.") else (core, field))
    node[key] = _mutate(node[key])
    rec = CertificateRecord(core, issued["record"].evidence, {})
    rep = _verify(load_volume(issued["study"]), rec, keypair[1], placeholder_weights)
    s = _statuses(rep)
    assert s["signature"] == "fail" and rep.checks["signature"].code == "claimSignature.mismatch"
    assert all(v == "skipped" for n, v in s.items() if n != "signature")


def test_valid_signature_by_untrusted_key_fails_signature_only(issued, other_keypair, placeholder_weights) -> None:
    rep = _verify(load_volume(issued["study"]), issued["record"], other_keypair[1], placeholder_weights)
    s = _statuses(rep)
    assert s["signature"] == "fail" and rep.checks["signature"].code == "signingCredential.untrusted"
    assert all(v == "pass" for n, v in s.items() if n not in ("signature", "output_record"))


@pytest.mark.parametrize("section", ["trajectory", "environment"])
def test_edited_evidence_fails_evidence_check(issued, keypair, placeholder_weights, section: str) -> None:
    ev = json.loads(json.dumps(issued["record"].evidence))
    if section == "trajectory":
        ev["trajectory"]["layers"][0]["tiles"] += 1
    else:
        ev["environment"]["hostname"] = "elsewhere"
    rec = CertificateRecord(issued["record"].core, ev, {})
    rep = _verify(load_volume(issued["study"]), rec, keypair[1], placeholder_weights)
    s = _statuses(rep)
    assert s["evidence"] == "fail" and s["signature"] == "pass" and s["input_hash"] == "pass"
    assert s["trajectory"] == s["final_logits"] == "skipped"
    if section == "trajectory":
        assert rep.checks["evidence"].figures["edited_sections"] == ["trajectory"]


def test_without_weights_is_inconclusive(issued, keypair) -> None:
    proc = run_cli("verify", issued["study"], "--cert", issued["res"].sidecar, "--trust", keypair[1],
                   "--mask", issued["res"].labelmap)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "INCONCLUSIVE" in proc.stdout
    assert "output_record  PASS" in proc.stdout and "signature      PASS" in proc.stdout


def test_newer_schema_is_inconclusive(issued, keypair, placeholder_weights, tmp_path) -> None:
    doc = json.loads(issued["res"].sidecar.read_text())
    doc["certificates"][0]["core"]["v"] = "medcert/9"
    path = tmp_path / "newer.medcert.json"
    path.write_text(json.dumps(doc))
    proc = run_cli("verify", issued["study"], "--cert", path, "--weights", placeholder_weights, "--trust",
                   keypair[1], "--trace-id", issued["res"].trace_id)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "INCONCLUSIVE" in proc.stdout and "not supported" in proc.stdout


def test_sidecar_never_loses_earlier_certificates(issued, keypair, placeholder_weights) -> None:
    res2 = segment_to_files(issued["study"], keypair[0], issued["tmp"] / "out", weights_path=placeholder_weights)
    ids = [r.core["tid"] for r in read_sidecar(res2.sidecar)]
    assert issued["res"].trace_id in ids and res2.trace_id in ids
    assert res2.labelmap != issued["res"].labelmap and issued["res"].labelmap.exists()


def test_re_signing_after_evidence_edit_is_still_caught_by_replay(issued, keypair, placeholder_weights) -> None:
    """An issuer who edits the fingerprint and re-signs honestly-formed claims is caught by the trajectory."""
    ev = json.loads(json.dumps(issued["record"].evidence))
    from medcert.canonical import decode_array, encode_array
    from medcert.evidence import section_digest

    layer = ev["trajectory"]["layers"][2]
    values = decode_array(layer["values"]) * (1 + 1e-3)
    layer["values"] = encode_array(values.astype(np.float64))
    core = {k: v for k, v in issued["record"].core.items() if k not in ("sig", "kid")}
    core["d"] = dict(core["d"], trj=section_digest(ev["trajectory"]), evd=evidence_digest(ev))
    rec = CertificateRecord(sign_core(core, load_private_key(keypair[0])), ev, {})
    rep = _verify(load_volume(issued["study"]), rec, keypair[1], placeholder_weights)
    assert rep.checks["trajectory"].status == "fail"
    assert rep.checks["trajectory"].figures["first_divergent_layer"] == layer["name"]


def test_unknown_architecture_is_inconclusive(keypair, tmp_path) -> None:
    """A model registered only in the issuer's process cannot be rebuilt by a plain verifier: INCONCLUSIVE."""
    from medcert.models import register_architecture
    from medcert.models.placeholder import ADAPTER, CONFIG
    from medcert.models.unet3d import UNet3D
    from medcert.weights import save_weights

    register_architecture("lab.private-unet/1", lambda cfg: UNet3D(**cfg))
    import torch

    torch.manual_seed(5)
    weights = save_weights(tmp_path / "private.safetensors", UNet3D(**CONFIG).state_dict(), {
        "architecture": "lab.private-unet/1", "config": CONFIG, "adapter": ADAPTER, "name": "private",
        "version": "1"})
    vox, m = synthetic_ct((48, 40, 16))
    study = write_scalar_nrrd(tmp_path / "s.nrrd", vox, m)
    res = segment_to_files(study, keypair[0], tmp_path / "out", weights_path=weights)
    proc = run_cli("verify", study, "--cert", res.sidecar, "--weights", weights, "--trust", keypair[1], "--json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["checks"]["weights_hash"]["status"] == "pass"
    assert rep["checks"]["trajectory"]["status"] == "skipped"
    assert "unknown architecture" in rep["checks"]["trajectory"]["reason"]


def test_sidecar_written_with_study_uid_name(issued) -> None:
    assert issued["res"].sidecar.name == "chest.medcert.json"  # NRRD input: sanitized file stem
    append_path = issued["res"].sidecar
    assert append_path.exists()


def test_explanation_map_is_deterministic_and_bound(issued, placeholder_weights, keypair, tmp_path) -> None:
    from medcert.inference import WeightsAdapter
    from medcert.weights import save_weights

    w = load_weights(placeholder_weights)
    state = dict(w.state_dict)
    import torch

    # Make the anomaly class a near-copy of the dominant class: many voxels fall to it, so there is something
    # to explain.
    for name in ("head.weight", "head.bias"):
        state[name] = state[name].clone()
        state[name][3] = state[name][2] + 0.01 * torch.randn(state[name][2].shape,
                                                             generator=torch.Generator().manual_seed(1))
    tuned = save_weights(tmp_path / "anomalous.safetensors", state, {
        "architecture": w.architecture, "config": w.config, "adapter": w.adapter, "name": w.name,
        "version": "anomalous"})
    vox, m = synthetic_ct((48, 40, 16))  # one tile: explaining every tile of the larger study is slow
    study = write_scalar_nrrd(tmp_path / "one-tile.nrrd", vox, m)
    vol = load_volume(study)
    res = segment_to_files(study, keypair[0], tmp_path / "out", weights_path=tuned)
    a = res.certified.run
    assert a.outputs.explanation is not None and res.explanation is not None
    assert a.outputs.explanation.min() >= 0.0 and 0.0 < a.outputs.explanation.max() <= 1.0
    assert a.timings["explained_tiles"] >= 1
    assert (a.outputs.labels == 3).any()
    assert "exp" in res.certified.record.core["d"]
    rep = _verify(vol, res.certified.record, keypair[1], tuned)
    # The replay recomputes the map bit for bit under the same settings (deterministic).
    assert rep.verdict == "PASS" and rep.checks["final_logits"].figures["explanation_max_abs"] == 0.0
    # Without any anomaly voxel there is nothing to explain: the map is all zeros.
    no_anomaly = np.zeros((4, 8, 8, 8), dtype=np.float32)
    no_anomaly[0] = 1.0
    from medcert.inference.explain import explanation_map

    net = WeightsAdapter.from_weights(w).network()
    sal, n = explanation_map(net, np.zeros((2, 8, 8, 8), np.float32), no_anomaly, (8, 8, 8), 0.25, 3)
    assert n == 0 and not sal.any()


def test_re_signed_findings_that_do_not_match_the_mask_fail(issued, keypair, placeholder_weights) -> None:
    ev = json.loads(json.dumps(issued["record"].evidence))
    organ = next(iter(ev["findings"]["organs"]))
    ev["findings"]["organs"][organ]["volume_ml"] += 1.0
    core = {k: v for k, v in issued["record"].core.items() if k not in ("sig", "kid")}
    core["d"] = dict(core["d"], evd=evidence_digest(ev))
    rec = CertificateRecord(sign_core(core, load_private_key(keypair[0])), ev, {})
    rep = _verify(load_volume(issued["study"]), rec, keypair[1], placeholder_weights)
    assert rep.checks["final_logits"].status == "fail"
    assert rep.checks["final_logits"].code == "findings.mismatch"
    assert rep.checks["trajectory"].status == "pass"
