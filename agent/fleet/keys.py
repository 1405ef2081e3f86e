"""Ed25519 keys for fleet updates: generate, encode, load, and name them.

A key is named by its ``key_id``: the first 16 hex digits of the sha256 of its 32 raw bytes.
An envelope carries the id of the key that signed it, so a device holding several keys
(rotation) knows which one to check, and a rejection can say which key was used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Sequence

from agent.errors import ConfigError, FleetError
from agent.manifest.paths import is_inline_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# cryptography costs the daemon 8 MB of RSS (docs/benchmarks.md, issue 13), and a device only needs it
# to check a signature: device-side keys are their 32 raw bytes, parsed here without it, and
# cryptography is imported where a signature is made or checked.
KEY_ID_HEX = 16
RAW_KEY_BYTES = 32
# SubjectPublicKeyInfo DER of an Ed25519 key (RFC 8410): this fixed prefix, then the 32 raw bytes
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PEM_PUBLIC = re.compile(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", re.S)


def raw_public(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def raw_key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


def key_id(public: Ed25519PublicKey) -> str:
    return raw_key_id(raw_public(public))


def public_b64(public: Ed25519PublicKey) -> str:
    """The form config.yaml accepts inline in ``fleet.public_keys``."""
    return base64.b64encode(raw_public(public)).decode("ascii")


def public_pem(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(private: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    # Unencrypted: the signing key lives on the operator's machine, protected by its file mode (0600).
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def generate_private_key() -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key from a PEM file written by ``edge-agent fleet keygen``."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FleetError(f"cannot read the signing key {path}: {exc.strerror or exc}; "
                         "pass the private key file written by 'edge-agent fleet keygen'") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise FleetError(f"{path} is not an unencrypted PEM private key ({exc}); "
                         "pass the private key file written by 'edge-agent fleet keygen'") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FleetError(f"{path} holds a {type(key).__name__}, not an Ed25519 key; "
                         "create one with 'edge-agent fleet keygen'")
    return key


def parse_public_key(text: str, where: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as PEM text or as their base64; ``where`` names
    it in errors."""
    text = text.strip()
    if "-----BEGIN" in text:
        return _pem_public_raw(text, where)
    raw = _b64(text)
    if len(raw) != RAW_KEY_BYTES:
        raise ConfigError(f"{where}: expected a PEM public key or the base64 of 32 raw Ed25519 key bytes, as "
                          "printed by 'edge-agent fleet keygen'")
    return raw


def _b64(text: str) -> bytes:
    """The bytes ``text`` encodes, or b"" when it is not base64 (the callers' length checks refuse that)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _pem_public_raw(text: str, where: str) -> bytes:
    found = _PEM_PUBLIC.search(text)
    if found is not None:
        der = _b64("".join(found.group(1).split()))
        if len(der) == len(ED25519_SPKI_PREFIX) + RAW_KEY_BYTES and der.startswith(ED25519_SPKI_PREFIX):
            return der[len(ED25519_SPKI_PREFIX):]
    # Not the one form `fleet keygen` writes: cryptography says exactly what it is instead.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(text.encode("ascii", "replace"))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{where}: not a valid PEM public key ({exc}); use the .pub file written by "
                          "'edge-agent fleet keygen'") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where}: a {type(key).__name__} is not an Ed25519 key; fleet signatures are "
                          "Ed25519 ('edge-agent fleet keygen')")
    return raw_public(key)


def load_public_keys(entries: Sequence[str]) -> Dict[str, bytes]:
    """``fleet.public_keys`` (paths already resolved by ``resolve_config_paths``): raw key bytes by key id."""
    keys: Dict[str, bytes] = {}
    for i, entry in enumerate(entries):
        where = f"fleet.public_keys[{i}]"
        if is_inline_key(entry):
            key = parse_public_key(entry, where)
        else:
            try:
                text = Path(entry).read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{where}: cannot read {entry} ({type(exc).__name__}); give a readable public "
                                  "key file, or the key inline as base64") from None
            key = parse_public_key(text, f"{where} ({entry})")
        keys[raw_key_id(key)] = key
    return keys
