from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.faults.rig import FaultEnv


@pytest.fixture(scope="session")
def fault_env(tmp_path_factory: pytest.TempPathFactory) -> FaultEnv:
    """The demo model and data, generated once for every fault scenario of the session."""
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("the fault scenarios need the mosquitto binary")
    from agent.demo.assets import ensure_assets

    base = tmp_path_factory.mktemp("faults")
    return FaultEnv(base / "work", ensure_assets(base / "assets"))
