"""Regions of a frame as images of their own, for the next model of a cascade.

A region is a result dict with source-pixel coordinates: ``x1, y1, x2, y2`` (a detection box,
cropped as it is) or also ``quad`` (a text region: four corners, top-left first, clockwise),
rectified with a perspective transform to an upright ``width x height`` image, where width is the
longer of the top and bottom edges and height the longer of the left and right edges (cubic
interpolation, borders replicated). A rectified crop at least 1.5 times as tall as wide is turned
90 degrees counter-clockwise: vertical text reads left to right then, as PaddleOCR does it.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

import cv2
import numpy as np

VERTICAL_RATIO = 1.5


def crop(image: np.ndarray, region: Mapping[str, Any]) -> Optional[np.ndarray]:
    """The region's pixels (a new contiguous BGR array), or None when it has no area."""
    quad = region.get("quad")
    if quad is not None:
        return rectify(image, np.asarray(quad, dtype=np.float32))
    h, w = image.shape[:2]
    x1, y1 = max(0, int(np.floor(region["x1"]))), max(0, int(np.floor(region["y1"])))
    x2, y2 = min(w, int(np.ceil(region["x2"]))), min(h, int(np.ceil(region["y2"])))
    if x2 <= x1 or y2 <= y1:
        return None
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def rectify(image: np.ndarray, quad: np.ndarray) -> Optional[np.ndarray]:
    width, height = _size(quad)
    if width < 1 or height < 1:
        return None
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad, target)
    out = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE,
                              flags=cv2.INTER_CUBIC)
    if height >= VERTICAL_RATIO * width:
        out = cv2.rotate(out, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return np.ascontiguousarray(out)


def rotate_180(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(cv2.rotate(image, cv2.ROTATE_180))


def _size(quad: np.ndarray) -> Tuple[int, int]:
    tl, tr, br, bl = quad
    width = int(max(np.linalg.norm(tl - tr), np.linalg.norm(br - bl)))
    height = int(max(np.linalg.norm(tl - bl), np.linalg.norm(tr - br)))
    return width, height
