"""The network TensorRT builds from: an ONNX file, converted from Paddle when needed, then parsed.

Paddle models reach TensorRT through paddle2onnx, run in a child process: it imports
Paddle (seconds, hundreds of MB) and a converter crash must not take the agent down.
Some real legacy models do not convert, so that error points to ``backend: paddle``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Tuple

from agent.backends.tensorrt.api import TrtApi, TrtLog
from agent.errors import BuildError
from agent.manifest.models import ModelSpec

if TYPE_CHECKING:
    import tensorrt as trt

# (model, params, destination .onnx) -> None; raises BuildError.
Converter = Callable[[Path, Path, Path], None]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
PADDLE_HINT = "use backend: paddle for this model (Paddle Inference runs it with its own TensorRT subgraphs)"


class Paddle2Onnx:
    """Converts a Paddle inference model (.pdmodel or PIR .json + .pdiparams) with the paddle2onnx CLI."""

    def __init__(self, python: str = sys.executable, opset: int = 13, timeout_s: float = 1800.0) -> None:
        self.python = python
        self.opset = opset
        self.timeout_s = timeout_s

    def __call__(self, model: Path, params: Path, out: Path) -> None:
        argv = [
            self.python, "-m", "paddle2onnx.command",
            "--model_dir", str(model.parent), "--model_filename", model.name,
            "--params_filename", str(params), "--save_file", str(out),
            "--opset_version", str(self.opset), "--enable_onnx_checker", "True",
            # The default (polygraphy) switches on Polygraphy's pip auto-install of missing
            # modules: a device must never pip-install at run time.
            "--optimize_tool", "onnxoptimizer",
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False,
                                  env={**os.environ, "POLYGRAPHY_AUTOINSTALL_DEPS": "0"})
        except subprocess.TimeoutExpired:
            raise BuildError(f"paddle2onnx did not finish converting {model} within {self.timeout_s:.0f}s; "
                             f"{PADDLE_HINT}") from None
        except OSError as exc:
            raise BuildError(f"cannot run paddle2onnx ({exc}); install it (pip install paddle2onnx) or "
                             f"{PADDLE_HINT}") from None
        if done.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
            reason = _last_error(done.stderr + done.stdout)
            raise BuildError(f"paddle2onnx could not convert {model} to ONNX: {reason}. "
                             f"Some Paddle models use operators paddle2onnx cannot export; {PADDLE_HINT}")


def _last_error(text: str) -> str:
    """The converter's own error line; it logs (with colour codes) and may still exit 0."""
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    for line in lines:
        if "[ERROR]" in line:
            return line.split("[ERROR]", 1)[1].strip()[:400]
    for line in reversed(lines):
        if ("Error" in line or "Exception" in line or "Unimplemented" in line) and "[WARNING]" not in line:
            return line[-400:]
    return lines[-1][-400:] if lines else "no output"


def onnx_model_for(spec: ModelSpec, workdir: Path, convert: Converter) -> Tuple[Path, bool]:
    """(ONNX file to parse, whether it was converted from Paddle here)."""
    model = Path(spec.model)
    if model.suffix.lower() == ".onnx":
        return model, False
    if spec.params is None:
        raise BuildError(f"model '{spec.name}': a Paddle model needs params: (its .pdiparams file)")
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / (model.stem + ".onnx")
    try:
        convert(model, Path(spec.params), out)
    except BuildError as exc:
        raise BuildError(f"model '{spec.name}': {exc}") from None
    return out, True


@dataclass(frozen=True)
class NetworkInput:
    name: str
    shape: Tuple[int, ...]  # -1 marks a dynamic dimension
    dtype: str


@dataclass
class ParsedNetwork:
    """The network and the parser that owns its weights: TensorRT needs both until the build ends."""

    network: trt.INetworkDefinition
    parser: trt.OnnxParser
    inputs: Tuple[NetworkInput, ...]
    layer_count: int
    explicit_quantization: bool  # Q/DQ layers: int8 scales come from the model, not a calibrator
    has_half_tensors: bool  # fp16 types in the model itself (what a strongly typed fp16 build needs)


def parse_onnx(api: TrtApi, builder: trt.Builder, logger: trt.ILogger, sink: TrtLog, path: Path,
               spec: ModelSpec, converted: bool) -> ParsedNetwork:
    network = api.create_network(builder)
    parser = api.onnx_parser(network, logger)
    if not parser.parse_from_file(str(path)):
        problems = [_describe(parser.get_error(i)) for i in range(parser.num_errors)]
        problems += [f"TensorRT: {m}" for m in sink.take_errors() if m not in problems]
        listed = "\n".join(f"  - {p}" for p in problems) or "  - (the parser gave no reason)"
        hint = (f"the ONNX came from paddle2onnx; {PADDLE_HINT}" if converted else
                f"export the model with an opset and operators TensorRT {api.version} supports "
                "(check it with `polygraphy inspect capability`), or simplify it with onnxsim")
        raise BuildError(
            f"model '{spec.name}': TensorRT {api.version} cannot parse {path} ({len(problems)} problem(s)):\n"
            f"{listed}\nFix: {hint}"
        )
    return ParsedNetwork(
        network=network, parser=parser, inputs=_inputs(api, network), layer_count=network.num_layers,
        explicit_quantization=_has_qdq(api, network), has_half_tensors=_has_half(api, network),
    )


def _describe(error: Any) -> str:
    node = int(error.node())
    # node_name/node_operator arrived after 8.5; older parsers give only the node index.
    name = error.node_name() if hasattr(error, "node_name") else ""
    op = error.node_operator() if hasattr(error, "node_operator") else ""
    where = f"node {node}" + (f" {name}" if name else "") + (f" ({op})" if op else "") if node >= 0 else "model"
    return f"{where}: {error.desc()}"


def _inputs(api: TrtApi, network: trt.INetworkDefinition) -> Tuple[NetworkInput, ...]:
    found: List[NetworkInput] = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        found.append(NetworkInput(tensor.name, api.shape(tensor.shape), api.nptype(tensor.dtype).name))
    return tuple(found)


def _has_qdq(api: TrtApi, network: trt.INetworkDefinition) -> bool:
    quantize, dequantize = api.layer_type.QUANTIZE, api.layer_type.DEQUANTIZE
    return any(network.get_layer(i).type in (quantize, dequantize) for i in range(network.num_layers))


def _has_half(api: TrtApi, network: trt.INetworkDefinition) -> bool:
    half = api.data_type.HALF
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if any(layer.get_output(j).dtype == half for j in range(layer.num_outputs)):
            return True
    return False
