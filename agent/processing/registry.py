"""Post-processors by ``postprocess.type``: an immutable table, one module per type."""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping, Sequence

from agent.engines.contract import TensorInfo
from agent.manifest.models import PostprocessSpec
from agent.processing import classification, detection, raw, segmentation, text_detection, text_recognition
from agent.processing.base import PostProcessor

Factory = Callable[[PostprocessSpec, Sequence[TensorInfo], Sequence[str]], PostProcessor]

POSTPROCESSORS: Mapping[str, Factory] = MappingProxyType({
    "classification": classification.build,
    "detection": detection.build,
    "segmentation": segmentation.build,
    "text_detection": text_detection.build,
    "text_recognition": text_recognition.build,
    "raw": raw.build,
})


def make_postprocessor(spec: PostprocessSpec, outputs: Sequence[TensorInfo], labels: Sequence[str]) -> PostProcessor:
    """The post-processor for ``spec.type``, checked against the model's outputs now (bad output
    names raise ``ManifestError`` here, not on the first frame)."""
    return POSTPROCESSORS[spec.type](spec, outputs, labels)
