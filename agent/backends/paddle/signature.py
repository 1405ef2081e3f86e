"""Input/output names, shapes and dtypes read from a Paddle program file.

``paddle.inference`` reports a tensor's shape only after data was fed (``[0]`` before), so the
declared shapes come from the program itself: the ``data``/``fetch`` ops of a PIR ``.json``
program, or the ``feed``/``fetch`` ops and variables of a legacy ``.pdmodel`` protobuf.
Both formats are Paddle internals; a file this cannot read gives an empty signature and the
caller falls back to the manifest's ``inputs``.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

from agent.logs import event

log = logging.getLogger(__name__)

# PIR type ids ("0.t_f32") and legacy VarType names ("FP32") → numpy dtype names
_PIR_DTYPES = {"f16": "float16", "f32": "float32", "f64": "float64", "bf16": "bfloat16", "i8": "int8",
               "ui8": "uint8", "i16": "int16", "i32": "int32", "i64": "int64", "bool": "bool"}
_LEGACY_DTYPES = {"FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "bfloat16", "INT8": "int8",
                  "UINT8": "uint8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


@dataclass(frozen=True)
class Declared:
    shape: Tuple[int, ...]  # -1 = dynamic
    dtype: str


@dataclass
class ProgramSignature:
    inputs: Dict[str, Declared] = field(default_factory=dict)
    outputs: Dict[str, Declared] = field(default_factory=dict)


def read_signature(model_file: Path) -> ProgramSignature:
    try:
        if model_file.suffix.lower() == ".json":
            return _read_pir(model_file)
        return _read_legacy(model_file)
    except Exception as exc:  # an unknown program layout must not stop the model from loading
        event(log, logging.DEBUG, "paddle.signature_unreadable", file=str(model_file), error=repr(exc))
        return ProgramSignature()


def _read_pir(path: Path) -> ProgramSignature:
    doc = json.loads(path.read_text(encoding="utf-8"))
    sig = ProgramSignature()
    for region in doc["program"]["regions"]:
        for block in region["blocks"]:
            for op in block["ops"]:
                kind = str(op.get("#", "")).rsplit(".", 1)[-1]
                if kind not in ("data", "fetch"):
                    continue
                name = _pir_attr(op, "name")
                declared = _pir_result_type(op)
                if isinstance(name, str) and declared is not None:
                    (sig.inputs if kind == "data" else sig.outputs)[name] = declared
    return sig


def _pir_attr(op: Dict[str, Any], key: str) -> Any:
    for attr in op.get("A", []):
        if isinstance(attr, dict) and attr.get("N") == key:
            return attr.get("AT", {}).get("D")
    return None


def _pir_result_type(op: Dict[str, Any]) -> Any:
    results = op.get("O") or []
    if not results:
        return None
    dtype_id, shape = results[0]["TT"]["D"][:2]
    dtype = _PIR_DTYPES.get(str(dtype_id.get("#", "")).rsplit("t_", 1)[-1], "")
    return Declared(tuple(int(d) for d in shape), dtype) if dtype else None


def _read_legacy(path: Path) -> ProgramSignature:
    framework_pb2: Any = importlib.import_module("paddle.base.proto.framework_pb2")
    program = framework_pb2.ProgramDesc()
    program.ParseFromString(path.read_bytes())
    block = program.blocks[0]
    variables = {v.name: v for v in block.vars}
    type_names = framework_pb2.VarType.Type
    sig = ProgramSignature()
    feeds: List[Tuple[int, str]] = []
    fetches: List[Tuple[int, str]] = []
    for op in block.ops:
        if op.type not in ("feed", "fetch"):
            continue
        col = next((a.i for a in op.attrs if a.name == "col"), 0)
        slot = "Out" if op.type == "feed" else "X"
        args = [op_var for v in (op.outputs if op.type == "feed" else op.inputs) if v.parameter == slot
                for op_var in v.arguments]
        (feeds if op.type == "feed" else fetches).extend((col, a) for a in args)
    for target, pairs in ((sig.inputs, feeds), (sig.outputs, fetches)):
        for _, name in sorted(pairs):
            var = variables.get(name)
            if var is None:
                continue
            tensor = var.type.dense_tensor.tensor
            dtype = _LEGACY_DTYPES.get(type_names.Name(tensor.data_type), "")
            if dtype:
                target[name] = Declared(tuple(int(d) for d in tensor.dims), dtype)
    return sig
