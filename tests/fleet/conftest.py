"""Fixtures shared by the fleet tests."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.artifact_server import ArtifactServer


@pytest.fixture
def artifact_server(tmp_path: Path) -> Iterator[ArtifactServer]:
    """A real HTTP artifact server process serving ``tmp_path/www``."""
    srv = ArtifactServer(tmp_path / "www", tmp_path / "srv").start()
    try:
        yield srv
    finally:
        srv.stop()
