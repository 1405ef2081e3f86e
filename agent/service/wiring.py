"""The composition root: builds the agent's pieces from config.yaml and a manifest.

Nothing else constructs backends, caches or links; every other module receives what it
needs as arguments, so tests can assemble any subset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from agent.engines.build import ModelPreparer
from agent.engines.cache import EngineCache
from agent.engines.contract import Backend
from agent.engines.device import DeviceIdentity, detect_device
from agent.manifest.config import AgentConfig
from agent.manifest.load import LoadedManifest, load_config, load_manifest, resolve_config_paths
from agent.processing.preprocess import calibration_feeds, sample_feed
from agent.progress import ProgressCallback, ignore_progress
from agent.sources.files import list_images


@dataclass(frozen=True)
class Paths:
    config_file: Path
    manifest: Path
    cache_dir: Path
    state_dir: Path


def make_backends(cache_dir: Path) -> Dict[str, Backend]:
    """Every backend this build of the agent knows. Each checks its own capabilities when used."""
    from agent.backends.onnxruntime.backend import OnnxRuntimeBackend, TensorRTOrOnnxRuntime
    from agent.backends.paddle.backend import PaddleBackend
    from agent.backends.tensorrt.backend import TensorRTBackend
    from agent.backends.tensorrt.calibrator import feeds_from_images

    paddle = PaddleBackend(sample_feed=sample_feed)
    tensorrt = TensorRTBackend(timing_cache_dir=cache_dir / ".timing",
                               calibration_feeds=feeds_from_images(calibration_feeds, list_images),
                               paddle_reference=paddle.reference)
    return {
        "paddle": paddle,
        # backend: tensorrt runs on ONNX Runtime where TensorRT cannot (docs/engines.md)
        "tensorrt": TensorRTOrOnnxRuntime(tensorrt, OnnxRuntimeBackend(sample_feed=sample_feed),
                                          tensorrt.unavailable_reason),
    }


@dataclass
class Wiring:
    config: AgentConfig
    paths: Paths
    loaded: LoadedManifest
    device: DeviceIdentity
    cache: EngineCache
    preparer: ModelPreparer

    @classmethod
    def from_files(
        cls,
        config_path: Path,
        manifest_path: Optional[Path] = None,
        progress: ProgressCallback = ignore_progress,
    ) -> Wiring:
        config = resolve_config_paths(load_config(config_path), config_path)
        paths = Paths(
            config_file=config_path.resolve(),
            manifest=(manifest_path or Path(config.manifest)).resolve(),
            cache_dir=Path(config.cache_dir),
            state_dir=Path(config.state_dir),
        )
        loaded = load_manifest(paths.manifest)
        return cls.assemble(config, paths, loaded, progress)

    @classmethod
    def assemble(cls, config: AgentConfig, paths: Paths, loaded: LoadedManifest,
                 progress: ProgressCallback = ignore_progress) -> Wiring:
        """``config`` must already be resolved (absolute paths)."""
        device = detect_device()
        cache = EngineCache(paths.cache_dir / "engines")
        preparer = ModelPreparer(cache, make_backends(paths.cache_dir), device, calibration_feeds, list_images,
                                 progress)
        return cls(config, paths, loaded, device, cache, preparer)
