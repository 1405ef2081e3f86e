"""``type: raw``: a summary of output tensors, for models without a dedicated post-processor.

Every output (or only ``postprocess.output`` when set). Per image: an output whose first dimension
equals the batch size is sliced to that image; any other output is reported whole for each image.

Result per image: ``{"outputs": [{"name", "shape", "dtype", "min", "max", "mean", "values"?}]}``;
``values`` (the flattened elements) only when there are at most ``max_values``; NaN and infinities
become null, so the payload stays strict JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from agent.engines.contract import TensorInfo
from agent.manifest.models import PostprocessSpec
from agent.processing.base import fetch, pick_output
from agent.processing.meta import ImageMeta


@dataclass(frozen=True)
class RawSummary:
    names: Tuple[str, ...]
    max_values: int

    def __call__(self, outputs: Mapping[str, np.ndarray], metas: Sequence[ImageMeta]) -> List[Dict[str, Any]]:
        n = len(metas)
        arrays = [(name, fetch(outputs, name)) for name in self.names]
        return [
            {"outputs": [_summary(name, arr[i] if arr.ndim and arr.shape[0] == n else arr, self.max_values)
                         for name, arr in arrays]}
            for i in range(n)
        ]


def _summary(name: str, arr: np.ndarray, max_values: int) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"name": name, "shape": [int(d) for d in arr.shape], "dtype": str(arr.dtype)}
    if arr.size:
        doc.update(min=_plain(arr.min().item()), max=_plain(arr.max().item()),
                   mean=_plain(float(arr.mean(dtype=np.float64))))
    else:
        doc.update(min=None, max=None, mean=None)
    if arr.size <= max_values:
        doc["values"] = [_plain(v) for v in arr.ravel().tolist()]
    return doc


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def build(spec: PostprocessSpec, outputs: Sequence[TensorInfo], labels: Sequence[str]) -> RawSummary:
    names = [pick_output(spec.output, outputs).name] if spec.output is not None else [o.name for o in outputs]
    return RawSummary(tuple(names), spec.max_values)
