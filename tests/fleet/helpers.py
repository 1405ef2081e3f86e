"""Test-side fleet pieces: signing keys, manifests on disk, configs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.fleet.envelope import ModelFile, build_envelope
from agent.fleet.keys import public_b64
from agent.manifest.config import AgentConfig
from agent.manifest.load import resolve_config_paths


@dataclass
class Signer:
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public(self) -> str:
        return public_b64(self.key.public_key())

    def envelope(self, manifest: str, version: int, models: Sequence[ModelFile] = (),
                 target: Optional[str] = None) -> bytes:
        return build_envelope(manifest.encode(), version, self.key, models, target).to_json()


def unsigned(manifest: str, version: int) -> bytes:
    return build_envelope(manifest.encode(), version, None).to_json()


def tampered(payload: bytes, **changes: Any) -> bytes:
    doc = json.loads(payload)
    doc.update(changes)
    return json.dumps(doc).encode()


def write_model_files(models_dir: Path) -> Dict[str, Path]:
    """Placeholder model files: enough for validation (which checks that files exist and their hashes)."""
    (models_dir / "model").mkdir(parents=True, exist_ok=True)
    files = {"model": models_dir / "model" / "inference.json", "params": models_dir / "model" / "inference.pdiparams"}
    files["model"].write_text('{"program": "placeholder"}')
    files["params"].write_bytes(b"\x00\x01params")
    return files


def manifest_text(version: int, model: str = "model/inference.json", params: str = "model/inference.pdiparams",
                  extra_model: str = "", pipelines: str = "") -> str:
    return (f"version: {version}\n"
            "models:\n"
            "  - name: m\n"
            f"    model: {model}\n"
            f"    params: {params}\n"
            "    target: cpu\n"
            f"{extra_model}"
            f"{pipelines}")


def make_config(root: Path, keys: List[str], require_signature: bool = True, groups: Sequence[str] = (),
                allowed: Sequence[str] = ("models",), grace_period_s: float = 0.0, device_id: str = "dev1",
                **mqtt: Any) -> AgentConfig:
    """A resolved config rooted at ``root`` (config.yaml would live there)."""
    config = AgentConfig.model_validate({
        "device_id": device_id,
        "manifest": "models/manifest.yaml",
        "groups": list(groups),
        "mqtt": mqtt,
        "fleet": {"public_keys": keys, "require_signature": require_signature, "allowed_model_dirs": list(allowed),
                  "grace_period_s": grace_period_s},
    })
    return resolve_config_paths(config, root / "config.yaml")
