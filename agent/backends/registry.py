"""Every backend the agent knows, by the key a manifest's ``backend`` names (as Frigate registers its
detectors): one row per backend folder. A new backend is a folder with a ``Backend`` subclass and
one row here; ``tests/backends/test_registry.py`` checks that the manifest schema accepts exactly
these keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Dict, Mapping

from agent.engines.contract import Backend


@dataclass(frozen=True)
class BackendKind:
    key: str
    summary: str
    # (cache dir, the backends of earlier rows) -> the backend; imports its folder on call, so a machine
    # without TensorRT never imports it until a model asks for it
    make: Callable[[Path, Mapping[str, Backend]], Backend]


def _paddle(cache_dir: Path, earlier: Mapping[str, Backend]) -> Backend:
    from agent.backends.paddle.backend import PaddleBackend

    return PaddleBackend()


def _tensorrt(cache_dir: Path, earlier: Mapping[str, Backend]) -> Backend:
    from agent.backends.tensorrt.backend import TensorRTBackend

    paddle = earlier.get("paddle")
    # Paddle models are gated against the Paddle backend's own reference predictor.
    return TensorRTBackend(timing_cache_dir=cache_dir / ".timing",
                           paddle_reference=paddle.reference if paddle is not None else None)


BACKENDS: Mapping[str, BackendKind] = MappingProxyType({kind.key: kind for kind in (
    BackendKind("paddle", "Paddle Inference, natively or with its TensorRT subgraph engine (agent/backends/paddle)",
                _paddle),
    BackendKind("tensorrt", "a TensorRT plan built from ONNX (Paddle models via paddle2onnx) (agent/backends/tensorrt)",
                _tensorrt),
)})


def make_backends(cache_dir: Path) -> Dict[str, Backend]:
    """One instance of every registered backend, in table order. Each checks its own capabilities when used."""
    made: Dict[str, Backend] = {}
    for key, kind in BACKENDS.items():
        made[key] = kind.make(cache_dir, made)
    return made
