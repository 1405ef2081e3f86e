"""Envelope format, signatures, key rotation, replay, targets, path confinement and model hashes (no broker)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ConfigError, FleetError
from agent.fleet.disk import StagedManifests
from agent.fleet.envelope import MAX_ENVELOPE_BYTES, ModelFile, build_envelope, parse_envelope, signed_bytes
from agent.fleet.keys import key_id, load_public_keys, parse_public_key, public_pem
from agent.fleet.validate import check_model_files, stage_manifest
from agent.fleet.verify import TrustPolicy, check_newer, check_target, verify_envelope
from agent.hashing import sha256_file
from agent.manifest.load import InvalidManifestError, LoadedManifest
from tests.fleet.helpers import Signer, make_config, manifest_text, tampered, unsigned, write_model_files

MANIFEST = manifest_text(5)


def policy(*signers: Signer, require: bool = True) -> TrustPolicy:
    return TrustPolicy(load_public_keys([s.public for s in signers]), require)


# signatures ------------------------------------------------------------------------------------------------
def test_good_signature_verifies_and_names_the_key() -> None:
    signer = Signer()
    env = parse_envelope(signer.envelope(MANIFEST, 5))
    assert verify_envelope(env, policy(signer)) == key_id(signer.key.public_key())


def test_forged_manifest_with_recomputed_hash_fails_the_signature() -> None:
    signer = Signer()
    forged = MANIFEST.replace("target: cpu", "target: gpu")
    payload = tampered(signer.envelope(MANIFEST, 5), manifest=forged,
                       sha256=build_envelope(forged.encode(), 5, None).sha256)
    with pytest.raises(FleetError, match="bad signature"):
        verify_envelope(parse_envelope(payload), policy(signer))


def test_manifest_changed_without_its_hash_is_a_sha_mismatch() -> None:
    signer = Signer()
    payload = tampered(signer.envelope(MANIFEST, 5), manifest=MANIFEST + "# changed\n")
    with pytest.raises(FleetError, match="sha256 mismatch"):
        verify_envelope(parse_envelope(payload), policy(signer))


@pytest.mark.parametrize("change", [{"version": 6}, {"target": "device:dev1"},
                                    {"models": [{"path": "model/inference.json", "sha256": "0" * 64}]}])
def test_every_signed_field_is_bound(change: dict) -> None:
    signer = Signer()
    payload = tampered(signer.envelope(MANIFEST, 5), **change)
    with pytest.raises(FleetError, match="bad signature"):
        verify_envelope(parse_envelope(payload), policy(signer))


def test_key_the_device_does_not_trust_is_named() -> None:
    trusted, stranger = Signer(), Signer()
    env = parse_envelope(stranger.envelope(MANIFEST, 5))
    with pytest.raises(FleetError, match=f"signed with key {env.key_id}, which this device does not trust"):
        verify_envelope(env, policy(trusted))


def test_signature_of_another_key_under_a_trusted_key_id_is_rejected() -> None:
    trusted, stranger = Signer(), Signer()
    payload = tampered(stranger.envelope(MANIFEST, 5), key_id=key_id(trusted.key.public_key()))
    with pytest.raises(FleetError, match="bad signature"):
        verify_envelope(parse_envelope(payload), policy(trusted))


def test_without_key_id_every_trusted_key_is_tried() -> None:
    old, new = Signer(), Signer()
    doc = json.loads(new.envelope(MANIFEST, 5))
    del doc["key_id"]
    env = parse_envelope(json.dumps(doc).encode())
    assert verify_envelope(env, policy(old, new)) == key_id(new.key.public_key())


def test_unsigned_is_rejected_when_signatures_are_required_and_allowed_otherwise() -> None:
    env = parse_envelope(unsigned(MANIFEST, 5))
    with pytest.raises(FleetError, match="unsigned envelope"):
        verify_envelope(env, policy(Signer()))
    assert verify_envelope(env, policy(require=False)) is None


def test_signed_envelope_on_a_device_without_keys_is_rejected_even_if_unsigned_is_allowed() -> None:
    env = parse_envelope(Signer().envelope(MANIFEST, 5))
    with pytest.raises(FleetError, match="trusts no key"):
        verify_envelope(env, policy(require=False))


def test_key_rotation_accepts_both_keys_then_only_the_new_one() -> None:
    old, new = Signer(), Signer()
    from_old = parse_envelope(old.envelope(MANIFEST, 5))
    from_new = parse_envelope(new.envelope(MANIFEST, 5))
    both = policy(old, new)
    assert verify_envelope(from_old, both) == key_id(old.key.public_key())
    assert verify_envelope(from_new, both) == key_id(new.key.public_key())
    retired = policy(new)
    assert verify_envelope(from_new, retired) == key_id(new.key.public_key())
    with pytest.raises(FleetError, match="does not trust"):
        verify_envelope(from_old, retired)


def test_garbage_signature_is_a_clear_error() -> None:
    signer = Signer()
    payload = tampered(signer.envelope(MANIFEST, 5), signature="not base64!")
    with pytest.raises(FleetError, match="signature: not base64"):
        verify_envelope(parse_envelope(payload), policy(signer))


ROUND_TRIP = Signer()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**40), st.sampled_from([None, "device:dev1", "group:lab"]),
       st.lists(st.sampled_from(["a.json", "b/c.pdiparams"]), max_size=2), st.text(min_size=1, max_size=200))
def test_any_manifest_text_survives_json_and_verifies(
        version: int, target: Optional[str], paths: List[str], text: str) -> None:
    models = [ModelFile(path=p, sha256="ab" * 32) for p in paths]
    env = parse_envelope(build_envelope(text.encode(), version, ROUND_TRIP.key, models, target).to_json())
    assert env.manifest == text
    assert env.signed_bytes() == signed_bytes(version, env.sha256, target, models)
    assert verify_envelope(env, policy(ROUND_TRIP)) == key_id(ROUND_TRIP.key.public_key())


# envelope format ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload, message", [
    (b"not json", "not a valid edge-agent/envelope/1 envelope"),
    (b"[]", "not a valid"),
    (json.dumps({"schema": "edge-agent/envelope/2", "version": 1, "sha256": "0" * 64, "manifest": "x"}).encode(),
     "expected 'edge-agent/envelope/1'"),
    (json.dumps({"schema": "edge-agent/envelope/1", "version": "5", "sha256": "0" * 64, "manifest": "x"}).encode(),
     "version"),
    (json.dumps({"schema": "edge-agent/envelope/1", "version": -1, "sha256": "0" * 64, "manifest": "x"}).encode(),
     "version"),
    (json.dumps({"schema": "edge-agent/envelope/1", "version": 1, "sha256": "xyz", "manifest": "x"}).encode(),
     "sha256"),
    (json.dumps({"schema": "edge-agent/envelope/1", "version": 1, "sha256": "0" * 64, "manifest": "x",
                 "target": "group:+"}).encode(), "target"),
])
def test_malformed_envelopes_are_rejected(payload: bytes, message: str) -> None:
    with pytest.raises(FleetError, match=message):
        parse_envelope(payload)


def test_oversized_envelope_is_rejected_before_parsing() -> None:
    with pytest.raises(FleetError, match="more than"):
        parse_envelope(b" " * (MAX_ENVELOPE_BYTES + 1))


def test_unknown_envelope_keys_are_ignored() -> None:
    payload = tampered(Signer().envelope(MANIFEST, 5), comment="added by a newer tool")
    assert parse_envelope(payload).version == 5


# keys -----------------------------------------------------------------------------------------------------------
def test_public_keys_from_pem_file_pem_text_and_base64(tmp_path: Path) -> None:
    a, b, c = Signer(), Signer(), Signer()
    (tmp_path / "a.pub").write_bytes(public_pem(a.key.public_key()))
    pem_text = public_pem(b.key.public_key()).decode()
    keys = load_public_keys([str(tmp_path / "a.pub"), pem_text, c.public])
    assert set(keys) == {key_id(s.key.public_key()) for s in (a, b, c)}


def test_pem_keys_are_read_without_cryptography_to_the_same_raw_bytes(tmp_path: Path) -> None:
    """The device parses keygen's PEM by hand (RFC 8410's fixed DER prefix): the same 32 bytes
    cryptography reads, CRLF line ends included; and the daemon's start-up imports no cryptography."""
    signer = Signer()
    pem = public_pem(signer.key.public_key())
    expected = signer.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert parse_public_key(pem.decode(), "k") == expected
    assert parse_public_key(pem.decode().replace("\n", "\r\n"), "k") == expected
    probe = ("import sys, agent.service.wiring, agent.cli.main, agent.fleet.verify; "
             "print(sorted(m for m in sys.modules if m.startswith('cryptography')))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_trust_policy_from_a_resolved_config(tmp_path: Path) -> None:
    signer = Signer()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "fleet.pub").write_bytes(public_pem(signer.key.public_key()))
    config = make_config(tmp_path, ["keys/fleet.pub"])
    trust = TrustPolicy.from_config(config.fleet)
    assert list(trust.keys) == [key_id(signer.key.public_key())] and trust.require_signature


