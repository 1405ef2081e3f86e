"""The fleet controller's files under ``<state_dir>/fleet/``: staged manifests and handled envelopes.

``manifest-v<version>.yaml`` is a received manifest, written only once it validated; the
runtime and ``ManifestStore`` read it from there. ``handled.json`` remembers, per desired
topic, the last envelope that ended ``rejected`` or ``rolled_back``, so the same retained
message redelivered on every reconnect or restart is not tried (and reported) again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from agent.errors import FleetError
from agent.fsutil import atomic_write, make_dirs
from agent.logs import event

log = logging.getLogger(__name__)



class StagedManifests:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path_for(self, version: int) -> Path:
        return self.dir / f"manifest-v{version}.yaml"

    def write(self, version: int, data: bytes) -> Path:
        path = self.path_for(version)
        try:
            make_dirs(self.dir)
            atomic_write(path, data)
        except OSError as exc:
            raise FleetError(f"cannot write {path}: {exc.strerror or exc}; check that state_dir is writable "
                             "and has free space") from None
        return path

    def prune(self, keep: Iterable[Path]) -> None:
        """Remove staged manifests other than ``keep`` (those still running or restorable)."""
        kept = {os.path.abspath(p) for p in keep}
        for path in self.dir.glob("manifest-v*.yaml"):
            if os.path.abspath(path) not in kept:
                try:
                    path.unlink()
                except OSError as exc:
                    event(log, logging.WARNING, "fleet.prune_failed", path=str(path), error=str(exc))


def payload_digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def load_json_entries(path: Path, unreadable_hint: str) -> Dict[str, Dict[str, Any]]:
    """A ``{key: {...}}`` state file; empty when missing, and (logged) when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        event(log, logging.WARNING, "fleet.state_unreadable", path=str(path), error=str(exc), hint=unreadable_hint)
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def save_json_entries(path: Path, entries: Dict[str, Dict[str, Any]], cost: str) -> None:
    """Write the state file atomically; a failure is logged with what it ``cost``s, never raised."""
    try:
        make_dirs(path.parent)
        atomic_write(path, json.dumps(entries, indent=1, sort_keys=True).encode("utf-8"))
    except OSError as exc:
        event(log, logging.WARNING, "fleet.state_not_saved", path=str(path), error=str(exc), cost=cost)


class HandledLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries = load_json_entries(path, "starting empty: known-bad retained updates are tried once more")

    def seen(self, topic: str, digest: str) -> bool:
        entry = self._entries.get(topic)
        return entry is not None and entry.get("digest") == digest

    def remember(self, topic: str, digest: str, version: Optional[int], status: str, reason: str) -> None:
        self._entries[topic] = {"digest": digest, "version": version, "status": status, "reason": reason}
        # The update itself was already handled either way.
        save_json_entries(self.path, self._entries, "a repeated attempt after a restart")
