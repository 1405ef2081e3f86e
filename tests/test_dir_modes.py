"""The state, cache and spool directories the agent creates get 0o750 explicitly, not what the umask
leaves (0777 under umask 000); directories that already exist keep their mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from agent.engines.cache import EngineCache
from agent.fleet.disk import StagedManifests
from agent.fsutil import DIR_MODE, make_dirs
from agent.mqtt.spool import Spool


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_make_dirs_sets_the_mode_on_each_directory_it_creates_and_leaves_existing_ones(
        tmp_path: Path, umask_000: None) -> None:
    (tmp_path / "existing").mkdir(mode=0o755)
    make_dirs(tmp_path / "existing" / "a" / "b")
    assert mode(tmp_path / "existing") == 0o755
    assert mode(tmp_path / "existing" / "a") == mode(tmp_path / "existing" / "a" / "b") == DIR_MODE == 0o750
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        make_dirs(tmp_path / "file")


def _plan(workdir: Path) -> Dict[str, Any]:
    (workdir / "engine.plan").write_bytes(b"PLAN")
    return {}


def test_the_engine_cache_the_fleet_staging_and_the_spool_create_0750_under_umask_000(
        tmp_path: Path, umask_000: None) -> None:
    cache = EngineCache(tmp_path / "var" / "cache")
    entry, _ = cache.build("det-fp16-gpu-cpu-avx2-0123456789abcdef", {"precision": "fp16"}, "det", "paddle", _plan)
    StagedManifests(tmp_path / "state" / "fleet" / "manifests").write(3, b"version: 3\n")
    Spool(tmp_path / "spool" / "results.db", max_bytes=1 << 20, max_messages=100).close()
    created = [tmp_path / "var", cache.root, entry.path, *(cache.root / d for d in (".tmp", ".trash", ".locks")),
               tmp_path / "state", tmp_path / "state" / "fleet", tmp_path / "state" / "fleet" / "manifests",
               tmp_path / "spool"]
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in created} == {
        str(p.relative_to(tmp_path)): oct(0o750) for p in created}
