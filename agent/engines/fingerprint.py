"""The cache key: every input that makes a built engine invalid, hashed in one place.

Paddle-TRT's own key ignores the weights, DLA, shapes and TensorRT version, and
ORT-TRT hashes the model's file name instead of its bytes (docs/cache.md). Ours hashes
file contents and everything else the plan depends on; the readable prefix follows
jetson-inference (model, precision, device) and the suffix is the exact hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

from agent.engines.device import DeviceIdentity
from agent.hashing import hash_files, sha256_file
from agent.manifest.models import InputSpec, ModelSpec

# Raise whenever the meaning of a field changes, so old entries stop matching.
KEY_SCHEMA = 1
DIGEST_CHARS = 16

__all__ = [
    "DIGEST_CHARS", "KEY_SCHEMA", "Fingerprint", "canonical_digest", "compute_fingerprint",
    "hash_files", "hash_model_files", "sha256_file",
]


@dataclass(frozen=True)
class Fingerprint:
    fields: Dict[str, Any]
    key: str

    @property
    def digest(self) -> str:
        """The full sha256 of the canonical fields; the key carries its first 16 hex digits."""
        return canonical_digest(self.fields)


def compute_fingerprint(
    spec: ModelSpec,
    precision: str,
    backend_identity: Mapping[str, str],
    device: DeviceIdentity,
    file_hashes: Mapping[str, str],
    calibration_hash: Optional[str],
    validation_hash: Optional[str] = None,
) -> Fingerprint:
    """The fingerprint of ``spec`` built in ``precision`` by a backend on ``device``.

    ``file_hashes`` maps a role (``"model"``, ``"params"``; see :func:`hash_model_files`)
    to the sha256 of that file's bytes, so renaming a file does not change the key.
    ``calibration_hash`` (:func:`hash_files` of the calibration images) is required, and
    counts, only when the build calibrates: int8 with calibration images and calib mode on.
    ``validation_hash`` (:func:`hash_files` of the golden images) keys the accuracy gate: an
    entry is committed only after passing the gate in force, so a changed gate is a new entry.
    """
    if not file_hashes:
        raise ValueError("compute_fingerprint needs the sha256 of the model files; got none")
    calibrated = precision == "int8" and spec.calibration is not None and spec.calib_mode
    if calibrated and not calibration_hash:
        raise ValueError(f"model {spec.name}: int8 with calibration images needs their calibration_hash")
    fields: Dict[str, Any] = {
        "key_schema": KEY_SCHEMA,
        "name": spec.name,
        "backend": spec.backend,
        "backend_identity": dict(backend_identity),
        "device": device.as_fields(),
        "files": dict(file_hashes),
        "precision": precision,
        "target": spec.target,
        "dla_cores": spec.dla_cores(),
        "inputs": [_input_fields(i) for i in spec.inputs],
        "tensorrt": spec.tensorrt.model_dump(mode="json"),
        # use_calib_mode: null means "decided by precision and calibration"; hash the decision.
        "calib_mode": spec.calib_mode,
        "cpu": spec.cpu.model_dump(mode="json"),
        "memory_optim": spec.memory_optim,
        "calibration": _calibration_fields(spec, calibration_hash) if calibrated else None,
        "validation": _validation_fields(spec, validation_hash) if spec.validation is not None else None,
        # Calibration and golden images pass through the preprocessing: it shapes int8 scales and the gate.
        "preprocess": spec.preprocess.model_dump(mode="json") if calibrated or spec.validation else None,
    }
    digest = canonical_digest(fields)
    prefix = "-".join(_safe(part) for part in (spec.name, precision, spec.target, device.short()))
    return Fingerprint(fields=fields, key=f"{prefix}-{digest[:DIGEST_CHARS]}")


def canonical_digest(fields: Mapping[str, Any]) -> str:
    """sha256 hex of the fields as canonical JSON (sorted keys, no whitespace, no NaN)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def hash_model_files(paths: Iterable[Path]) -> Dict[str, str]:
    """``file_hashes`` for :func:`compute_fingerprint` from ``Backend.files_to_hash(spec)``.

    Files are keyed by their position and extension ("0.json", "1.pdiparams"), not by name.
    """
    return {f"{i}{Path(p).suffix.lower()}": sha256_file(Path(p)) for i, p in enumerate(paths)}


def _input_fields(spec: InputSpec) -> Dict[str, Any]:
    lo, mid, hi = spec.shapes()
    return {"name": spec.name, "dtype": spec.dtype, "min": list(lo), "opt": list(mid), "max": list(hi)}


def _validation_fields(spec: ModelSpec, validation_hash: Optional[str]) -> Dict[str, Any]:
    assert spec.validation is not None
    v = spec.validation
    return {"sha256": validation_hash, "metric": v.metric, "count": v.count, "output": spec.postprocess.output,
            "tolerance": {str(k): t for k, t in sorted(v.tolerance.items())}}


def _calibration_fields(spec: ModelSpec, calibration_hash: Optional[str]) -> Dict[str, Any]:
    assert spec.calibration is not None
    return {"sha256": calibration_hash, "count": spec.calibration.count, "batch_size": spec.calibration.batch_size}


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", part).strip("_.-") or "x"