def test_a_non_ed25519_public_key_is_a_config_error(tmp_path: Path) -> None:
    rsa_pub = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    path = tmp_path / "rsa.pub"
    path.write_bytes(rsa_pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ConfigError, match=r"fleet.public_keys\[0\].*not an Ed25519 key"):
        load_public_keys([str(path)])
    with pytest.raises(ConfigError, match=r"fleet.public_keys\[0\].*expected a PEM public key or the base64"):
        bad = tmp_path / "bad.pub"
        bad.write_text(base64.b64encode(b"short").decode())
        load_public_keys([str(bad)])


# replay and target --------------------------------------------------------------------------------------------
def test_replay_of_an_applied_or_older_version_is_rejected() -> None:
    env = parse_envelope(Signer().envelope(MANIFEST, 5))
    check_newer(env, 4)
    for applied in (5, 9):
        with pytest.raises(FleetError, match=f"replay: version 5 is not newer than the applied version {applied}"):
            check_newer(env, applied)


def test_target_must_be_this_device_or_one_of_its_groups() -> None:
    signer = Signer()
    for target in ("device:dev1", "group:lab", None):
        check_target(parse_envelope(signer.envelope(MANIFEST, 5, target=target)), "dev1", ["lab"])
    for target in ("device:dev2", "group:other"):
        with pytest.raises(FleetError, match=f"envelope is for {target}, not this device"):
            check_target(parse_envelope(signer.envelope(MANIFEST, 5, target=target)), "dev1", ["lab"])


