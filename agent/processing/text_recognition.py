"""``type: text_recognition``: CTC greedy decoding of a text-line recognizer (PP-OCR's CRNN/SVTR).

The output (``postprocess.output``, default the first) is [N, T, C]: per time step, one
probability per class. Class 0 is CTC's blank; classes 1.. are the dictionary (``labels_file``,
one character per line, whitespace kept; or PaddleOCR's ``inference.yml`` with its
``PostProcess.character_dict``; or inline ``labels``), and when the model has one class more
than that, the last is a space (PaddleOCR's ``use_space_char``).

Decoding: the best class per step; a run of the same class counts once and blanks are dropped.
The line's score is the mean of the kept steps' probabilities (0 for an empty line).

Result per image: ``{"text": str, "score": float}`` (score rounded to 6 decimals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from agent.engines.contract import TensorInfo
from agent.errors import ManifestError, PredictorError
from agent.manifest.models import PostprocessSpec
from agent.processing.base import fetch, per_image, pick_output
from agent.processing.meta import ImageMeta

BLANK = 0


@dataclass(frozen=True)
class TextRecognizer:
    output: str
    dictionary: Tuple[str, ...]

    def __call__(self, outputs: Mapping[str, np.ndarray], metas: Sequence[ImageMeta]) -> List[Dict[str, Any]]:
        probs = per_image(fetch(outputs, self.output), self.output, len(metas), "text_recognition")
        if probs.ndim != 3:
            raise PredictorError(
                f"text_recognition: output '{self.output}' has shape {list(probs.shape)}; expected [N, T, classes]; "
                "check postprocess.type and postprocess.output"
            )
        characters = characters_for(self.dictionary, probs.shape[2], self.output)
        best = probs.argmax(axis=2)
        confidence = np.take_along_axis(probs, best[..., None], axis=2)[..., 0]
        out = []
        for steps, conf in zip(best, confidence):
            keep = steps != BLANK
            keep[1:] &= steps[1:] != steps[:-1]
            text = "".join(characters[i] for i in steps[keep].tolist())
            score = float(conf[keep].mean()) if keep.any() else 0.0
            out.append({"text": text, "score": round(score, 6)})
        return out


def characters_for(dictionary: Sequence[str], classes: int, output: str) -> Tuple[str, ...]:
    """Class index → character: blank, the dictionary, and a space when the model has room for it."""
    if classes == len(dictionary) + 2:
        return ("", *dictionary, " ")
    if classes == len(dictionary) + 1:
        return ("", *dictionary)
    raise ManifestError(
        f"postprocess.labels_file: the dictionary has {len(dictionary)} characters but output '{output}' has "
        f"{classes} classes (expected {len(dictionary) + 1}, or {len(dictionary) + 2} with a space); use the "
        "dictionary the model was trained with"
    )


def build(spec: PostprocessSpec, outputs: Sequence[TensorInfo], labels: Sequence[str]) -> TextRecognizer:
    info = pick_output(spec.output, outputs)
    if not labels:
        raise ManifestError("postprocess.labels_file: text_recognition needs the model's character dictionary")
    if len(info.shape) == 3 and info.shape[2] > 0:
        characters_for(labels, info.shape[2], info.name)
    return TextRecognizer(info.name, tuple(labels))
