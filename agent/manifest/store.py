"""The last good manifest and its predecessor, persisted in ``state_dir``.

A restart comes back on the manifest that was last applied successfully (a fleet update
survives reboots), and fleet replay protection compares against its version.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from agent.fsutil import atomic_write, make_dirs
from agent.manifest.load import LoadedManifest


@dataclass(frozen=True)
class StoredManifest:
    version: int
    sha256: str
    path: Path  # the manifest file as written in state_dir
    base_dir: Path  # where its relative paths resolve
    applied_at: float
    origin: str  # "file" (config.yaml's manifest, SIGHUP) or "fleet" (an MQTT update)


class ManifestStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "manifests"

    def record_running(self, loaded: LoadedManifest, origin: str = "file") -> StoredManifest:
        """Persist ``loaded`` as current; the previous current becomes ``previous``."""
        make_dirs(self.dir)
        current = self.current()
        if current is not None and current.sha256 == loaded.sha256:
            return current
        body = self.dir / f"manifest-{loaded.sha256[:16]}.yaml"
        atomic_write(body, loaded.text.encode())
        record = {"version": loaded.manifest.version, "sha256": loaded.sha256, "path": str(body),
                  "base_dir": str(loaded.base_dir), "applied_at": time.time(), "origin": origin}
        if current is not None:
            atomic_write(self.dir / "previous.json", (self.dir / "current.json").read_bytes())
        atomic_write(self.dir / "current.json", json.dumps(record, indent=1).encode())
        self._drop_unreferenced()
        return _stored(record)

    def current(self) -> Optional[StoredManifest]:
        return self._read("current.json")

    def previous(self) -> Optional[StoredManifest]:
        return self._read("previous.json")

    def applied_version(self) -> int:
        current = self.current()
        return current.version if current is not None else -1

    def _read(self, name: str) -> Optional[StoredManifest]:
        try:
            record = json.loads((self.dir / name).read_text())
            stored = _stored(record)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return stored if stored.path.is_file() else None

    def _drop_unreferenced(self) -> None:
        keep = {s.path.name for s in (self.current(), self.previous()) if s is not None}
        for path in self.dir.glob("manifest-*.yaml"):
            if path.name not in keep:
                path.unlink()


def _stored(record: Dict[str, Any]) -> StoredManifest:
    return StoredManifest(int(record["version"]), str(record["sha256"]), Path(record["path"]),
                          Path(record["base_dir"]), float(record["applied_at"]), str(record.get("origin", "file")))

