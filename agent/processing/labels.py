"""Class labels for post-processing: inline in the manifest or one per line in a file."""

from __future__ import annotations

from pathlib import Path
from typing import List

import yaml

from agent.errors import ManifestError
from agent.manifest.models import PostprocessSpec


def load_labels(spec: PostprocessSpec) -> List[str]:
    """``spec.labels``, or (the schema allows only one of the two) the lines of ``spec.labels_file``:
    UTF-8, surrounding whitespace and trailing blank lines dropped; inner blank lines stay so that
    indices keep their meaning. A ``text_recognition`` dictionary keeps each line's whitespace (a
    character may be a space), and may be PaddleOCR's ``inference.yml`` (its
    ``PostProcess.character_dict``). The manifest loader resolves ``labels_file``; a relative path here
    is relative to the working directory."""
    if not spec.labels_file:
        return list(spec.labels)
    path = Path(spec.labels_file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"postprocess.labels_file: cannot read {path}: {exc}; fix the path or the file") from exc
    dictionary = spec.type == "text_recognition"
    if dictionary and path.suffix.lower() in (".yml", ".yaml"):
        return _yaml_dictionary(path, text)
    # a dictionary splits on newlines only: splitlines() would also split on characters it may hold
    lines = [line.rstrip("\r") for line in text.split("\n")] if dictionary else [
        line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ManifestError(f"postprocess.labels_file: {path} has no labels; write one label per line")
    return lines


def _yaml_dictionary(path: Path, text: str) -> List[str]:
    """PaddleOCR's exported ``inference.yml``: the recognizer's dictionary under PostProcess."""
    try:
        doc = yaml.safe_load(text)
        chars = doc["PostProcess"]["character_dict"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise ManifestError(f"postprocess.labels_file: {path} has no PostProcess.character_dict ({exc}); give "
                            "the model's inference.yml or a dictionary with one character per line") from exc
    if not isinstance(chars, list) or not chars:
        raise ManifestError(f"postprocess.labels_file: PostProcess.character_dict in {path} is not a list of "
                            "characters")
    return [str(c) for c in chars]
