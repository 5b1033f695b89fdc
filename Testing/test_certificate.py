"""Signed certificate core: golden vectors, signature failure paths, validation, size limit."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import string
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from medcert.canonical import canonical_bytes
from medcert.certificate import (
    CORE_VERSION,
    MAX_CORE_BYTES,
    PAYLOAD_TYPE,
    SignatureResult,
    UnknownSchemaError,
    build_core,
    core_bytes,
    core_digest,
    evidence_digest,
    new_trace_id,
    pae,
    sign_core,
    signing_payload,
    utc_now,
    validate_core,
    verify_signature,
)
from medcert.digests import b64u, b64u_decode, b64u_sha256
from medcert.errors import CertificateError
from medcert.keys import key_id, load_private_key, load_public_key

GOLDEN = Path(__file__).parent / "golden"
UID64_A = "1.2.840.113619.2.55.3.604688119.969.1268071029.320.1234567890123"
UID64_B = "2.25.32980073569858662929564197851150617291812345678901234567890"
ALL_DIGESTS = ("src", "inp", "pre", "wts", "trj", "msk", "lgt", "anm", "exp", "evd")


def digests(names=ALL_DIGESTS) -> dict[str, str]:
    return {n: b64u_sha256(f"test/{n}".encode()) for n in names}


def core_args(**over) -> dict:
    args = {
        "trace_id": "3f2b7c1e-9a4d-4b8e-a1c2-d3e4f5a6b7c8",
        "issued": "2025-06-30T23:59:59Z",
        "study_uid": UID64_A,
        "series_uid": UID64_B,
        "digests": digests(),
        "model_name": "medcert-unet3d-chest",
        "model_version": "1.0.0",
        "tolerance_id": "chest-ct/cpu-fp32/v1",
    }
    args.update(over)
    return args


@pytest.fixture(scope="module")
def key_a() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test key a").digest())


@pytest.fixture(scope="module")
def key_b() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test key b").digest())


@pytest.fixture(scope="module")
def signed(key_a) -> dict:
    return sign_core(build_core(**core_args()), key_a)


def trust(*keys: Ed25519PrivateKey) -> dict:
    return {key_id(k.public_key()): k.public_key() for k in keys}


# --- golden vectors ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden_key(tmp_path_factory) -> Ed25519PrivateKey:
    private = tmp_path_factory.mktemp("golden") / "key.pem"
    shutil.copyfile(GOLDEN / "TEST-ONLY-signing-key.pem", private)
    private.chmod(0o600)
    return load_private_key(private)


def test_golden_core_bytes_signature_and_digests(golden_key):
    args = json.loads((GOLDEN / "core-input.json").read_text())
    evidence = json.loads((GOLDEN / "evidence.json").read_text())
    expected = json.loads((GOLDEN / "expected.json").read_text())

    assert canonical_bytes(evidence) == (GOLDEN / "evidence.jcs").read_bytes()
    assert evidence_digest(evidence) == expected["evidence_digest"] == args["digests"]["evd"]

    core = sign_core(build_core(**args), golden_key)
    blob = core_bytes(core)
    assert blob == (GOLDEN / "core.signed.jcs").read_bytes()
    assert signing_payload(core) == (GOLDEN / "core.pae.bin").read_bytes()
    assert core["sig"] == expected["sig"]
    assert core["kid"] == expected["kid"] == key_id(load_public_key(GOLDEN / "TEST-ONLY-signing-key.pub.pem"))
    assert core_digest(core) == expected["core_digest"] == b64u(hashlib.sha256(blob).digest())
    assert len(blob) == expected["core_bytes_len"] <= MAX_CORE_BYTES
    assert expected["payload_type"] == PAYLOAD_TYPE


def test_golden_signature_checks_without_medcert_code():
    """Rebuild the DSSE PAE by hand from the committed bytes and verify with cryptography alone."""
    core = json.loads((GOLDEN / "core.signed.jcs").read_bytes())
    sig = base64url_decode(core.pop("sig"))
    body = json.dumps(core, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ptype = b"application/vnd.medcert.core+json"
    payload = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(body), body)
    assert payload == (GOLDEN / "core.pae.bin").read_bytes()
    pub = serialization.load_pem_public_key((GOLDEN / "TEST-ONLY-signing-key.pub.pem").read_bytes())
    pub.verify(sig, payload)  # raises InvalidSignature on mismatch
    with pytest.raises(InvalidSignature):
        pub.verify(sig, payload.replace(b"chest-ct", b"chest-cT"))


def base64url_decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_golden_verifies_with_trust_set():
    core = json.loads((GOLDEN / "core.signed.jcs").read_bytes())
    pub = load_public_key(GOLDEN / "TEST-ONLY-signing-key.pub.pem")
    assert validate_core(core) is core
    res = verify_signature(core, {key_id(pub): pub})
    assert res == SignatureResult("valid", core["kid"], res.reason)


def test_pae_matches_dsse_spec_example():
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world")


# --- size -------------------------------------------------------------------------------------------------


def test_core_with_two_64_char_uids_fits_in_1024_bytes(signed):
    assert len(UID64_A) == len(UID64_B) == 64
    assert signed["study"] == UID64_A and signed["series"] == UID64_B
    assert set(signed["d"]) == set(ALL_DIGESTS)
    size = len(core_bytes(signed))
    assert size <= 1024, size
    assert core_bytes(signed) == canonical_bytes(signed)


def test_core_over_1024_bytes_is_refused_when_built():
    with pytest.raises(CertificateError, match="over the 1024-byte limit"):
        build_core(**core_args(model_name="m" * 64, model_version="v" * 64, tolerance_id="t" * 64))


def test_largest_allowed_core_signs_within_limit(key_a):
    # Both UIDs 64 chars and all ten digests leave 78 characters for model name + version + tolerance id.
    core = sign_core(build_core(**core_args(model_name="n" * 30, model_version="v" * 16,
                                            tolerance_id="t" * 32)), key_a)
    assert len(core_bytes(core)) == 1024
    with pytest.raises(CertificateError, match="1025 bytes"):
        build_core(**core_args(model_name="n" * 31, model_version="v" * 16, tolerance_id="t" * 32))


# --- signature failure paths -------------------------------------------------------------------------------


def string_leaves(obj: dict, prefix: tuple = ()):
    for k, v in obj.items():
        if isinstance(v, dict):
            yield from string_leaves(v, (*prefix, k))
        elif isinstance(v, str):
            yield (*prefix, k), v


def set_leaf(obj: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def flip(ch: str) -> str:
    """Another character of the same kind, so the altered field still looks well formed."""
    for alphabet in (string.digits, string.ascii_lowercase, string.ascii_uppercase, "-_", "./"):
        if ch in alphabet:
            return alphabet[(alphabet.index(ch) + 1) % len(alphabet)]
    return "x"


def test_every_character_of_every_signed_field_is_covered(signed, key_a, key_b):
    trusted = trust(key_a, key_b)
    assert verify_signature(signed, trusted).status == "valid"
    covered = set()
    for path, value in string_leaves(signed):
        if path in (("sig",), ("kid",)):
            continue
        for i in range(len(value)):
            core = copy.deepcopy(signed)
            set_leaf(core, path, value[:i] + flip(value[i]) + value[i + 1:])
            res = verify_signature(core, trusted)
            assert res.status == "invalid", (path, i)
        covered.add(".".join(path))
    assert covered == {"v", "tid", "iat", "study", "series", "tol", "mdl.n", "mdl.v",
                       *(f"d.{n}" for n in ALL_DIGESTS)}


@pytest.mark.parametrize("path", [("study",), ("series",)])
def test_uid_replaced_by_null_is_invalid(signed, key_a, path):
    core = copy.deepcopy(signed)
    set_leaf(core, path, None)
    assert verify_signature(core, trust(key_a)).status == "invalid"


def test_added_or_removed_field_is_invalid(signed, key_a):
    for mutate in (lambda c: c.update(extra="x"), lambda c: c["d"].pop("anm"),
                   lambda c: c["mdl"].update(x="1"), lambda c: c.pop("series"),
                   lambda c: c["d"].update(zzz=c["d"]["src"])):
        core = copy.deepcopy(signed)
        mutate(core)
        assert verify_signature(core, trust(key_a)).status == "invalid"


def test_every_character_of_the_signature_is_checked(signed, key_a):
    for i in range(len(signed["sig"])):
        core = dict(signed, sig=signed["sig"][:i] + flip(signed["sig"][i]) + signed["sig"][i + 1:])
        assert verify_signature(core, trust(key_a)).status == "invalid", i


def test_every_bit_of_the_signature_bytes_is_checked(signed, key_a):
    raw = b64u_decode(signed["sig"])
    for bit in range(0, len(raw) * 8, 7):
        bad = bytearray(raw)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert verify_signature(dict(signed, sig=b64u(bytes(bad))), trust(key_a)).status == "invalid", bit


def test_flipped_key_id_is_untrusted_not_valid(signed, key_a):
    kid = signed["kid"]
    core = dict(signed, kid=flip(kid[0]) + kid[1:])
    res = verify_signature(core, trust(key_a))
    assert res.status == "untrusted" and res.key_id == core["kid"]


def test_signature_by_another_trusted_key_is_invalid(signed, key_a, key_b):
    forged = dict(signed, sig=b64u(key_b.sign(signing_payload(signed))))  # kid still names key A
    res = verify_signature(forged, trust(key_a, key_b))
    assert res.status == "invalid" and res.key_id == signed["kid"]


def test_key_id_swapped_to_another_trusted_key_is_invalid(signed, key_a, key_b):
    swapped = dict(signed, kid=key_id(key_b.public_key()))
    assert verify_signature(swapped, trust(key_a, key_b)).status == "invalid"


def test_signed_by_untrusted_key_is_untrusted(key_a, key_b):
    core = sign_core(build_core(**core_args()), key_b)
    res = verify_signature(core, trust(key_a))
    assert res.status == "untrusted"
    assert "cannot be checked" in res.reason
    assert verify_signature(core, {}).status == "untrusted"
    assert verify_signature(core, trust(key_b)).status == "valid"


@pytest.mark.parametrize("sig", [
    lambda s: s[:-1], lambda s: s[:43], lambda s: "", lambda s: s + "A", lambda s: s + "==",
    lambda s: s[:-1] + "B",  # unused low bits set: same bytes in a lax decoder, refused here
    lambda s: s.replace(s[5], "+"), lambda s: None, lambda s: 42,
])
def test_truncated_or_malformed_signature_is_invalid(signed, key_a, sig):
    core = dict(signed, sig=sig(signed["sig"]))
    res = verify_signature(core, trust(key_a))
    assert res.status == "invalid"


def test_verify_signature_never_raises(signed, key_a):
    for bad in (None, [], "x", {"kid": 1}, dict(signed, d=float("nan")), dict(signed, kid=None),
                {k: v for k, v in signed.items() if k != "sig"}, dict(signed, v=2**60)):
        res = verify_signature(bad, trust(key_a))
        assert res.status == "invalid"


def test_key_order_does_not_matter(signed, key_a):
    reordered = {k: signed[k] for k in reversed(list(signed))}
    reordered["d"] = {k: signed["d"][k] for k in reversed(list(signed["d"]))}
    assert verify_signature(reordered, trust(key_a)).status == "valid"
    assert core_digest(reordered) == core_digest(signed)


# --- building, signing ------------------------------------------------------------------------------------


def test_build_core_layout_and_optional_digests(key_a):
    core = build_core(**core_args(digests=digests(n for n in ALL_DIGESTS if n not in ("anm", "exp")),
                                  study_uid=None, series_uid=None))
    assert list(core) == ["v", "tid", "iat", "study", "series", "d", "mdl", "tol"]
    assert core["v"] == CORE_VERSION and core["study"] is None
    assert "anm" not in core["d"] and "exp" not in core["d"]
    signed = sign_core(core, key_a)
    assert list(signed)[-2:] == ["kid", "sig"] and "sig" not in core
    assert verify_signature(signed, trust(key_a)).status == "valid"


def test_build_core_refuses_unknown_or_missing_digest():
    with pytest.raises(CertificateError, match="unknown digest name 'foo'"):
        build_core(**core_args(digests={**digests(), "foo": digests()["src"]}))
    d = digests()
    del d["lgt"]
    with pytest.raises(CertificateError, match=r'missing field "d\.lgt"'):
        build_core(**core_args(digests=d))


def test_resigning_replaces_key_and_signature(signed, key_b):
    again = sign_core(signed, key_b)
    assert again["kid"] == key_id(key_b.public_key()) != signed["kid"]
    assert verify_signature(again, trust(key_b)).status == "valid"


def test_new_trace_id_and_utc_now():
    ids = {new_trace_id() for _ in range(50)}
    assert len(ids) == 50
    for t in ids:
        assert uuid.UUID(t).version == 4 and str(uuid.UUID(t)) == t
    now = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", now)
    parsed = datetime.strptime(now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 5


def test_evidence_digest_is_sha256_of_canonical_bytes():
    ev = {"model": {"b": 1, "a": [1.5, "é"]}, "input": {}}
    assert evidence_digest(ev) == b64u(hashlib.sha256(canonical_bytes(ev)).digest())
    assert evidence_digest({"input": {}, "model": {"a": [1.5, "é"], "b": 1}}) == evidence_digest(ev)
    assert evidence_digest(ev) != evidence_digest({"model": {"b": 2, "a": [1.5, "é"]}, "input": {}})
    with pytest.raises(CertificateError):
        evidence_digest({"model": float("nan")})
    with pytest.raises(CertificateError):
        evidence_digest({"model": 2**53})
    with pytest.raises(CertificateError):
        evidence_digest([1])  # type: ignore[arg-type]


def test_b64u_decode_is_strict():
    raw = hashlib.sha256(b"x").digest()
    text = b64u(raw)
    assert b64u_decode(text) == raw
    last = text[-1]
    for bad in (text + "=", text[:-1] + chr(ord(last) + 1), text[:10] + "+" + text[11:], text[:-1],
                " " + text):
        with pytest.raises(ValueError):
            b64u_decode(bad)


# --- validation -------------------------------------------------------------------------------------------


REQUIRED = ("v", "tid", "iat", "study", "series", "d", "mdl", "tol", "kid", "sig")


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_field_is_named(signed, field):
    core = {k: v for k, v in signed.items() if k != field}
    with pytest.raises(CertificateError, match=f'missing field "{field}"'):
        validate_core(core)


@pytest.mark.parametrize("path", [("d", "src"), ("d", "evd"), ("mdl", "n"), ("mdl", "v")])
def test_missing_nested_field_is_named(signed, path):
    core = copy.deepcopy(signed)
    del core[path[0]][path[1]]
    with pytest.raises(CertificateError, match=f'missing field "{path[0]}.{path[1]}"'):
        validate_core(core)


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda c: c.update(x=1), "x"),
    (lambda c: c["d"].update(foo=c["d"]["src"]), "d.foo"),
    (lambda c: c["mdl"].update(h="1"), "mdl.h"),
])
def test_extra_field_is_named(signed, mutate, field):
    core = copy.deepcopy(signed)
    mutate(core)
    with pytest.raises(CertificateError, match=f'unexpected field "{re.escape(field)}"'):
        validate_core(core)


@pytest.mark.parametrize(("field", "value"), [
    ("tid", 5), ("iat", None), ("d", []), ("mdl", "x"), ("tol", 1.5), ("kid", None), ("sig", True),
    ("study", 123),
])
def test_wrong_type_is_named(signed, field, value):
    with pytest.raises(CertificateError, match=f'field "{field}"'):
        validate_core(dict(signed, **{field: value}))


@pytest.mark.parametrize("version", ["medcert/2", "medcert/0", "MEDCERT/1", "", "medcert/1 "])
def test_unknown_version_is_its_own_error(signed, version):
    with pytest.raises(UnknownSchemaError, match="newer or unknown"):
        validate_core(dict(signed, v=version))
    # even when the rest is of another shape: the version decides first
    with pytest.raises(UnknownSchemaError):
        validate_core({"v": version, "other": 1})


def test_non_string_version_is_malformed_not_unknown(signed):
    with pytest.raises(CertificateError, match='field "v" must be a string') as exc:
        validate_core(dict(signed, v=1))
    assert not isinstance(exc.value, UnknownSchemaError)


GOOD_DIGEST = b64u_sha256(b"x")


@pytest.mark.parametrize("bad", [
    GOOD_DIGEST[:-1], GOOD_DIGEST + "A", GOOD_DIGEST[:-1] + "=", "+" + GOOD_DIGEST[1:],
    GOOD_DIGEST[:-1] + "B",  # unused bits set
    GOOD_DIGEST[:-1] + "\n", "é" + GOOD_DIGEST[1:], "",
])
def test_malformed_digest_is_refused(signed, bad):
    core = copy.deepcopy(signed)
    core["d"]["msk"] = bad
    with pytest.raises(CertificateError, match=r'"d\.msk"'):
        validate_core(core)


@pytest.mark.parametrize("bad", [
    "1.02.3", "1..2", ".1.2", "1.2.", "1.2.3a", "1" * 65, "../../etc", "1.2/../3", "1.2\n", "١.٢", "", " 1.2",
])
@pytest.mark.parametrize("field", ["study", "series"])
def test_malformed_uid_is_refused(signed, field, bad):
    with pytest.raises(CertificateError, match=f'"{field}"'):
        validate_core(dict(signed, **{field: bad}))


@pytest.mark.parametrize(("field", "bad"), [
    ("tid", "3F2B7C1E-9A4D-4B8E-A1C2-D3E4F5A6B7C8"),   # uppercase
    ("tid", "3f2b7c1e-9a4d-1b8e-a1c2-d3e4f5a6b7c8"),   # version 1
    ("tid", "3f2b7c1e9a4d4b8ea1c2d3e4f5a6b7c8"),       # no dashes
    ("tid", "3f2b7c1e-9a4d-4b8e-71c2-d3e4f5a6b7c8"),   # wrong variant
    ("iat", "2025-06-30T23:59:59"), ("iat", "2025-06-30T23:59:59.1Z"), ("iat", "2025-02-30T00:00:00Z"),
    ("iat", "2025-06-30T23:59:59+00:00"), ("iat", "2025-06-30 23:59:59Z"), ("iat", "2025-06-30T24:00:00Z"),
    ("tol", ""), ("tol", "a b"), ("tol", "t" * 65), ("tol", "tol\n"), ("tol", "tolé"),
])
def test_malformed_scalar_is_refused(signed, field, bad):
    with pytest.raises(CertificateError, match=f'"{field}"'):
        validate_core(dict(signed, **{field: bad}))


@pytest.mark.parametrize("bad", ["", "n" * 65, "modèle", "a\\b", " lead", "trail ", "tab\tx", "x\n"])
@pytest.mark.parametrize("sub", ["n", "v"])
def test_malformed_model_label_is_refused(signed, sub, bad):
    core = copy.deepcopy(signed)
    core["mdl"][sub] = bad
    with pytest.raises(CertificateError, match=f'"mdl.{sub}"'):
        validate_core(core)


def test_validation_errors_are_one_line(signed):
    for bad in (dict(signed, tid="x" * 5000 + "\n"), dict(signed, d={"a\nb": 1}), {"v": "x\ny" * 100}, [1]):
        with pytest.raises(CertificateError) as exc:
            validate_core(bad)
        msg = str(exc.value)
        assert "\n" not in msg and len(msg) < 300, msg


def test_unsigned_core_is_valid_only_when_asked(signed):
    unsigned = {k: v for k, v in signed.items() if k not in ("kid", "sig")}
    assert validate_core(unsigned, signed=False) is unsigned
    with pytest.raises(CertificateError, match='missing field "kid"'):
        validate_core(unsigned)
