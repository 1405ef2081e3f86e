"""The signed envelope a desired manifest travels in, and the exact bytes its signature covers.

The signature is Ed25519 over::

    edge-agent-manifest-v1\\n<version>\\n<sha256 of the manifest bytes>\\n<target or "">\\n<sha256 of models>\\n

so the manifest text (through its hash), the version, the intended target and the model
checksums are all bound: changing any of them breaks the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.errors import FleetError
from agent.fleet.keys import key_id
from agent.manifest.config import DEVICE_ID_PATTERN
from agent.manifest.models import PATH_MAX

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ENVELOPE_SCHEMA = "edge-agent/envelope/1"
SIGNED_PREFIX = b"edge-agent-manifest-v1\n"
# A manifest is at most 4 MiB (agent/manifest/yamlload.py); JSON escaping can at most double it.
MAX_ENVELOPE_BYTES = 8 << 20
SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"
TARGET_PATTERN = r"^(device|group):" + DEVICE_ID_PATTERN[1:]


class ModelFile(BaseModel):
    """A model file the manifest needs, with the hash it must have on the device."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    path: str = Field(min_length=1, max_length=PATH_MAX,
                      description="relative to the device's first fleet.allowed_model_dirs entry, or absolute")
    sha256: str = Field(pattern=SHA256_PATTERN)
    url: Optional[str] = Field(None, max_length=4096, description="http(s) URL to fetch it from when missing")
    size: Optional[int] = Field(None, ge=0, description="bytes; lets the device check space before downloading")

    @field_validator("sha256")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()


class Envelope(BaseModel):
    """Unknown keys are ignored (a newer fleet tool may add some); they are never signed or used."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, populate_by_name=True)

    schema_id: str = Field(alias="schema")
    version: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)
    manifest: str = Field(min_length=1)
    signature: Optional[str] = None
    key_id: Optional[str] = Field(None, max_length=64)
    models: List[ModelFile] = Field(default_factory=list, max_length=1024)
    target: Optional[str] = Field(None, pattern=TARGET_PATTERN, description="device:<id> or group:<name>")

    @field_validator("sha256")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()

    @field_validator("schema_id")
    @classmethod
    def _known_schema(cls, v: str) -> str:
        if v != ENVELOPE_SCHEMA:
            raise ValueError(f"expected {ENVELOPE_SCHEMA!r} (got {v[:80]!r}); update the agent or re-sign with a "
                             "matching 'edge-agent fleet sign'")
        return v

    def manifest_bytes(self) -> bytes:
        return self.manifest.encode("utf-8")

    def signed_bytes(self) -> bytes:
        return signed_bytes(self.version, self.sha256, self.target, self.models)

    def to_json(self) -> bytes:
        doc: Dict[str, Any] = self.model_dump(by_alias=True, exclude_none=True)
        doc["models"] = [m.model_dump(exclude_none=True) for m in self.models]
        return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8")


def models_digest(models: Sequence[ModelFile]) -> str:
    items = [m.model_dump(exclude_none=True) for m in models]
    canonical = json.dumps(items, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def signed_bytes(version: int, sha256: str, target: Optional[str], models: Sequence[ModelFile]) -> bytes:
    """What the Ed25519 signature covers (see the module docstring)."""
    lines = [str(version), sha256.lower(), target or "", models_digest(models)]
    return SIGNED_PREFIX + "".join(f"{line}\n" for line in lines).encode("utf-8")


def build_envelope(
    manifest: bytes,
    version: int,
    private_key: Optional[Ed25519PrivateKey],
    models: Sequence[ModelFile] = (),
    target: Optional[str] = None,
) -> Envelope:
    """An envelope for the manifest file's bytes; unsigned when ``private_key`` is None."""
    try:
        text = manifest.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FleetError(f"the manifest is not UTF-8 text (byte offset {exc.start}); save it as UTF-8") from None
    digest = hashlib.sha256(manifest).hexdigest()
    fields: Dict[str, Any] = {"schema": ENVELOPE_SCHEMA, "version": version, "sha256": digest, "manifest": text,
                              "models": list(models), "target": target}
    if private_key is not None:
        message = signed_bytes(version, digest, target, models)
        fields["signature"] = base64.b64encode(private_key.sign(message)).decode("ascii")
        fields["key_id"] = key_id(private_key.public_key())
    try:
        return Envelope.model_validate(fields)
    except ValidationError as exc:
        raise FleetError(f"cannot build the envelope: {_first_error(exc)}") from None


def parse_envelope(payload: bytes) -> Envelope:
    """The envelope in an MQTT payload; ``FleetError`` says what is wrong with it."""
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise FleetError(f"envelope is {len(payload)} bytes, more than {MAX_ENVELOPE_BYTES}; "
                         "a manifest must stay under 4 MiB")
    try:
        return Envelope.model_validate_json(payload)
    except ValidationError as exc:
        raise FleetError(f"not a valid {ENVELOPE_SCHEMA} envelope: {_first_error(exc)}; "
                         "publish the JSON written by 'edge-agent fleet sign'") from None


def signature_bytes(envelope: Envelope) -> bytes:
    assert envelope.signature is not None
    try:
        return base64.b64decode(envelope.signature, validate=True)
    except (binascii.Error, ValueError):
        raise FleetError("signature: not base64; publish the JSON written by 'edge-agent fleet sign'") from None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    err = errors[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "<document>"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {err.get('msg', '')}{more}"
