"""``type: segmentation``: the share of the image each class covers.

Reads ``postprocess.output`` (default: the model's first output): logits [N, C, H, W] (argmax over
C), or a label map [N, H, W] / [N, 1, H, W] (integers, or floats rounded). Only the image content
counts: the letterbox border (from ``ImageMeta``, scaled to the map's resolution) is cut off.
Negative labels (an "ignore" index) are not counted.

Result per image: ``{"classes": [{"index": i, "label": str | None, "share": float}, ...]}``, only
classes present, largest share first; shares sum to 1 (each rounded to 6 decimals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from agent.engines.contract import TensorInfo
from agent.errors import PredictorError
from agent.manifest.models import PostprocessSpec
from agent.processing.base import check_label_count, fetch, label_of, per_image, pick_output
from agent.processing.meta import ImageMeta


@dataclass(frozen=True)
class Segmenter:
    output: str
    labels: Tuple[str, ...]

    def __call__(self, outputs: Mapping[str, np.ndarray], metas: Sequence[ImageMeta]) -> List[Dict[str, Any]]:
        arr = per_image(fetch(outputs, self.output), self.output, len(metas), "segmentation")
        if arr.ndim == 4 and arr.shape[1] > 1:
            maps = arr.argmax(axis=1)
        elif arr.ndim == 4 and arr.shape[1] == 1:
            maps = arr[:, 0]
        elif arr.ndim == 3:
            maps = arr
        else:
            raise PredictorError(
                f"segmentation: output '{self.output}' has shape {list(arr.shape)}; expected logits [N, C, H, W] "
                "or a label map [N, H, W]; check postprocess.output"
            )
        return [self._shares(_content(maps[i], meta)) for i, meta in enumerate(metas)]

    def _shares(self, label_map: np.ndarray) -> Dict[str, Any]:
        flat = label_map.ravel()
        if not np.issubdtype(flat.dtype, np.integer):
            flat = np.rint(flat).astype(np.int64)
        if flat.size and flat.min() < 0:
            flat = flat[flat >= 0]
        counts = np.bincount(flat)
        total = int(counts.sum())
        if total == 0:
            return {"classes": []}
        present = np.flatnonzero(counts)
        order = present[np.argsort(-counts[present], kind="stable")].tolist()
        return {"classes": [{"index": i, "label": label_of(self.labels, i), "share": round(int(counts[i]) / total, 6)}
                            for i in order]}


def _content(label_map: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """The part of the map covering the image, not the letterbox border; maps may be smaller than
    the input (output stride), so the content box is scaled to the map's size."""
    mh, mw = label_map.shape
    fy, fx = mh / meta.input_height, mw / meta.input_width
    y0, y1 = round(meta.pad_y * fy), round((meta.pad_y + meta.resized_height) * fy)
    x0, x1 = round(meta.pad_x * fx), round((meta.pad_x + meta.resized_width) * fx)
    return label_map[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]


def build(spec: PostprocessSpec, outputs: Sequence[TensorInfo], labels: Sequence[str]) -> Segmenter:
    info = pick_output(spec.output, outputs)
    if len(info.shape) == 4 and info.shape[1] > 1:
        check_label_count(labels, info.shape[1], info.name)
    return Segmenter(info.name, tuple(labels))
