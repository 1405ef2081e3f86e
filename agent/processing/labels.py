"""Class labels for post-processing: inline in the manifest or one per line in a file."""

from __future__ import annotations

from pathlib import Path
from typing import List

from agent.errors import ManifestError
from agent.manifest.models import PostprocessSpec


def load_labels(spec: PostprocessSpec) -> List[str]:
    """``spec.labels``, or (the schema allows only one of the two) the lines of ``spec.labels_file``:
    UTF-8, surrounding whitespace and trailing blank lines dropped; inner blank lines stay so that
    indices keep their meaning. The manifest loader resolves ``labels_file``; a relative path here
    is relative to the working directory."""
    if not spec.labels_file:
        return list(spec.labels)
    path = Path(spec.labels_file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"postprocess.labels_file: cannot read {path}: {exc}; fix the path or the file") from exc
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ManifestError(f"postprocess.labels_file: {path} has no labels; write one label per line")
    return lines
