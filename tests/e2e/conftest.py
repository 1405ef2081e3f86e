from __future__ import annotations

from pathlib import Path

import pytest

from agent.demo.assets import DemoAssets, ensure_assets


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    """The demo's trained colour classifier (PIR format), images and video, made once per session."""
    return ensure_assets(tmp_path_factory.getbasetemp() / "demo-assets")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
