"""The one sha256 helper for files and file sets: manifest ``sha256:`` checks, fleet artifacts and
staging, the engine cache and its fingerprint all hash through here."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, List, Optional, Union


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """sha256 hex of a file's bytes, read in ``chunk``-sized pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_files(paths: Iterable[Path], base: Optional[Path] = None) -> str:
    """One sha256 over a set of files (e.g. calibration images): names relative to ``base``
    (default: their common directory) and contents, independent of the order given."""
    files = [Path(p) for p in paths]
    if not files:
        return hashlib.sha256(b"").hexdigest()
    if base is None:
        base = Path(os.path.commonpath([str(p.parent) for p in files]))
    lines: List[str] = sorted(f"{Path(os.path.relpath(p, base)).as_posix()}\x00{sha256_file(p)}\n" for p in files)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
