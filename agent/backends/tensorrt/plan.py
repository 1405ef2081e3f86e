"""The files of a TensorRT cache entry and how they are read back.

``engine.plan`` (or ``engine.dla0.plan`` + ``engine.dla1.plan`` for ``dla:all``) holds the
serialized engines; ``plan.json`` says which plan runs on which DLA core, so loading
needs nothing but the entry. A plan that TensorRT refuses (``deserialize_cuda_engine``
returns None after a JetPack upgrade or a damaged file) raises PlanLoadError, which
the cache treats as a miss and rebuilds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from agent.backends.tensorrt.api import TrtApi, TrtLog
from agent.errors import CacheError

if TYPE_CHECKING:
    import tensorrt as trt

PLAN_INDEX = "plan.json"


class PlanLoadError(CacheError):
    """A cached plan cannot be used on this machine; rebuilding it fixes this."""


def plan_file_name(core: Optional[int], one_per_core: bool) -> str:
    return f"engine.dla{core}.plan" if one_per_core and core is not None else "engine.plan"


@dataclass(frozen=True)
class PlanRecord:
    file: str
    dla_core: Optional[int]


@dataclass(frozen=True)
class PlanIndex:
    tensorrt: str
    precision: str
    device: str
    plans: Tuple[PlanRecord, ...]
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def write(self, entry_dir: Path) -> None:
        doc: Dict[str, Any] = {
            "tensorrt": self.tensorrt, "precision": self.precision, "device": self.device,
            "plans": [{"file": p.file, "dla_core": p.dla_core} for p in self.plans], "notes": list(self.notes),
        }
        (entry_dir / PLAN_INDEX).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, entry_dir: Path) -> PlanIndex:
        path = entry_dir / PLAN_INDEX
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            plans = tuple(PlanRecord(str(p["file"]), None if p["dla_core"] is None else int(p["dla_core"]))
                          for p in doc["plans"])
            index = cls(str(doc["tensorrt"]), str(doc["precision"]), str(doc["device"]), plans,
                        tuple(str(n) for n in doc.get("notes", [])))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PlanLoadError(f"{path}: unreadable TensorRT plan index ({exc}); the engine will be rebuilt") from None
        if not plans:
            raise PlanLoadError(f"{path}: lists no plans; the engine will be rebuilt")
        return index


def deserialize_plan(api: TrtApi, runtime: trt.Runtime, sink: TrtLog, path: Path,
                     dla_core: Optional[int]) -> trt.ICudaEngine:
    """The engine in ``path``; ``dla_core`` must be the core it was built for."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PlanLoadError(f"{path}: cannot read the TensorRT plan ({exc}); the engine will be rebuilt") from None
    if dla_core is not None:
        runtime.DLA_core = dla_core
    engine: Optional[trt.ICudaEngine] = runtime.deserialize_cuda_engine(data)
    if engine is None:
        reason = "; ".join(sink.take_errors()) or "TensorRT gave no reason"
        raise PlanLoadError(
            f"{path}: TensorRT {api.version} cannot deserialize this plan ({reason}); "
            "it was built by another TensorRT or device, or is damaged. The engine will be rebuilt"
        )
    return engine
