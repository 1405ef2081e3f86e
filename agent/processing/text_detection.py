"""``type: text_detection``: PP-OCR's DB (differentiable binarization) head → text regions.

The model's output (``postprocess.output``, default the first) is a text probability map
[N, 1, H, W] (or [N, H, W]) at the input tensor's size. Per image, on the part of the map that
holds the frame (padding cut off):

1. pixels with probability > ``mask_threshold`` are text (``dilate: true`` grows them by one
   pixel with a 2 x 2 kernel first);
2. each connected region's outline (OpenCV contours, at most ``max_detections``, default 1000) gets
   its minimum-area rectangle; rectangles whose short side is under ``min_size`` are dropped;
3. the region's score is the mean probability inside that rectangle; below ``score_threshold``
   it is dropped;
4. the rectangle is grown by ``d = area * unclip_ratio / perimeter`` on every side (DB's "unclip":
   the shrunk text kernel back to the full text; growing a rectangle's outline by ``d`` with round
   corners and taking the minimum-area rectangle again gives exactly this), and dropped when its
   short side is then under ``min_size + 2``;
5. corners are mapped to source-image pixels and ordered top-left, top-right, bottom-right,
   bottom-left.

Result per image: ``{"regions": [{"quad": [[x, y] x 4], "x1", "y1", "x2", "y2", "score"}],
"count": n}`` in reading order (top to bottom; regions whose tops lie within 10 pixels form one
line, left to right). ``x1..y2`` is the quadrilateral's bounding box; coordinates are rounded to 2
decimals, scores to 6. Cascades (``pipelines[].then``) crop each quadrilateral with a perspective
transform for the next model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence

import cv2
import numpy as np

from agent.engines.contract import TensorInfo
from agent.errors import PredictorError
from agent.manifest.models import PostprocessSpec
from agent.processing.base import fetch, per_image, pick_output
from agent.processing.meta import ImageMeta

DEFAULT_MAX_REGIONS = 1000
LINE_TOLERANCE_PX = 10.0
_DILATE_KERNEL = np.ones((2, 2), np.uint8)


@dataclass(frozen=True)
class TextDetector:
    output: str
    mask_threshold: float
    score_threshold: float
    unclip_ratio: float
    min_size: float
    dilate: bool
    max_regions: int

    def __call__(self, outputs: Mapping[str, np.ndarray], metas: Sequence[ImageMeta]) -> List[Dict[str, Any]]:
        maps = per_image(fetch(outputs, self.output), self.output, len(metas), "text_detection")
        if maps.ndim == 4 and maps.shape[1] == 1:
            maps = maps[:, 0]
        if maps.ndim != 3:
            raise PredictorError(
                f"text_detection: output '{self.output}' has shape {list(maps.shape)}; expected a probability map "
                "[N, 1, H, W]; check postprocess.type and postprocess.output"
            )
        return [self._regions(prob, meta) for prob, meta in zip(maps, metas)]

    def _regions(self, prob: np.ndarray, meta: ImageMeta) -> Dict[str, Any]:
        content = np.ascontiguousarray(
            prob[meta.pad_y:meta.pad_y + meta.resized_height, meta.pad_x:meta.pad_x + meta.resized_width],
            dtype=np.float32)
        mask: np.ndarray = (content > self.mask_threshold).astype(np.uint8)
        if self.dilate:
            mask = cv2.dilate(mask, _DILATE_KERNEL)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        scale = np.array([meta.width / meta.resized_width, meta.height / meta.resized_height])
        limit = np.array([meta.width, meta.height], dtype=np.float64)
        regions = []
        for contour in contours[: self.max_regions]:
            (cx, cy), (w, h), angle = cv2.minAreaRect(contour)
            if min(w, h) < self.min_size:
                continue
            score = _mean_inside(content, cv2.boxPoints(((cx, cy), (w, h), angle)))
            if score < self.score_threshold:
                continue
            grow = w * h * self.unclip_ratio / (2.0 * (w + h))
            w, h = w + 2.0 * grow, h + 2.0 * grow
            if min(w, h) < self.min_size + 2:
                continue
            quad = np.clip(_ordered(cv2.boxPoints(((cx, cy), (w, h), angle))).astype(np.float64) * scale, 0.0, limit)
            regions.append(_region(quad, score))
        regions = reading_order(regions)
        return {"regions": regions, "count": len(regions)}


def _mean_inside(prob: np.ndarray, corners: np.ndarray) -> float:
    """Mean probability inside the quadrilateral (over its bounding box, masked by the polygon)."""
    h, w = prob.shape
    x0 = int(np.clip(np.floor(corners[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(mask, [(corners - (x0, y0)).astype(np.int32)], 1)
    return float(cv2.mean(prob[y0:y1 + 1, x0:x1 + 1], mask)[0])


def _ordered(corners: np.ndarray) -> np.ndarray:
    """Top-left, top-right, bottom-right, bottom-left: the two leftmost corners are the left edge
    (the upper one first), the two others the right edge."""
    by_x = corners[np.argsort(corners[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1], kind="stable")]
    tr, br = right[np.argsort(right[:, 1], kind="stable")]
    return np.array([tl, tr, br, bl])


def _region(quad: np.ndarray, score: float) -> Dict[str, Any]:
    (x1, y1), (x2, y2) = quad.min(axis=0), quad.max(axis=0)
    return {"quad": quad.round(2).tolist(), "x1": round(float(x1), 2), "y1": round(float(y1), 2),
            "x2": round(float(x2), 2), "y2": round(float(y2), 2), "score": round(score, 6)}


def reading_order(regions: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Top to bottom by the top-left corner; regions whose top-left corners lie within
    LINE_TOLERANCE_PX vertically of the line's first region are one line, left to right."""
    pending = sorted(regions, key=lambda r: (r["quad"][0][1], r["quad"][0][0]))
    out: List[Dict[str, Any]] = []
    while pending:
        top = pending[0]["quad"][0][1]
        line = [r for r in pending if r["quad"][0][1] - top < LINE_TOLERANCE_PX]
        pending = pending[len(line):]
        out.extend(sorted(line, key=lambda r: r["quad"][0][0]))
    return out


def build(spec: PostprocessSpec, outputs: Sequence[TensorInfo], labels: Sequence[str]) -> TextDetector:
    info = pick_output(spec.output, outputs)
    return TextDetector(info.name, spec.mask_threshold, spec.score_threshold, spec.unclip_ratio, spec.min_size,
                        spec.dilate, spec.max_detections or DEFAULT_MAX_REGIONS)
