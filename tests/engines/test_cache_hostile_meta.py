"""meta.json damage that used to hang or crash every command (issue 10, defect 10): a FIFO, a link to
/dev/zero, 100k nested arrays, ``created: NaN``, a recorded field changed on disk. Each is detected as
``meta-invalid`` within seconds, the entry is quarantined and rebuilt, and listing the cache still works."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, List

import pytest

from agent.engines.cache import META, CacheEntry, EngineCache
from tests.engines.test_cache import FIELDS, Builder, build


def fifo(entry: CacheEntry) -> None:
    (entry.path / META).unlink()
    os.mkfifo(entry.path / META)


def zero_link(entry: CacheEntry) -> None:
    (entry.path / META).unlink()
    os.symlink("/dev/zero", entry.path / META)


def nested(entry: CacheEntry) -> None:
    (entry.path / META).write_text("[" * 100_000 + "]" * 100_000)


def edit(**changes: Any) -> Callable[[CacheEntry], None]:
    def apply(entry: CacheEntry) -> None:
        text = (entry.path / META).read_text()
        meta = json.loads(text)
        meta.update(changes)
        (entry.path / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return apply


def huge(entry: CacheEntry) -> None:
    with open(entry.path / META, "ab") as f:
        f.write(b" " * (2 << 20))


DAMAGES = {
    "fifo": fifo,
    "link-to-dev-zero": zero_link,
    "100k-nested-arrays": nested,
    "created-nan": lambda e: (e.path / META).write_text((e.path / META).read_text().replace(
        f'"created": {e.created}', '"created": NaN')),
    "opt-shape-changed": edit(fields=dict(FIELDS, inputs={"x": {"opt": [8, 3, 224, 224]}})),
    "precision-changed": edit(precision="int8"),
    "over-1-MiB": huge,
}


@pytest.fixture
def cache(tmp_path: Path) -> EngineCache:
    return EngineCache(tmp_path / "cache")


def within(seconds: float, action: Callable[[], Any]) -> Any:
    out: List[Any] = []
    thread = threading.Thread(target=lambda: out.append(action()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (hung)"
    return out[0]


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_hostile_meta_is_refused_quarantined_and_rebuilt(cache: EngineCache, damage: str) -> None:
    entry = build(cache)
    DAMAGES[damage](entry)
    assert within(10, cache.entries) == []  # what `cache list` shows: nothing broken, no exception
    problems = within(10, cache.verify)
    assert [p.kind for p in problems if p.severity == "error"] == ["meta-invalid"], problems
    assert within(10, lambda: cache.lookup(entry.key)) is None
    problem = cache.problem(entry.key)
    assert problem is not None and problem.kind == "meta-invalid"
    assert not os.path.lexists(entry.path)  # quarantined
    builder = Builder()
    rebuilt, hit = cache.build(entry.key, FIELDS, "det", "paddle", builder)
    assert not hit and len(builder.calls) == 1 and cache.lookup(rebuilt.key) is not None


def test_an_untouched_entry_still_verifies_after_being_used(cache: EngineCache, tmp_path: Path) -> None:
    entry = build(cache)
    for _ in range(3):
        assert cache.lookup(entry.key) is not None  # each lookup rewrites last_used and the digest
    assert [p for p in cache.verify() if p.severity == "error"] == []
