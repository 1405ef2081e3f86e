"""Checks a schema-valid manifest against the world: model references, files, hashes, confinement."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from agent.hashing import sha256_file
from agent.manifest.models import CascadeSpec, Manifest
from agent.manifest.paths import Reference, glob_root, inside, is_device, is_pattern, manifest_references
from agent.manifest.problems import Problem, format_path
from agent.manifest.yamlload import FieldPath, YamlDocument


def check_references(
    manifest: Manifest, doc: YamlDocument, base_dir: Path, allowed_dirs: Optional[Sequence[Path]] = None
) -> List[Problem]:
    """Problems with what ``manifest`` (paths already absolute) refers to.

    With ``allowed_dirs`` (fleet updates) a path outside them is reported and never opened,
    not even to hash it.
    """
    problems: List[Problem] = []

    def add(path: FieldPath, message: str) -> None:
        problems.append(Problem(doc.file, doc.line_of(path), format_path(path), message))

    names = [m.name for m in manifest.models]
    for j, p in enumerate(manifest.pipelines):
        if p.model not in names:
            add(("pipelines", j, "model"), f"unknown model {p.model!r} (defined: {', '.join(names)})")
        for path, stage in _stages(("pipelines", j), p.then):
            if stage.model not in names:
                add((*path, "model"), f"unknown model {stage.model!r} (defined: {', '.join(names)})")

    usable: Dict[FieldPath, str] = {}
    for ref in manifest_references(manifest):
        message = _check_path(ref, base_dir, allowed_dirs)
        if message is not None:
            add(ref.path, message)
        elif ref.kind == "file":
            usable[ref.path] = ref.file

    for i, m in enumerate(manifest.models):
        for key, expected in m.sha256.items():
            file = usable.get(("models", i, key))
            if file is None:
                continue  # already reported as missing or outside the allowed directories
            try:
                actual = sha256_file(file)
            except OSError as e:
                add(("models", i, key), f"cannot read {file}: {e.strerror or e}")
                continue
            if actual != expected:
                add(("models", i, "sha256", key),
                    f"sha256 mismatch for {file}: the manifest expects {expected}, the file has {actual}; "
                    "the file changed or the manifest is out of date")
    return problems


def _stages(parent: FieldPath, stages: Sequence[CascadeSpec]) -> Iterator[Tuple[FieldPath, CascadeSpec]]:
    for k, stage in enumerate(stages):
        path: FieldPath = (*parent, "then", k)
        yield path, stage
        yield from _stages(path, stage.then)


def _check_path(ref: Reference, base_dir: Path, allowed_dirs: Optional[Sequence[Path]]) -> Optional[str]:
    path = ref.file
    if "\x00" in path:
        return "path contains a NUL character"
    try:
        device = ref.kind == "source" and is_device(path)
        if allowed_dirs is not None and not device and not inside(path, allowed_dirs):
            allowed = ", ".join(str(d) for d in allowed_dirs) or "none"
            real = os.path.realpath(glob_root(path))
            target = path if real == glob_root(path) else f"{path} (resolves to {real})"
            return (f"path escapes the allowed model directories: {target} (allowed: {allowed}); "
                    "keep the files inside them or add the directory to fleet.allowed_model_dirs")
        return _existence(ref, path, device, base_dir)
    except (OSError, ValueError) as e:
        return f"cannot check {path}: {getattr(e, 'strerror', None) or e}"


def _existence(ref: Reference, path: str, device: bool, base_dir: Path) -> Optional[str]:
    hint = f"check the path, relative paths resolve against {base_dir}"
    if ref.kind == "file":
        if os.path.isfile(path):
            return None
        if os.path.exists(path):
            return f"not a regular file: {path}; give the path of a file"
        return f"file not found: {path} — {hint}"
    if is_pattern(path):
        if ref.kind == "source" or next(glob.iglob(path), None) is not None:
            return None  # a source glob may be filled later; image sets must match now
        return f"no files match {path} — {hint}"
    if device or os.path.exists(path):
        return None  # a camera may be plugged in after validation
    return f"not found: {path} — {hint}"
