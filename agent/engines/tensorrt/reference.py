"""The accuracy gate's reference for ONNX models: ONNX Runtime on the CPU, full precision.

Kept here because only the TensorRT backend needs it; it is a plain Predictor, so it
can move to agent/predictors/ if another backend ever wants it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping

import numpy as np

from agent.errors import PredictorError
from agent.predictors.base import Placement, Predictor, TensorInfo

# ONNX Runtime's type strings -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class OnnxRuntimePredictor(Predictor):
    def __init__(self, path: Path, threads: int = 2, session: Any = None) -> None:
        self.path = path
        if session is None:
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise PredictorError(f"the accuracy gate needs onnxruntime for ONNX models ({exc}): "
                                     "pip install onnxruntime, or remove validation: from the model") from None
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            try:
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
                raise PredictorError(f"ONNX Runtime cannot load {path}: {exc}") from None
        self._session = session
        self.placement = Placement(backend="onnxruntime", route="onnxruntime-cpu", device="cpu", precision="fp32")

    @property
    def inputs(self) -> List[TensorInfo]:
        return [_info(t) for t in self._session.get_inputs()]

    @property
    def outputs(self) -> List[TensorInfo]:
        return [_info(t) for t in self._session.get_outputs()]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        names = [t.name for t in self._session.get_outputs()]
        wanted = {t.name for t in self._session.get_inputs()}
        values = self._session.run(names, {k: v for k, v in feeds.items() if k in wanted})
        return dict(zip(names, values))

    def clone(self) -> OnnxRuntimePredictor:
        # InferenceSession.run is thread-safe: clones share the session and its weights.
        return OnnxRuntimePredictor(self.path, session=self._session)


def _info(arg: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorInfo(arg.name, shape, _ORT_TYPES.get(arg.type, "float32"))