# validating: manifest, confinement, model files ------------------------------------------------------------------
@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_model_files(root)
    return root


def stage(tmp_path: Path, models_dir: Path, text: str, version: int,
          models: Sequence[ModelFile] = ()) -> LoadedManifest:
    env = parse_envelope(Signer().envelope(text, version, models))
    return stage_manifest(env, StagedManifests(tmp_path / "state" / "fleet"), [models_dir])


def test_valid_manifest_is_staged_with_paths_under_the_first_allowed_dir(tmp_path: Path, models_dir: Path) -> None:
    loaded = stage(tmp_path, models_dir, MANIFEST, 5)
    staged = tmp_path / "state" / "fleet" / "manifest-v5.yaml"
    assert staged.read_text() == MANIFEST
    assert loaded.path == staged and loaded.base_dir == models_dir
    assert loaded.manifest.models[0].model == str(models_dir / "model" / "inference.json")


@pytest.mark.parametrize("model", ["../outside/inference.json", "/etc/passwd.json", "link/inference.json"])
def test_paths_escaping_the_allowed_dirs_are_rejected_and_nothing_is_staged(
        tmp_path: Path, models_dir: Path, model: str) -> None:
    outside = tmp_path / "outside"
    write_model_files(outside)
    (outside / "inference.json").write_text("{}")
    os.symlink(outside, models_dir / "link")
    with pytest.raises(InvalidManifestError, match="path escapes the allowed model directories"):
        stage(tmp_path, models_dir, manifest_text(5, model=model), 5)
    assert not (tmp_path / "state" / "fleet" / "manifest-v5.yaml").exists()


def test_invalid_manifest_lists_its_problems(tmp_path: Path, models_dir: Path) -> None:
    with pytest.raises(InvalidManifestError, match=r"manifest-v5.yaml:6: models\[0\].target"):
        stage(tmp_path, models_dir, MANIFEST.replace("target: cpu", "target: tpu"), 5)


def test_envelope_and_manifest_versions_must_agree(tmp_path: Path, models_dir: Path) -> None:
    with pytest.raises(FleetError, match="version mismatch: the envelope says 6, the manifest says 5"):
        stage(tmp_path, models_dir, MANIFEST, 6)


def test_model_file_hashes(tmp_path: Path, models_dir: Path) -> None:
    params = models_dir / "model" / "inference.pdiparams"
    good = ModelFile(path="model/inference.pdiparams", sha256=sha256_file(params))
    stage(tmp_path, models_dir, MANIFEST, 5, [good])
    bad = ModelFile(path="model/inference.pdiparams", sha256="0" * 64)
    with pytest.raises(FleetError, match=r"models\[0\] model/inference.pdiparams: sha256 mismatch"):
        stage(tmp_path, models_dir, MANIFEST, 5, [bad])


def test_model_files_missing_escaping_or_remote(tmp_path: Path, models_dir: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"s")
    models = [
        ModelFile(path="model/absent.onnx", sha256="1" * 64),
        ModelFile(path="model/remote.onnx", sha256="2" * 64, url="https://models.example/remote.onnx"),
        ModelFile(path="../secret.bin", sha256="3" * 64),
    ]
    with pytest.raises(FleetError) as info:
        check_model_files(models, models_dir, [models_dir])
    lines = str(info.value).splitlines()
    assert "models[0] model/absent.onnx: not on the device" in lines[0]
    # check_model_files alone never downloads: the controller fetches first (tests/fleet/test_artifacts*.py)
    assert "models[1] model/remote.onnx: not on the device" in lines[1]
    assert "models[2] ../secret.bin: path escapes the allowed model directories" in lines[2]
