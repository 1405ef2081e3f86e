"""The contract between engines, backends and the pipeline: Predictor, TensorInfo, Placement,
Backend and BuildInfo.

It sits below all of them, so the engine builder, every backend and the pipeline import it
downward. Pipelines see only ``Predictor``; the builder sees only ``Backend``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.manifest.models import ModelSpec
from agent.progress import ProgressTimer


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: Tuple[int, ...]  # -1 marks a dynamic dimension
    dtype: str  # numpy dtype name, e.g. "float32"


Feed = Dict[str, np.ndarray]
# The model's calibration images through its own preprocessing, sized for ``inputs`` (a -1 batch takes
# any batch size). The preparer lists ``calibration.images`` once and binds them to the model; a build
# that calibrates calls it, any other build never does.
CalibrationFeeds = Callable[[Sequence[TensorInfo]], Iterable[Feed]]
# (spec, the model's inputs) -> one synthetic frame through the model's preprocessing, for the warm-up of
# models whose manifest declares no input shapes (agent.processing.preprocess.sample_feed).
SampleFeed = Callable[[ModelSpec, Sequence[TensorInfo]], Feed]


@dataclass(frozen=True)
class Placement:
    """Where a prepared model actually runs; reported in health and on the build line."""

    backend: str  # "paddle" | "tensorrt"
    route: str  # "paddle-trt", "pir-trt", "paddle-native", "tensorrt"
    device: str  # "cpu", "gpu:0", "dla:0", "dla:1"
    precision: str  # precision actually used
    notes: List[str] = field(default_factory=list)  # fallbacks taken, each one line


class Predictor(abc.ABC):
    """One instance per worker thread; ``clone()`` makes another that shares weights."""

    placement: Placement

    @property
    @abc.abstractmethod
    def inputs(self) -> List[TensorInfo]:
        """Input tensors in the model's order."""

    @property
    @abc.abstractmethod
    def outputs(self) -> List[TensorInfo]:
        """Output tensors in the model's order."""

    @abc.abstractmethod
    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run once. ``feeds`` maps every input name to a contiguous array; returns every output."""

    def warm_up(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Run once on ``feeds`` in the thread that will run this predictor, before its first frame, so
        that frame does not pay the first-run cost. Backends may tune per-thread settings here."""
        self.infer(feeds)

    @abc.abstractmethod
    def clone(self) -> Predictor:
        """Another predictor for another thread, sharing weights where the backend can."""

    def close(self) -> None:
        """Release device memory; the default has nothing to release."""


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
    def build(self, spec: ModelSpec, precision: str, entry_dir: Path, progress: ProgressTimer,
              calibration: Optional[CalibrationFeeds] = None) -> BuildInfo:
        """Prepare the model in ``precision`` inside the (temporary) ``entry_dir``: build and
        serialize engines, calibrate (from ``calibration``, which the preparer always passes), warm up.
        Raise ``BuildError`` with an actionable message."""

    @abc.abstractmethod
    def load(self, spec: ModelSpec, precision: str, entry_dir: Path) -> Predictor:
        """Create a predictor from a verified cache entry without rebuilding."""

    @abc.abstractmethod
    def reference(self, spec: ModelSpec) -> Predictor:
        """A full-precision, unoptimized predictor of the same model for the accuracy gate."""

    def declared_inputs(self, spec: ModelSpec) -> Optional[List[TensorInfo]]:
        """The input tensors a predictor of ``spec`` will report, read from the model's files without
        loading or running it (``edge-agent validate`` checks preprocessing against them); None when
        this backend cannot tell."""
        return None

    def files_to_hash(self, spec: ModelSpec) -> List[Path]:
        """Model files whose bytes are part of the fingerprint."""
        return [Path(p) for p in (spec.model, spec.params) if p]
