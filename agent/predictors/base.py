"""The predictor interface every backend implements; pipelines see nothing else."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: Tuple[int, ...]  # -1 marks a dynamic dimension
    dtype: str  # numpy dtype name, e.g. "float32"


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

    @abc.abstractmethod
    def clone(self) -> Predictor:
        """Another predictor for another thread, sharing weights where the backend can."""

    def close(self) -> None:
        """Release device memory; the default has nothing to release."""
