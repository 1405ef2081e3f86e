"""The TensorRT backend assembled from FAKE TensorRT + FAKE pycuda (no GPU here), real ONNX models.

tests/gpu/ assembles the same rig with the real pycuda and real device memory instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import pytest

from agent.backends.tensorrt.api import TrtApi
from agent.backends.tensorrt.backend import TensorRTBackend
from agent.backends.tensorrt.cuda import CudaDevice
from agent.engines.contract import CalibrationFeeds, TensorInfo
from agent.manifest.models import ModelSpec
from agent.progress import Progress, ProgressTimer
from tests.support.fake_pycuda import FakeGpu, make_fake_pycuda
from tests.support.fake_tensorrt import DeviceMemory, FakeTensorRT
from tests.support.tensorrt_models import classifier

DYNAMIC_INPUT = {"name": "x", "min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}


def random_feeds(spec: ModelSpec) -> CalibrationFeeds:
    """Stands in for the preparer's calibration feeds: one preprocessed image per feed."""

    def feeds(inputs: Sequence[TensorInfo]) -> Iterator[Dict[str, np.ndarray]]:
        assert spec.calibration is not None
        rng = np.random.default_rng(7)
        for _ in range(spec.calibration.count):
            yield {t.name: rng.uniform(0, 1, (1, *t.shape[1:])).astype(np.float32) for t in inputs}

    return feeds


class Rig:
    """One fake device: the FAKE modules, the backend on them, and the progress it reported.

    ``device`` and ``memory`` replace the FAKE pycuda with a real ``CudaDevice`` and the FAKE
    engines' memory with that device's (tests/support/cuda_memory.py).
    """

    def __init__(self, tmp_path: Path, version: str = "10.3.0", device: Optional[CudaDevice] = None,
                 memory: Optional[DeviceMemory] = None, **fake: Any) -> None:
        self.tmp_path = tmp_path
        self.gpu = FakeGpu()
        self.trt = FakeTensorRT(version, gpu=memory or self.gpu, **fake)
        self.api = TrtApi(self.trt)
        self.device = device or CudaDevice(make_fake_pycuda(self.gpu))
        self.progress: List[Progress] = []
        self.backend = TensorRTBackend(timing_cache_dir=tmp_path / "timing", api=self.api, device=self.device)
        self.feeds: Callable[[ModelSpec], CalibrationFeeds] = random_feeds  # what the preparer would hand over

    def spec(self, model: Optional[Path] = None, **fields: Any) -> ModelSpec:
        if model is None:
            model = classifier(self.tmp_path / "model.onnx")
        doc: Dict[str, Any] = {"name": "cls", "model": str(model), "backend": "tensorrt", "inputs": [DYNAMIC_INPUT]}
        doc.update(fields)
        return ModelSpec.model_validate(doc)

    def entry(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="entry", dir=self.tmp_path))

    def timer(self, model: str = "cls") -> ProgressTimer:
        return ProgressTimer(self.progress.append, model)

    def build(self, spec: ModelSpec, precision: Optional[str] = None, entry: Optional[Path] = None) -> Path:
        entry = entry or self.entry()
        self.info = self.backend.build(spec, precision or spec.precision, entry, self.timer(spec.name),
                                       self.feeds(spec))
        return entry


@pytest.fixture
def rig(tmp_path: Path) -> Callable[..., Rig]:
    def make(version: str = "10.3.0", **fake: Any) -> Rig:
        return Rig(tmp_path, version, **fake)

    return make
