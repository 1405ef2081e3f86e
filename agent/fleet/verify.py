"""Whether an envelope may be acted on: its hash, its signature, its target and its version.

Each check raises ``FleetError`` whose message becomes the ``reason`` of a ``rejected``
report, so it says what is wrong and what the operator should do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from agent.errors import FleetError
from agent.fleet.envelope import Envelope, signature_bytes
from agent.fleet.keys import load_public_keys
from agent.manifest.config import FleetConfig


@dataclass(frozen=True)
class TrustPolicy:
    keys: Mapping[str, bytes]  # raw Ed25519 public keys by key id (agent/fleet/keys.py)
    require_signature: bool = True

    @classmethod
    def from_config(cls, fleet: FleetConfig) -> TrustPolicy:
        """``fleet`` from a config passed through ``resolve_config_paths``; bad key entries raise ``ConfigError``."""
        return cls(load_public_keys(fleet.public_keys), fleet.require_signature)


def verify_envelope(envelope: Envelope, policy: TrustPolicy) -> Optional[str]:
    """Check the manifest hash and the signature; the id of the key that verified it, or None when
    the envelope is unsigned and the policy allows that."""
    actual = hashlib.sha256(envelope.manifest_bytes()).hexdigest()
    if actual != envelope.sha256:
        raise FleetError(f"sha256 mismatch: the envelope says {envelope.sha256}, its manifest hashes to {actual}; "
                         "the manifest was altered after signing: sign it again")
    if envelope.signature is None:
        if policy.require_signature:
            raise FleetError("unsigned envelope, and this device requires signed updates "
                             "(fleet.require_signature: true): sign it with 'edge-agent fleet sign --key ...'")
        return None
    if not policy.keys:
        raise FleetError("signed envelope, but this device trusts no key (fleet.public_keys is empty): "
                         "add the signer's public key to config.yaml")
    signature = signature_bytes(envelope)
    message = envelope.signed_bytes()
    if envelope.key_id is not None:
        key = policy.keys.get(envelope.key_id)
        if key is None:
            raise FleetError(f"signed with key {envelope.key_id}, which this device does not trust (trusted: "
                             f"{', '.join(sorted(policy.keys))}); add its public key to fleet.public_keys or "
                             "sign with a trusted key")
        candidates = {envelope.key_id: key}
    else:
        candidates = dict(policy.keys)
    # imported here, not at start-up: it is the daemon's only use of cryptography (8 MB of RSS)
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    for kid, raw in candidates.items():
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
            return kid
        except InvalidSignature:
            continue
    raise FleetError(f"bad signature (key {envelope.key_id or 'not named'}): the envelope was altered or forged; "
                     "sign the manifest again with a trusted key")


def check_target(envelope: Envelope, device_id: str, groups: Sequence[str]) -> None:
    """A targeted envelope applies only to its device or to members of its group, whatever topic it came on."""
    if envelope.target is None:
        return
    kind, name = envelope.target.split(":", 1)
    if (kind == "device" and name == device_id) or (kind == "group" and name in groups):
        return
    mine = ", ".join([f"device:{device_id}", *(f"group:{g}" for g in groups)])
    raise FleetError(f"envelope is for {envelope.target}, not this device ({mine}); publish it to its own topic")


def check_newer(envelope: Envelope, applied_version: int) -> None:
    """Replay protection: only a version above the applied one is accepted."""
    if envelope.version <= applied_version:
        raise FleetError(f"replay: version {envelope.version} is not newer than the applied version "
                         f"{applied_version}; raise 'version' in the manifest and sign it again")
