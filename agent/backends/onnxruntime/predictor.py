"""ONNX Runtime at full precision: the accuracy gate's reference for ONNX models (CPU), and the
predictor of ``backend: tensorrt`` models on machines without TensorRT (agent/backends/onnxruntime/backend.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.engines.contract import Placement, Predictor, TensorInfo
from agent.errors import PredictorError

# ORT type strings → numpy dtype names
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
           "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
           "tensor(bool)": "bool"}


REFERENCE = Placement("onnxruntime", "onnxruntime-cpu", "cpu", "fp32",
                      ["reference: ONNX Runtime CPU execution provider"])
CPU_PROVIDERS: Tuple[str, ...] = ("CPUExecutionProvider",)


class OnnxRuntimePredictor(Predictor):
    """One ORT session (by default the CPU execution provider, all graph optimizations that keep fp32).

    ``clone()`` shares the session: ORT's ``run`` is safe to call from several threads.
    """

    def __init__(self, model: Path, threads: int = 2, session: Optional[Any] = None,
                 providers: Sequence[str] = CPU_PROVIDERS, placement: Placement = REFERENCE) -> None:
        if session is None:
            session = _open(model, threads, providers)
        self._session = session
        self._model = model
        self._inputs = [_info(i) for i in session.get_inputs()]
        self._outputs = [_info(o) for o in session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]
        self.placement = placement

    @property
    def inputs(self) -> List[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> List[TensorInfo]:
        return self._outputs

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            values = self._session.run(self._output_names, {t.name: feeds[t.name] for t in self._inputs})
        except KeyError as exc:
            names = [t.name for t in self._inputs]
            raise PredictorError(f"missing input {exc} (the model's inputs: {names})") from None
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument types
            raise PredictorError(f"ONNX Runtime failed on {self._model.name}: {exc}") from exc
        return dict(zip(self._output_names, values))

    @property
    def providers(self) -> List[str]:
        """The execution providers the session really uses, best first."""
        return list(self._session.get_providers())

    def clone(self) -> OnnxRuntimePredictor:
        return OnnxRuntimePredictor(self._model, session=self._session, placement=self.placement)


def _open(model: Path, threads: int, providers: Sequence[str]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(model), sess_options=options, providers=list(providers))
    except Exception as exc:
        raise PredictorError(f"ONNX Runtime cannot load {model}: {exc}. Check the file (onnx.checker)") from exc


def _info(node: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in node.shape)
    return TensorInfo(node.name, shape, _DTYPES.get(node.type, "float32"))
