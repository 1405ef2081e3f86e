"""What a fault scenario returns: its figures, the expectations it missed, and notes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class ScenarioResult:
    name: str
    figures: Dict[str, Any] = field(default_factory=dict)  # insertion order is the order printed
    problems: List[str] = field(default_factory=list)  # expectations that failed; empty means passed
    notes: List[str] = field(default_factory=list)
    skipped: Optional[str] = None  # why the scenario could not run here
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.skipped is None and not self.problems

    def expect(self, ok: bool, problem: str) -> bool:
        """Record ``problem`` unless ``ok``; returns ``ok``."""
        if not ok:
            self.problems.append(problem)
        return ok

    @property
    def verdict(self) -> str:
        return "skipped" if self.skipped is not None else "passed" if not self.problems else "FAILED"


def format_table(results: List[ScenarioResult]) -> str:
    """One block per scenario: verdict and time, then ``figure = value`` lines, problems and notes."""
    lines: List[str] = []
    for r in results:
        lines.append(f"{r.name:<28} {r.verdict:<8} {r.seconds:6.1f}s")
        if r.skipped is not None:
            lines.append(f"    skipped: {r.skipped}")
        width = max((len(k) for k in r.figures), default=0)
        for key, value in r.figures.items():
            lines.append(f"    {key:<{width}} = {_value(value)}")
        lines += [f"    PROBLEM: {p}" for p in r.problems]
        lines += [f"    note: {n}" for n in r.notes]
    return "\n".join(lines)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list) and len(value) > 12:
        return f"{value[:12]} ... ({len(value)} items)"
    return str(value)
