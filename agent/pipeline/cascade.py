"""Cascades (``pipelines[].then``): more models on every region the pipeline's model found.

DeepStream's secondary inference engines are the model: a primary detector finds regions, and
each secondary stage runs on the crops of those regions. Here a stage's candidates are the regions
of its parent's result (``detections`` boxes, or text ``regions`` quadrilaterals), filtered by
``labels`` and ``min_score``, best ``max_regions`` by score. Their crops (agent/processing/crops.py:
boxes cut out, quadrilaterals rectified) go through the stage model's own preprocessing, a frame's
crops in as few batches as the model takes (sorted by aspect ratio so a batch pads little), and the
stage's result is attached to each region under the stage model's name.

Below a stage: when its result has regions itself (a detector), its ``then`` stages run on those,
cut from its crop; otherwise (a classifier, a recognizer) they run on the same crop, which a
direction classifier (``rotate_label``) turns by 180 degrees first when it says so. Regions found in
a box crop are shifted back to source-image pixels; those found in a rectified quadrilateral stay
in the crop's own pixels.

Runs on the pipeline's post-processing thread (agent/pipeline/runner.py calls it per frame);
each pipeline has its own ``Cascade`` with its own predictors and preprocessors. ``warm_up`` runs
every stage's predictor once on that thread before the pipeline reports warm (oneDNN keeps its
primitives per thread), so the first frame with regions does not pay the first-run cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.engines.contract import Predictor
from agent.manifest.models import CascadeSpec
from agent.pipeline.inference import Postprocess, Preprocess, warm_up
from agent.processing.crops import crop, rotate_180

Region = Dict[str, Any]
REGION_KEYS = ("detections", "regions")  # where detection and text_detection results keep their regions


@dataclass(frozen=True)
class StageModel:
    preprocess: Preprocess
    predictor: Predictor
    postprocess: Postprocess
    max_batch: int  # crops per inference call
    # A frame the preprocessing turns into the stage's input size, for the warm-up; None when that
    # size is each crop's own (agent/processing/preprocess.py ``warmup_frame``).
    warmup_frame: Optional[np.ndarray] = None


@dataclass
class Stage:
    spec: CascadeSpec
    model: StageModel
    children: List[Stage] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    region: Region  # where this stage's result goes
    image: np.ndarray  # the image the region's coordinates refer to, or the crop itself
    whole: bool  # True: ``image`` is already the crop (a stage below a classifier/recognizer)


class Cascade:
    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        self.crops: Dict[str, int] = {}  # model name -> crops it ran on (health counts them as inferences)

    def __call__(self, image: np.ndarray, result: Dict[str, Any]) -> Dict[str, Any]:
        """``result`` (the primary model's, for one frame) with every stage's results attached."""
        regions = regions_of(result)
        if regions:
            for stage in self.stages:
                _run(stage, [_Candidate(r, image, False) for r in regions], self.crops)
        return result

    def warm_up(self) -> None:
        """Run every stage's predictor, nested ones too, once per batch size it will use (1 and its
        ``max_batch``), in the calling thread: the one that runs the cascade. Failures are logged
        (``pipeline.warmup_failed``) and the frames report them again."""
        pending = list(self.stages)
        while pending:
            stage = pending.pop(0)
            model = stage.model
            warm_up(stage.spec.model, model.preprocess, model.predictor, model.warmup_frame, (1, model.max_batch))
            pending.extend(stage.children)


def regions_of(result: Mapping[str, Any]) -> Optional[List[Region]]:
    """The regions a result holds, or None when it is not a region-finding result."""
    for key in REGION_KEYS:
        found = result.get(key)
        if isinstance(found, list):
            return found
    return None


def _run(stage: Stage, candidates: List[_Candidate], counts: Dict[str, int]) -> None:
    spec = stage.spec
    chosen = [c for c in candidates if c.whole or _wanted(spec, c.region)]
    chosen.sort(key=lambda c: -float(c.region.get("score", 0.0)))
    items: List[Tuple[_Candidate, np.ndarray]] = []
    for cand in chosen[: spec.max_regions]:
        cropped = cand.image if cand.whole else crop(cand.image, cand.region)
        if cropped is not None and cropped.shape[0] > 0 and cropped.shape[1] > 0:
            items.append((cand, cropped))
    if not items:
        return
    results = _infer(stage.model, [c for _, c in items])
    counts[spec.model] = counts.get(spec.model, 0) + len(items)
    for (cand, _), res in zip(items, results):
        cand.region[spec.model] = res
    for child in stage.children:
        _run(child, [n for (cand, cropped), res in zip(items, results) for n in _below(stage, cand, cropped, res)],
             counts)
    for (cand, _), res in zip(items, results):
        if not cand.whole and "quad" not in cand.region:
            _shift(regions_of(res) or [], cand.region)


def _wanted(spec: CascadeSpec, region: Region) -> bool:
    if spec.labels and region.get("label") not in spec.labels:
        return False
    return float(region.get("score", 1.0)) >= spec.min_score


def _infer(model: StageModel, crops: List[np.ndarray]) -> List[Dict[str, Any]]:
    """All crops in batches of at most ``max_batch``, similar aspect ratios together; results in
    the order of ``crops``."""
    order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
    out: List[Optional[Dict[str, Any]]] = [None] * len(crops)
    for start in range(0, len(order), model.max_batch):
        part = order[start:start + model.max_batch]
        feeds, metas = model.preprocess([crops[i] for i in part])
        for i, res in zip(part, model.postprocess(model.predictor.infer(feeds), metas)):
            out[i] = res
    return [r for r in out if r is not None]


def _below(stage: Stage, cand: _Candidate, cropped: np.ndarray, result: Dict[str, Any]) -> List[_Candidate]:
    """The candidates ``result`` gives the stages below ``stage``."""
    found = regions_of(result)
    if found is not None:
        return [_Candidate(r, cropped, False) for r in found]
    image = rotate_180(cropped) if _says_rotate(stage.spec, result) else cropped
    return [_Candidate(cand.region, image, True)]


def _says_rotate(spec: CascadeSpec, result: Mapping[str, Any]) -> bool:
    if spec.rotate_label is None:
        return False
    classes = result.get("classes") or []
    top = classes[0] if classes else {}
    return top.get("label") == spec.rotate_label and float(top.get("score", 0.0)) >= spec.rotate_score


def _shift(regions: List[Region], parent: Region) -> None:
    """Box-crop coordinates → source pixels (the crop started at the parent's floored x1, y1)."""
    _move(regions, float(int(np.floor(parent["x1"]))), float(int(np.floor(parent["y1"]))))


def _move(regions: List[Region], dx: float, dy: float) -> None:
    for r in regions:
        if "quad" not in r:  # what was found inside a rectified quadrilateral keeps its own pixels
            for value in r.values():
                nested = regions_of(value) if isinstance(value, dict) else None
                if nested:
                    _move(nested, dx, dy)
        for key, delta in (("x1", dx), ("x2", dx), ("y1", dy), ("y2", dy)):
            if key in r:
                r[key] = round(float(r[key]) + delta, 2)
        if "quad" in r:
            r["quad"] = [[round(x + dx, 2), round(y + dy, 2)] for x, y in r["quad"]]
