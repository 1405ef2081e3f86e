"""The PIR-TRT route: ``paddle.tensorrt.convert`` turns a PIR ``.json`` program into one with
``tensorrt_engine`` ops, saved as ``<entry>/pir-trt/inference.json`` + ``.pdiparams`` with the
serialized engines in the directory ``<entry>/pir-trt/inference/`` (Paddle's ``save_model_dir``).

The conversion runs in a child Python process: it switches Paddle to static PIR mode, sets global
flags and singletons, and a TensorRT builder crash must not take the daemon down.

Written against Paddle's ``python/paddle/tensorrt/export.py`` (``Input``, ``TensorRTConfig``,
``PrecisionMode``, ``convert``); only the request building and the child-process plumbing were
run here (no TensorRT on the build machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from agent.backends.paddle.config import ShapeRange
from agent.errors import BuildError
from agent.manifest.models import ModelSpec

SUBDIR = "pir-trt"
PREFIX = "inference"
CONVERT_TIMEOUT_S = 6 * 3600  # TensorRT builds on a Nano can take tens of minutes per engine


@dataclass(frozen=True)
class PirTrtInput:
    name: str
    min: List[int]
    opt: List[int]
    max: List[int]
    dtype: str


@dataclass(frozen=True)
class PirTrtRequest:
    model: str
    params: str
    save_prefix: str  # Paddle's save_model_dir: <prefix>.json/.pdiparams and the engine dir <prefix>/
    precision: str  # "FP32" | "FP16" | "INT8" (paddle.tensorrt.PrecisionMode member names)
    inputs: List[PirTrtInput]
    min_subgraph_size: int
    workspace_size: int
    optimization_level: Optional[int]
    disable_ops: List[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> PirTrtRequest:
        doc = json.loads(text)
        doc["inputs"] = [PirTrtInput(**i) for i in doc["inputs"]]
        return cls(**doc)


def program_paths(entry_dir: Path) -> Tuple[Path, Path]:
    prefix = entry_dir / SUBDIR / PREFIX
    return prefix.with_suffix(".json"), prefix.with_suffix(".pdiparams")


def make_request(spec: ModelSpec, precision: str, ranges: Mapping[str, ShapeRange], dtypes: Mapping[str, str],
                 entry_dir: Path) -> PirTrtRequest:
    trt = spec.tensorrt
    return PirTrtRequest(
        model=spec.model,
        params=spec.params or "",
        # absolute: Paddle writes this path into the program, and relocated() rewrites it
        save_prefix=os.path.abspath(entry_dir / SUBDIR / PREFIX),
        precision=precision.upper(),
        inputs=[PirTrtInput(n, r.min, r.opt, r.max, dtypes.get(n, "float32")) for n, r in ranges.items()],
        min_subgraph_size=trt.min_subgraph_size,
        workspace_size=trt.workspace_size,
        optimization_level=trt.optimization_level,
        # PIR op names carry their dialect; the manifest may list legacy op types ("conv2d")
        disable_ops=[op if "." in op else f"pd_op.{op}" for op in trt.disabled_ops],
    )


def convert(request: PirTrtRequest, log_file: Path, timeout_s: float = CONVERT_TIMEOUT_S) -> None:
    """Run the conversion in a child process; BuildError with the child's last output on failure."""
    Path(request.save_prefix).parent.mkdir(parents=True, exist_ok=True)
    request_file = Path(request.save_prefix).parent / "request.json"
    request_file.write_text(request.to_json(), encoding="utf-8")
    cmd = [sys.executable, "-m", "agent.backends.paddle.pirtrt", str(request_file)]
    with log_file.open("w", encoding="utf-8") as out:
        try:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise BuildError(f"PIR-TRT conversion of {request.model} took longer than {timeout_s:.0f}s; "
                             f"see {log_file}") from None
    program = Path(request.save_prefix).with_suffix(".json")
    if done.returncode != 0 or not program.exists():
        tail = log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise BuildError(
            f"PIR-TRT conversion of {request.model} failed (exit {done.returncode}): {tail.strip()}\n"
            "Try precision fp32, tensorrt.disabled_ops for the op named above, or export the model as a "
            "legacy .pdmodel (FLAGS_enable_pir_api=0) to use the paddle-trt route"
        )


@contextlib.contextmanager
def relocated(entry_dir: Path, built_dir: str) -> Iterator[Path]:
    """The converted program, with engine paths pointing into ``entry_dir``.

    Paddle stores each engine's absolute file path in the program; the cache builds an entry in a
    temporary directory and renames it, so a program loaded from the final directory is rewritten
    into a scratch copy, used for ``create_predictor`` (which reads program and weights), then removed.
    """
    program, params = program_paths(entry_dir)
    if os.path.abspath(built_dir) == os.path.abspath(entry_dir):
        yield program
        return
    scratch = Path(tempfile.mkdtemp(prefix="pir-trt-"))
    try:
        old, new = (json.dumps(os.path.join(os.path.abspath(d), ""))[1:-1] for d in (built_dir, entry_dir))
        text = program.read_text(encoding="utf-8")
        (scratch / program.name).write_text(text.replace(old, new), encoding="utf-8")
        (scratch / params.name).symlink_to(os.path.abspath(params))
        yield scratch / program.name
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _convert(request: PirTrtRequest) -> None:
    from paddle.tensorrt.export import Input, PrecisionMode, TensorRTConfig
    from paddle.tensorrt.export import convert as trt_convert

    # convert() finds the weights as <model prefix>.pdiparams; the manifest may name them otherwise
    source = Path(tempfile.mkdtemp(prefix="pir-trt-src-"))
    (source / "inference.json").symlink_to(os.path.abspath(request.model))
    (source / "inference.pdiparams").symlink_to(os.path.abspath(request.params))

    inputs = [Input(min_input_shape=tuple(i.min), optim_input_shape=tuple(i.opt), max_input_shape=tuple(i.max),
                    input_data_type=i.dtype, name=i.name) for i in request.inputs]
    options: Dict[str, Any] = {
        "inputs": inputs,
        "min_subgraph_size": request.min_subgraph_size,
        "save_model_dir": request.save_prefix,
        "precision_mode": PrecisionMode[request.precision],
        "workspace_size": request.workspace_size,
    }
    if request.disable_ops:
        options["disable_ops"] = request.disable_ops
    if request.optimization_level is not None:
        options["optimization_level"] = request.optimization_level
    try:
        trt_convert(str(source / "inference.json"), TensorRTConfig(**options))
    finally:
        shutil.rmtree(source, ignore_errors=True)


if __name__ == "__main__":
    _convert(PirTrtRequest.from_json(Path(sys.argv[1]).read_text(encoding="utf-8")))
