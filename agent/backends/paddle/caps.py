"""What the installed Paddle can do, detected (never assumed) once per backend.

Tests build ``PaddleCapabilities`` by hand to drive the GPU/TensorRT decisions on a CPU machine.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Dict, Tuple

Version3 = Tuple[int, int, int]
NO_VERSION: Version3 = (0, 0, 0)


@dataclass(frozen=True)
class PaddleCapabilities:
    version: str  # e.g. "3.3.1"
    commit: str  # short commit of the Paddle build
    cuda: bool  # paddle.is_compiled_with_cuda()
    cuda_version: str  # "" on a CPU build
    cudnn_version: str
    gpu_count: int
    trt_compile: Version3  # (0, 0, 0): built without TensorRT
    trt_runtime: Version3  # (0, 0, 0): libnvinfer not found at run time
    pir_trt: bool  # paddle.tensorrt importable with a real TensorRT Python package

    @property
    def tensorrt(self) -> bool:
        return self.trt_compile != NO_VERSION and self.trt_runtime != NO_VERSION

    def gpu_unavailable_reason(self) -> str:
        """Why Paddle cannot run on a GPU here, or "" when it can."""
        if not self.cuda:
            return "paddle is a CPU build (no CUDA/TensorRT)"
        if self.gpu_count < 1:
            return "paddle is a CUDA build but no CUDA device is visible"
        return ""

    def tensorrt_unavailable_reason(self) -> str:
        """Why Paddle-TensorRT cannot be used here, or "" when it can."""
        reason = self.gpu_unavailable_reason()
        if reason:
            return reason
        if self.trt_compile == NO_VERSION:
            return "paddle was built without TensorRT"
        if self.trt_runtime == NO_VERSION:
            return f"paddle was built with TensorRT {_dotted(self.trt_compile)} but libnvinfer was not found"
        return ""

    def identity(self) -> Dict[str, str]:
        """The fields that invalidate a prepared model when they change."""
        return {
            "paddle": f"{self.version}+{self.commit}",
            "tensorrt": f"compile {_dotted(self.trt_compile)} runtime {_dotted(self.trt_runtime)}",
            "cuda": self.cuda_version or "none",
            "cudnn": self.cudnn_version or "none",
        }


def detect_capabilities() -> PaddleCapabilities:
    """Ask the installed Paddle. Imports paddle (a few seconds)."""
    import paddle
    import paddle.inference as pi

    fields = _parse_version_text(pi.get_version())
    cuda = bool(paddle.is_compiled_with_cuda())
    return PaddleCapabilities(
        version=fields.get("version", str(paddle.__version__)),
        commit=fields.get("commit", "unknown")[:12],
        cuda=cuda,
        cuda_version=_version_or_empty(paddle.version.cuda()) if cuda else "",
        cudnn_version=_version_or_empty(paddle.version.cudnn()) if cuda else "",
        gpu_count=int(paddle.device.cuda.device_count()) if cuda else 0,
        trt_compile=_version3(pi.get_trt_compile_version()),
        trt_runtime=_version3(pi.get_trt_runtime_version()),
        pir_trt=cuda and _pir_trt_importable(),
    )


def _pir_trt_importable() -> bool:
    if importlib.util.find_spec("paddle.tensorrt") is None:
        return False
    try:
        trt: Any = importlib.import_module("tensorrt")
    except ImportError:
        return False
    # tensorrt-stubs make `import tensorrt` succeed as an empty namespace package
    return hasattr(trt, "Builder")


def _parse_version_text(text: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _version_or_empty(value: Any) -> str:
    text = str(value)
    return "" if text in ("False", "None", "") else text


def _version3(value: Any) -> Version3:
    parts = [int(v) for v in tuple(value)[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def _dotted(v: Version3) -> str:
    return ".".join(str(p) for p in v)
