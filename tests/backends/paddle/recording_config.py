"""RecordingPaddleConfig: a FAKE ``paddle.inference.Config`` for the GPU/TensorRT paths.

This machine has Paddle's CPU wheel, where ``enable_use_gpu`` does nothing and
``enable_tensorrt_engine`` raises. The fake records every call in order and answers the read-back
getters like a CUDA + TensorRT build would, so tests can check the exact calls the backend makes.
Only method names that the real ``paddle.inference.Config`` has are accepted, so a misspelt call
fails here as it would on a Jetson.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import paddle.inference

Call = Tuple[str, Tuple[Any, ...], Dict[str, Any]]


class RecordingPaddleConfig:
    def __init__(self, prog_file: str = "model.pdmodel", params_file: str = "model.pdiparams") -> None:
        self.calls: List[Call] = [("__init__", (prog_file, params_file), {})]
        self._prog_file = prog_file
        self._gpu = False
        self._trt = False
        self._dla = False

    # read-back getters, as on a CUDA + TensorRT build
    def prog_file(self) -> str:
        return self._prog_file

    def use_gpu(self) -> bool:
        return self._gpu

    def tensorrt_engine_enabled(self) -> bool:
        return self._trt

    def tensorrt_dla_enabled(self) -> bool:
        return self._dla

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_") or not hasattr(paddle.inference.Config, name):
            raise AttributeError(f"paddle.inference.Config has no method {name!r}")

        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))
            if name == "enable_use_gpu":
                self._gpu = True
            elif name == "enable_tensorrt_engine":
                # real Paddle ignores it (logs "call EnableUseGpu() first") before enable_use_gpu
                self._trt = self._gpu
            elif name == "enable_tensorrt_dla":
                self._dla = True

        return record

    def names(self) -> List[str]:
        return [c[0] for c in self.calls]

    def call(self, name: str) -> Call:
        matches = [c for c in self.calls if c[0] == name]
        assert len(matches) == 1, f"{name} called {len(matches)} times: {self.names()}"
        return matches[0]
