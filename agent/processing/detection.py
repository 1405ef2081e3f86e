"""``type: detection``: boxes in SOURCE-image pixels, one list per image.

``box_format`` picks how ``postprocess.output`` (default: the model's first output) is read:

- ``paddle``: PaddleDetection's ``multiclass_nms`` result, rows [M, 6] = (class, score, x1, y1,
  x2, y2) for the whole batch, and a per-image count [N] (the first OTHER output of rank 1; without
  one the batch must be 1). Rows with class < 0 (Paddle's "no box" filler) are dropped.
- ``xyxy``: [N, K, 6] = (x1, y1, x2, y2, score, class) (a model that already picked the class);
  any other last dimension D > 4 is [N, K, 4 + C]: x1, y1, x2, y2 and C per-class scores. So a raw
  two-class xyxy model (D = 6) cannot be told apart and reads as (score, class): export it cxcywh.
- ``cxcywh``: [N, K, 4 + C] raw YOLO-style: centre x, centre y, width, height, C per-class scores.
  (YOLOv8 exports [N, 4 + C, K]: transpose in the model. YOLOv5's objectness column is not modelled.)

For the per-class layouts the class is the argmax and the score its value. A rank-2 [K, D] output
reads as a batch of one. Then: ``score >= score_threshold``; class-aware greedy NMS at ``nms_iou``
(set ``nms_iou: null`` when the model already did NMS, as PaddleDetection's models do); best
``max_detections`` kept, best first.

Coordinates: model boxes are in input-tensor pixels; ``normalized_boxes: true`` means [0, 1] of the
input size (multiplied by it first). When the preprocessing fed ``scale_factor``, the model divided
its boxes by it (PaddleDetection's convention), so they are multiplied back. Letterbox padding and
resize are then undone with the image's ``ImageMeta`` and boxes clipped to the source image.

Result per image: ``{"detections": [{"label", "class", "score", "x1", "y1", "x2", "y2"}], "count": n}``;
``label`` is the class index as a string past the end of the labels; coordinates are rounded to 2
decimals, scores to 6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.engines.contract import TensorInfo
from agent.errors import PredictorError
from agent.manifest.models import PostprocessSpec
from agent.processing.base import check_label_count, fetch, label_of, per_image, pick_output
from agent.processing.meta import ImageMeta
from agent.processing.nms import nms

DEFAULT_MAX_DETECTIONS = 100
# (boxes [k, 4] in model coordinates, scores [k], classes [k]) of one image
Candidates = Tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Detector:
    output: str
    counts: Optional[str]  # paddle: the per-image box count output
    box_format: str
    normalized: bool
    score_threshold: float
    nms_iou: Optional[float]
    max_detections: int
    labels: Tuple[str, ...]

    def __call__(self, outputs: Mapping[str, np.ndarray], metas: Sequence[ImageMeta]) -> List[Dict[str, Any]]:
        n = len(metas)
        found = self._paddle(outputs, n) if self.box_format == "paddle" else self._dense(outputs, n)
        return [self._finish(cand, meta) for cand, meta in zip(found, metas)]

    def _paddle(self, outputs: Mapping[str, np.ndarray], n: int) -> List[Candidates]:
        rows = fetch(outputs, self.output)
        if rows.ndim != 2 or rows.shape[1] != 6:
            raise PredictorError(
                f"detection: output '{self.output}' has shape {list(rows.shape)}; box_format paddle expects "
                "[M, 6] rows (class, score, x1, y1, x2, y2); check postprocess.box_format and output"
            )
        if self.counts is not None:
            counts = per_image(fetch(outputs, self.counts).reshape(-1), self.counts, n, "detection")
        elif n == 1:
            counts = np.array([rows.shape[0]])
        else:
            raise PredictorError(
                f"detection: the model has no box-count output to split its [M, 6] rows among {n} images; "
                "run the pipeline with batch: 1"
            )
        counts = counts.astype(np.int64)
        if counts.min() < 0 or counts.sum() > rows.shape[0]:
            raise PredictorError(f"detection: box counts {counts.tolist()} do not fit the {rows.shape[0]} rows")
        found = []
        start = 0
        for count in counts.tolist():
            part = rows[start:start + count]
            start += count
            part = part[(part[:, 0] >= 0) & (part[:, 1] >= self.score_threshold)]
            found.append((part[:, 2:6], part[:, 1], np.rint(part[:, 0]).astype(np.int64)))
        return found

    def _dense(self, outputs: Mapping[str, np.ndarray], n: int) -> List[Candidates]:
        arr = fetch(outputs, self.output)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[2] < 5:
            raise PredictorError(
                f"detection: output '{self.output}' has shape {list(arr.shape)}; box_format {self.box_format} "
                "expects [N, K, 4 + classes] or [N, K, 6]; check postprocess.box_format and output"
            )
        per_image(arr, self.output, n, "detection")
        if self.box_format == "xyxy" and arr.shape[2] == 6:
            scores, classes = arr[..., 4], np.rint(arr[..., 5]).astype(np.int64)
        else:
            per_class = arr[..., 4:]
            classes = per_class.argmax(axis=-1)
            scores = np.take_along_axis(per_class, classes[..., None], axis=-1)[..., 0]
        passed = scores >= self.score_threshold
        found = []
        for i in range(n):
            keep = passed[i]
            geo = arr[i, keep, :4].astype(np.float64)
            if self.box_format == "cxcywh":
                half = geo[:, 2:4] / 2.0
                geo = np.concatenate([geo[:, 0:2] - half, geo[:, 0:2] + half], axis=1)
            found.append((geo, scores[i, keep], classes[i, keep]))
        return found

    def _finish(self, cand: Candidates, meta: ImageMeta) -> Dict[str, Any]:
        boxes, scores, classes = cand
        if self.nms_iou is not None:
            idx = nms(boxes, scores, classes, self.nms_iou, self.max_detections)
        else:
            idx = np.argsort(-scores, kind="stable")[: self.max_detections]
        mapped = meta.to_source(self._input_pixels(boxes[idx].astype(np.float64), meta)).round(2).tolist()
        dets = []
        for cls, score, (x1, y1, x2, y2) in zip(classes[idx].tolist(), scores[idx].tolist(), mapped):
            label = label_of(self.labels, cls)
            dets.append({"label": str(cls) if label is None else label, "class": cls, "score": round(score, 6),
                         "x1": x1, "y1": y1, "x2": x2, "y2": y2})
        return {"detections": dets, "count": len(dets)}

    def _input_pixels(self, boxes: np.ndarray, meta: ImageMeta) -> np.ndarray:
        if self.normalized:
            return boxes * np.array([meta.input_width, meta.input_height] * 2, dtype=np.float64)
        if meta.scale_factor_fed:
            return boxes * np.array([meta.scale_x, meta.scale_y] * 2, dtype=np.float64)
        return boxes


def build(spec: PostprocessSpec, outputs: Sequence[TensorInfo], labels: Sequence[str]) -> Detector:
    info = pick_output(spec.output, outputs)
    counts = None
    if spec.box_format == "paddle":
        counts = next((o.name for o in outputs if o.name != info.name and len(o.shape) == 1), None)
    elif len(info.shape) == 3 and info.shape[2] > 4 and not (spec.box_format == "xyxy" and info.shape[2] == 6):
        check_label_count(labels, info.shape[2] - 4, info.name)
    return Detector(info.name, counts, spec.box_format, spec.normalized_boxes, spec.score_threshold, spec.nms_iou,
                    spec.max_detections or DEFAULT_MAX_DETECTIONS, tuple(labels))
