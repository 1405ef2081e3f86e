"""Greedy class-aware non-maximum suppression in numpy: one vectorized IoU row per kept box."""

from __future__ import annotations

from typing import List

import numpy as np


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float, max_keep: int) -> np.ndarray:
    """Indices of the boxes kept, best score first.

    ``boxes`` [k, 4] x1,y1,x2,y2; a box is dropped when its IoU with a better-scoring kept box OF
    THE SAME CLASS is above ``iou_threshold``. Equal scores keep the lower index first. Stops
    after ``max_keep`` boxes, so the loop runs at most that many times.
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.intp)
    b = boxes.astype(np.float64)
    # Shift every class into its own region of the plane: boxes of different classes never overlap.
    span = float(b.max() - b.min()) + 1.0
    b = b + (classes.astype(np.float64) * span)[:, None]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = np.clip(x2 - x1, 0.0, None) * np.clip(y2 - y1, 0.0, None)
    order = np.argsort(-scores, kind="stable")
    keep: List[int] = []
    while order.size and len(keep) < max_keep:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)
