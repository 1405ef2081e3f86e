"""Every backend the agent knows, by the key a manifest's ``backend`` names (as Frigate registers its
detectors): one row per key. A new backend is a folder with a ``Backend`` subclass and one row here;
``tests/backends/test_registry.py`` checks that the manifest schema accepts exactly these keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Dict, Mapping

from agent.engines.contract import Backend, SampleFeed


@dataclass(frozen=True)
class BackendContext:
    """What the composition root gives every backend factory."""

    cache_dir: Path
    sample_feed: SampleFeed  # one synthetic frame through a model's preprocessing (agent.processing)
    earlier: Mapping[str, Backend]  # the backends of the rows above


@dataclass(frozen=True)
class BackendKind:
    key: str
    summary: str
    # imports its folder on call, so a machine without TensorRT never imports it before a model asks
    make: Callable[[BackendContext], Backend]


def _paddle(context: BackendContext) -> Backend:
    from agent.backends.paddle.backend import PaddleBackend

    return PaddleBackend(sample_feed=context.sample_feed)


def _tensorrt(context: BackendContext) -> Backend:
    from agent.backends.onnxruntime.backend import OnnxRuntimeBackend, TensorRTOrOnnxRuntime
    from agent.backends.tensorrt.backend import TensorRTBackend

    paddle = context.earlier.get("paddle")
    # Paddle models are gated against the Paddle backend's own reference predictor.
    tensorrt = TensorRTBackend(timing_cache_dir=context.cache_dir / ".timing",
                               paddle_reference=paddle.reference if paddle is not None else None)
    # backend: tensorrt runs on ONNX Runtime where TensorRT cannot (docs/engines.md)
    return TensorRTOrOnnxRuntime(tensorrt, OnnxRuntimeBackend(sample_feed=context.sample_feed),
                                 tensorrt.unavailable_reason)


BACKENDS: Mapping[str, BackendKind] = MappingProxyType({kind.key: kind for kind in (
    BackendKind("paddle", "Paddle Inference, natively or with its TensorRT subgraph engine (agent/backends/paddle)",
                _paddle),
    BackendKind("tensorrt", "a TensorRT plan built from ONNX, or ONNX Runtime where TensorRT cannot run "
                "(agent/backends/tensorrt, agent/backends/onnxruntime)", _tensorrt),
)})


def make_backends(cache_dir: Path, sample_feed: SampleFeed) -> Dict[str, Backend]:
    """One instance of every registered backend, in table order. Each checks its own capabilities when used."""
    made: Dict[str, Backend] = {}
    for key, kind in BACKENDS.items():
        made[key] = kind.make(BackendContext(cache_dir, sample_feed, dict(made)))
    return made
