"""Damaged cache entries (meta.json and the backend's file) under the real agent: detected and rebuilt."""

from __future__ import annotations

from agent.faults.cache_faults import DAMAGES, damaged_cache
from tests.faults.checks import passed


def test_every_damage_is_detected_and_rebuilt(fault_env):
    result = passed(damaged_cache(fault_env))
    for damage, (_, kind) in DAMAGES.items():
        assert result.figures[damage] == f"{kind} -> rebuilt"
    assert result.figures["results lost"] == 0
