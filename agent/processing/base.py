"""What every post-processor is, and the checks they share."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence

import numpy as np

from agent.engines.contract import TensorInfo
from agent.errors import ManifestError, PredictorError
from agent.logs import event
from agent.processing.meta import ImageMeta

log = logging.getLogger(__name__)


class PostProcessor(Protocol):
    """Model outputs of one batch → one JSON-ready dict per image (plain Python values only)."""

    def __call__(self, outputs: Mapping[str, np.ndarray], metas: Sequence[ImageMeta]) -> List[Dict[str, Any]]: ...


def pick_output(name: Optional[str], outputs: Sequence[TensorInfo]) -> TensorInfo:
    """The output ``postprocess.output`` names, or the model's first."""
    names = [o.name for o in outputs]
    if not outputs:
        raise ManifestError("postprocess: the model declares no outputs")
    if name is None:
        return outputs[0]
    for info in outputs:
        if info.name == name:
            return info
    raise ManifestError(f"postprocess.output: the model has no output {name!r} (its outputs: {names}); use one of them")


def fetch(outputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    try:
        return np.asarray(outputs[name])
    except KeyError:
        raise PredictorError(
            f"the model returned no output '{name}' (it returned {sorted(outputs)}); check postprocess.output"
        ) from None


def per_image(arr: np.ndarray, name: str, n: int, kind: str) -> np.ndarray:
    """``arr`` checked to have one leading row per image of the batch."""
    if arr.ndim == 0 or arr.shape[0] != n:
        raise PredictorError(
            f"{kind}: output '{name}' has shape {list(arr.shape)}, expected a first dimension of {n} "
            f"(the batch); check postprocess.type and postprocess.output"
        )
    return arr


def is_empty(result: Mapping[str, Any]) -> bool:
    """A result that found nothing: its ``detections`` or ``classes`` list is empty (``publish.include_empty:
    false`` leaves it unpublished). Raw tensors and anything else are never empty."""
    found = [result[key] for key in ("detections", "classes") if key in result]
    return bool(found) and all(isinstance(v, list) and not v for v in found)


def label_of(labels: Sequence[str], index: int) -> Optional[str]:
    return labels[index] if 0 <= index < len(labels) else None


def check_label_count(labels: Sequence[str], classes: int, output: str) -> None:
    """Warn, not fail: a model may add a background class the label file leaves out."""
    if labels and classes > 0 and len(labels) != classes:
        event(log, logging.WARNING, "postprocess.labels_mismatch", output=output, labels=len(labels), classes=classes)
