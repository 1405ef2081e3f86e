"""Ed25519 keys for fleet updates: generate, encode, load, and name them.

A key is named by its ``key_id``: the first 16 hex digits of the sha256 of its 32 raw bytes.
An envelope carries the id of the key that signed it, so a device holding several keys
(rotation) knows which one to check, and a rejection can say which key was used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Dict, Sequence

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.errors import ConfigError, FleetError
from agent.manifest.paths import is_inline_key

KEY_ID_HEX = 16
RAW_KEY_BYTES = 32


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(public)).hexdigest()[:KEY_ID_HEX]


def public_b64(public: Ed25519PublicKey) -> str:
    """The form config.yaml accepts inline in ``fleet.public_keys``."""
    return base64.b64encode(raw_public(public)).decode("ascii")


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(private: Ed25519PrivateKey) -> bytes:
    # Unencrypted: the signing key lives on the operator's machine, protected by its file mode (0600).
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key from a PEM file written by ``edge-agent fleet keygen``."""
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


def parse_public_key(text: str, where: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text or the base64 of its 32 raw bytes; ``where`` names it in errors."""
    text = text.strip()
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode("ascii", "replace"))
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"{where}: not a valid PEM public key ({exc}); use the .pub file written by "
                              "'edge-agent fleet keygen'") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{where}: a {type(key).__name__} is not an Ed25519 key; fleet signatures are "
                              "Ed25519 ('edge-agent fleet keygen')")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != RAW_KEY_BYTES:
        raise ConfigError(f"{where}: expected a PEM public key or the base64 of 32 raw Ed25519 key bytes, as "
                          "printed by 'edge-agent fleet keygen'")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_keys(entries: Sequence[str]) -> Dict[str, Ed25519PublicKey]:
    """``fleet.public_keys`` (paths already resolved by ``resolve_config_paths``) by key id."""
    keys: Dict[str, Ed25519PublicKey] = {}
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
        keys[key_id(key)] = key
    return keys
