"""``type: classification``: the top-k classes of each image.

Reads ``postprocess.output`` (default: the model's first output): any shape whose first dimension
is the batch, e.g. [N, C] or [N, C, 1, 1]; each image's scores are flattened. ``softmax: true``
turns logits into probabilities first. ``score_threshold`` is not applied here (detection only).

Result per image: ``{"classes": [{"index": i, "label": str | None, "score": float}, ...]}``, best
first, ``min(top_k, C)`` entries; ``label`` is None past the end of the labels; scores are rounded
to 6 decimals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from agent.engines.contract import TensorInfo
from agent.manifest.models import PostprocessSpec
from agent.processing.base import check_label_count, fetch, label_of, per_image, pick_output
from agent.processing.meta import ImageMeta


@dataclass(frozen=True)
class Classifier:
    output: str
    top_k: int
    softmax: bool
    labels: Tuple[str, ...]

    def __call__(self, outputs: Mapping[str, np.ndarray], metas: Sequence[ImageMeta]) -> List[Dict[str, Any]]:
        n = len(metas)
        scores = per_image(fetch(outputs, self.output), self.output, n, "classification").reshape(n, -1)
        scores = softmax(scores) if self.softmax else scores.astype(np.float32, copy=False)
        k = min(self.top_k, scores.shape[1])
        if k == 0:
            return [{"classes": []} for _ in range(n)]
        top, top_scores = _top1(scores) if k == 1 else _top_k(scores, k)
        return [{"classes": [self._entry(i, s) for i, s in zip(idx, sc)]} for idx, sc in zip(top, top_scores)]

    def _entry(self, index: int, score: float) -> Dict[str, Any]:
        return {"index": index, "label": label_of(self.labels, index), "score": round(score, 6)}


def _top1(scores: np.ndarray) -> Tuple[List[List[int]], List[List[float]]]:
    # top_k: 1 (only the best class) runs on the post thread per frame: argmax alone costs a fifth of
    # the partition + sort below (python -m bench.micro: 3.9 vs 17.8 us per result, 10 classes);
    # ties go to the lowest index
    best = scores.argmax(axis=1)
    return best[:, None].tolist(), scores[np.arange(len(best)), best][:, None].tolist()


def _top_k(scores: np.ndarray, k: int) -> Tuple[List[List[int]], List[List[float]]]:
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).tolist(), np.take_along_axis(top_scores, order, axis=1).tolist()


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [N, C] in float32, shifted by the row maximum so exp cannot overflow."""
    e = np.exp(x.astype(np.float32) - x.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def build(spec: PostprocessSpec, outputs: Sequence[TensorInfo], labels: Sequence[str]) -> Classifier:
    info = pick_output(spec.output, outputs)
    dims = info.shape[1:]
    if dims and all(d > 0 for d in dims):
        check_label_count(labels, int(np.prod(dims)), info.name)
    return Classifier(info.name, spec.top_k, spec.softmax, tuple(labels))
