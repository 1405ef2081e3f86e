"""The accuracy gate: an optimized predictor must agree with a full-precision reference on golden inputs.

Metrics (``validation.metric``), each computed per golden input, then aggregated into ``value``:

- ``cosine``: cosine similarity of the flattened outputs; value = worst (min); passes when >= threshold.
- ``max_abs``: max |candidate - reference| divided by max |reference| (scale-free); value = worst (max);
  passes when <= threshold.
- ``top1``: share of rows (``[N, C]``) or pixels (``[N, C, H, W]``, class axis 1) whose arg-max agrees;
  value = mean over inputs; passes when >= threshold.
- ``box_iou``: IoU of reference boxes greedily matched to same-label candidate boxes, summed and divided by
  the larger box count (so missing and extra boxes count as 0); value = worst (min); passes when >= threshold.

``box_iou`` reads rows ``(label, score, x1, y1, x2, y2)`` (PaddleDetection's ``[M, 6]``); rows with a
negative label (padding) or a score below ``min_score`` are ignored on both sides.

The threshold is ``validation.tolerance[precision]`` when the manifest gives one, else ``DEFAULT_TOLERANCE``.
The gate judges one candidate; falling back to another precision is the build orchestration's job.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.engines.contract import Predictor
from agent.errors import BuildError
from agent.logs import event

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE: Dict[str, Dict[str, float]] = {
    "cosine": {"fp32": 0.999, "fp16": 0.99, "int8": 0.98},
    "max_abs": {"fp32": 1e-3, "fp16": 2e-2, "int8": 1e-1},
    "top1": {"fp32": 0.99, "fp16": 0.95, "int8": 0.90},
    "box_iou": {"fp32": 0.95, "fp16": 0.90, "int8": 0.80},
}
HIGHER_IS_BETTER = {"cosine": True, "max_abs": False, "top1": True, "box_iou": True}


@dataclass(frozen=True)
class GateResult:
    passed: bool
    metric: str
    value: float  # the aggregate that was compared with the threshold
    threshold: float
    precision: str
    output: str  # the output tensor compared
    per_input: List[float] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        """JSON-safe (non-finite numbers become null)."""
        return {"passed": self.passed, "metric": self.metric, "value": _finite(self.value),
                "threshold": self.threshold, "precision": self.precision, "output": self.output,
                "per_input": [_finite(v) for v in self.per_input]}


def threshold_for(metric: str, precision: str, tolerance: Optional[float]) -> float:
    if metric not in DEFAULT_TOLERANCE:
        raise BuildError(f"validation.metric: unknown metric {metric!r} (use one of {sorted(DEFAULT_TOLERANCE)})")
    return float(tolerance) if tolerance is not None else DEFAULT_TOLERANCE[metric][precision]


def run_gate(
    candidate: Predictor,
    reference: Predictor,
    feeds: Sequence[Mapping[str, np.ndarray]],
    metric: str,
    tolerance: Optional[float] = None,
    output: Optional[str] = None,
    precision: str = "fp32",
    min_score: float = 0.0,
) -> GateResult:
    """Run every feed through both predictors and judge ``output`` (default: the first output)."""
    threshold = threshold_for(metric, precision, tolerance)
    if not feeds:
        raise BuildError("accuracy gate: no golden inputs; check validation.inputs")
    cand_name, ref_name = _output_names(candidate, reference, output)
    higher = HIGHER_IS_BETTER[metric]
    measure = _MEASURES[metric]
    per_input: List[float] = []
    for feed in feeds:
        got = np.asarray(candidate.infer(feed)[cand_name])
        want = np.asarray(reference.infer(feed)[ref_name])
        value = measure(got, want, min_score)
        if math.isnan(value):
            value = -1.0 if higher else math.inf
        per_input.append(value)
    if metric == "top1":
        value = float(np.mean(per_input))
    else:
        value = min(per_input) if higher else max(per_input)
    passed = value >= threshold if higher else value <= threshold
    event(log, logging.INFO, "gate.result", metric=metric, precision=precision, output=cand_name, value=value,
          threshold=threshold, passed=passed, inputs=len(per_input))
    return GateResult(passed, metric, value, threshold, precision, cand_name, per_input)


def _output_names(candidate: Predictor, reference: Predictor, output: Optional[str]) -> Tuple[str, str]:
    """The same output on both sides: by name when the reference has it, else by position
    (an ONNX export may rename outputs)."""
    cand = [t.name for t in candidate.outputs]
    ref = [t.name for t in reference.outputs]
    name = output or (cand[0] if cand else "")
    if name not in cand:
        raise BuildError(f"accuracy gate: the model has no output {name!r} (outputs: {cand}); fix postprocess.output")
    if name in ref:
        return name, name
    index = cand.index(name)
    if index >= len(ref):
        raise BuildError(f"accuracy gate: the reference has {len(ref)} outputs, cannot compare output #{index}")
    return name, ref[index]


def _cosine(got: np.ndarray, want: np.ndarray, _: float) -> float:
    if got.shape != want.shape:
        return -1.0
    a, b = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def _max_abs(got: np.ndarray, want: np.ndarray, _: float) -> float:
    if got.shape != want.shape:
        return math.inf
    if want.size == 0:
        return 0.0
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    scale = float(np.max(np.abs(want.astype(np.float64))))
    return diff / scale if scale > 0 else diff


def _top1(got: np.ndarray, want: np.ndarray, _: float) -> float:
    if got.shape != want.shape or want.ndim == 0:
        return 0.0
    axis = -1 if want.ndim <= 2 else 1
    return float(np.mean(np.argmax(got, axis=axis) == np.argmax(want, axis=axis)))


def _box_iou(got: np.ndarray, want: np.ndarray, min_score: float) -> float:
    cand, ref = _rows(got, min_score), _rows(want, min_score)
    if len(ref) == 0 and len(cand) == 0:
        return 1.0
    if len(ref) == 0 or len(cand) == 0:
        return 0.0
    ious = _pairwise_iou(ref[:, 2:6], cand[:, 2:6])
    ious[ref[:, :1] != cand[:, 0][None, :]] = 0.0
    matched_ref, matched_cand, total = set(), set(), 0.0
    # greedy: best pairs first, each box used once
    for flat in np.argsort(-ious, axis=None):
        i, j = divmod(int(flat), ious.shape[1])
        if ious[i, j] <= 0.0:
            break
        if i in matched_ref or j in matched_cand:
            continue
        matched_ref.add(i)
        matched_cand.add(j)
        total += float(ious[i, j])
    return total / max(len(ref), len(cand))


def _rows(boxes: np.ndarray, min_score: float) -> np.ndarray:
    if boxes.size and boxes.shape[-1] != 6:
        raise BuildError(f"accuracy gate: box_iou needs rows (label, score, x1, y1, x2, y2), got shape {boxes.shape}")
    rows = boxes.reshape(-1, 6).astype(np.float64)
    return rows[(rows[:, 0] >= 0) & (rows[:, 1] >= min_score)]


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _finite(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


_MEASURES: Dict[str, Callable[[np.ndarray, np.ndarray, float], float]] = {
    "cosine": _cosine, "max_abs": _max_abs, "top1": _top1, "box_iou": _box_iou,
}
