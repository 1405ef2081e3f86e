"""The ``manifest/reported`` document: where one desired-manifest attempt is, and what runs now."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

RECEIVED = "received"
REJECTED = "rejected"
VALIDATING = "validating"
BUILDING = "building"
APPLIED = "applied"
ROLLED_BACK = "rolled_back"
STATUSES: Tuple[str, ...] = (RECEIVED, REJECTED, VALIDATING, BUILDING, APPLIED, ROLLED_BACK)
FINAL: Tuple[str, ...] = (REJECTED, APPLIED, ROLLED_BACK)

# A rejection can list one problem per manifest line; the retained report stays small.
MAX_REASON_CHARS = 4000


@dataclass
class Attempt:
    """One envelope on its way through the states; ``steps`` stamps when each state was entered."""

    topic: str
    received_at: float
    version: Optional[int] = None
    sha256: Optional[str] = None
    key_id: Optional[str] = None
    target: Optional[str] = None
    steps: Dict[str, float] = field(default_factory=dict)
    download: Optional[Dict[str, Any]] = None  # artifact download progress, once one started

    def enter(self, status: str, reason: str, ts: float, applied: Optional[Tuple[int, str]]) -> Dict[str, Any]:
        """Stamp ``status`` as entered at ``ts``; the reported document for it. ``applied``: (version, sha256)
        of the manifest running after this step, when known."""
        if status not in STATUSES:
            raise ValueError(f"unknown reported status {status!r} (known: {', '.join(STATUSES)})")
        self.steps.setdefault(status, ts)  # download progress re-reports validating: keep when it began
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS] + " ...(truncated)"
        doc = {
            "version": self.version,
            "sha256": self.sha256,
            "status": status,
            "reason": reason,
            "ts": ts,
            "received_at": self.received_at,
            "steps": dict(self.steps),
            "topic": self.topic,
            "key_id": self.key_id,
            "target": self.target,
            "applied": None if applied is None else {"version": applied[0], "sha256": applied[1]},
        }
        if self.download is not None:
            doc["download"] = self.download
        return doc
