"""Vectorized NMS against the textbook loop."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest

from agent.processing.nms import nms


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float) -> List[int]:
    """Visit boxes best first; keep one unless a kept box of its class overlaps it above the threshold."""
    keep: List[int] = []
    for i in sorted(range(len(boxes)), key=lambda k: (-scores[k], k)):
        if all(classes[j] != classes[i] or iou(boxes[i], boxes[j]) <= threshold for j in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(40))
def test_matches_reference_loop(seed: int) -> None:
    rng = np.random.RandomState(seed)
    n = rng.randint(1, 60)
    xy = rng.uniform(0, 100, size=(n, 2))
    wh = rng.uniform(1, 40, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, size=n).astype(np.float32)
    classes = rng.randint(0, 3, size=n)
    threshold = float(rng.choice([0.1, 0.3, 0.5, 0.7]))
    assert nms(boxes, scores, classes, threshold, 10_000).tolist() == reference(boxes, scores, classes, threshold)


def test_by_hand() -> None:
    boxes = np.array([
        [0, 0, 10, 10],  # 0: best
        [1, 0, 11, 10],  # 1: IoU 9/11 = 0.82 with 0, same class -> dropped
        [1, 0, 11, 10],  # 2: same place but another class -> kept
        [5, 0, 15, 10],  # 3: IoU 5/15 = 0.33 with 0 -> kept at threshold 0.45
        [0, 0, 10, 10],  # 4: duplicate of 0, lower score -> dropped
    ], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    classes = np.array([0, 0, 1, 0, 0])
    assert nms(boxes, scores, classes, 0.45, 100).tolist() == [0, 2, 3]
    assert nms(boxes, scores, classes, 0.45, 2).tolist() == [0, 2]  # capped
    # IoU exactly at the threshold is kept: [0,0,10,10] vs [5,0,15,10] is 50/150 = 1/3
    assert nms(boxes[[0, 3]], scores[[0, 3]], classes[[0, 3]], 1 / 3, 100).tolist() == [0, 1]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0), 0.5, 10).tolist() == []
