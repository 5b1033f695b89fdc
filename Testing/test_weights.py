"""Weights: safetensors only, digest of the file bytes, model identity from the header, pickles never loaded."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from medcert.errors import WeightsError
from medcert.weights import build_network, load_weights, save_weights


class _Trap:
    """Unpickling this writes a marker file: proof that a loader ran pickle code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "unpickled"))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".safetensors"])
def test_pickle_checkpoints_are_refused_without_unpickling(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps({"weights": _Trap(str(marker))}, protocol=2))
    with pytest.raises(WeightsError) as exc:
        load_weights(path)
    assert not marker.exists(), "the pickle was executed"
    msg = str(exc.value)
    assert "\n" not in msg
    if suffix != ".safetensors":
        assert "never loads" in msg and "safetensors" in msg  # says how to convert


def test_torch_save_zip_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "renamed.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(WeightsError, match="pickle/PyTorch checkpoint"):
        load_weights(path)


def test_digest_is_sha256_of_the_file_bytes_and_identity_comes_from_metadata(placeholder_weights: Path) -> None:
    w = load_weights(placeholder_weights)
    raw = hashlib.sha256(placeholder_weights.read_bytes()).digest()
    assert w.digest == base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert w.digest_hex == raw.hex()
    assert w.architecture == "medcert.unet3d/1" and w.name == "medcert-untrained-placeholder"
    assert w.adapter["anomaly_label"] == 3
    model = build_network(w)
    assert not model.training


def test_one_changed_byte_changes_the_digest(tmp_path: Path, placeholder_weights: Path) -> None:
    data = bytearray(placeholder_weights.read_bytes())
    data[-1] ^= 0x01  # last byte of the last tensor
    other = tmp_path / "other.safetensors"
    other.write_bytes(bytes(data))
    assert load_weights(other).digest != load_weights(placeholder_weights).digest


def _meta(**over: object) -> dict:
    from medcert.models.placeholder import ADAPTER, CONFIG

    meta = {"architecture": "medcert.unet3d/1", "config": CONFIG, "adapter": ADAPTER, "name": "m", "version": "1"}
    meta.update(over)
    return {k: v for k, v in meta.items() if v is not None}


def test_metadata_and_tensor_refusals(tmp_path: Path) -> None:
    from medcert.models import build_model
    from medcert.models.placeholder import CONFIG

    state = build_model("medcert.unet3d/1", CONFIG).state_dict()
    p = save_weights(tmp_path / "noname.safetensors", state, _meta(name=None))
    with pytest.raises(WeightsError, match=r"lacks medcert\.name"):
        load_weights(p)
    p = save_weights(tmp_path / "badcfg.safetensors", state, _meta(config="{not json"))
    with pytest.raises(WeightsError, match=r"medcert\.config' is missing or not JSON"):
        load_weights(p)
    p = save_weights(tmp_path / "long.safetensors", state, _meta(version="v" * 65))
    with pytest.raises(WeightsError, match=r"1\.\.64 printable"):
        load_weights(p)
    small = {k: v for k, v in state.items() if not k.startswith("head.")}
    p = save_weights(tmp_path / "partial.safetensors", small, _meta())
    with pytest.raises(WeightsError, match="tensors do not fit architecture"):
        build_network(load_weights(p))
    p = save_weights(tmp_path / "arch.safetensors", state, _meta(architecture="lab.unknown/1"))
    with pytest.raises(WeightsError, match="unknown architecture"):
        build_network(load_weights(p))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(len(b'{"a": 1').to_bytes(8, "little") + b'{"a": 1')
    with pytest.raises(WeightsError, match=r"not a safetensors file|corrupt"):
        load_weights(junk)


def test_cli_refuses_a_pickle_with_one_line(tmp_path: Path, small_study: Path, keypair) -> None:
    path = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(1)}, path)
    proc = run_cli("segment", small_study, "--key", keypair[0], "--out", tmp_path / "out", "--weights", path)
    assert proc.returncode == 65
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "never loads" in proc.stderr


def test_saved_metadata_round_trips_as_json(tmp_path: Path, placeholder_weights: Path) -> None:
    w = load_weights(placeholder_weights)
    p = save_weights(tmp_path / "copy.safetensors", w.state_dict,
                     _meta(metrics={"dice": 0.5}, intended_use="testing"))
    w2 = load_weights(p)
    assert w2.metrics == {"dice": 0.5} and w2.intended_use == "testing"
    assert json.dumps(w2.config, sort_keys=True) == json.dumps(w.config, sort_keys=True)
