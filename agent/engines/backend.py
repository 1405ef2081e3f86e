"""What an inference backend offers the engine builder: identity, build into a cache entry, load.

Backends are registered by the manifest's ``backend`` key; the build orchestration,
the cache and the accuracy gate are shared and know no backend's internals.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

from agent.manifest.models import ModelSpec
from agent.predictors.base import Placement, Predictor
from agent.progress import ProgressTimer


@dataclass(frozen=True)
class BuildInfo:
    """What a build produced, stored in the cache entry's ``meta.json`` under ``report``."""

    placement: Placement
    report: Dict[str, Any] = field(default_factory=dict)  # e.g. DLA layer placement, calibration batches


class Backend(abc.ABC):
    """One per backend kind. ``spec`` paths are absolute (the manifest loader resolved them)."""

    name: str

    @abc.abstractmethod
    def identity(self) -> Dict[str, str]:
        """Everything about this backend that invalidates a built engine: its version,
        the TensorRT version it links, CUDA, ... Part of the cache fingerprint."""

    @abc.abstractmethod
    def build(self, spec: ModelSpec, precision: str, entry_dir: Path, progress: ProgressTimer) -> BuildInfo:
        """Prepare the model in ``precision`` inside the (temporary) ``entry_dir``: build and
        serialize engines, calibrate, warm up. Raise ``BuildError`` with an actionable message."""

    @abc.abstractmethod
    def load(self, spec: ModelSpec, precision: str, entry_dir: Path) -> Predictor:
        """Create a predictor from a verified cache entry without rebuilding."""

    @abc.abstractmethod
    def reference(self, spec: ModelSpec) -> Predictor:
        """A full-precision, unoptimized predictor of the same model for the accuracy gate."""

    def files_to_hash(self, spec: ModelSpec) -> List[Path]:
        """Model files whose bytes are part of the fingerprint."""
        return [Path(p) for p in (spec.model, spec.params) if p]
