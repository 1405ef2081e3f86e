from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.broker import Broker, free_port


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto that keeps sessions, queued messages and retained messages across ``stop()``/``start()``,
    so a subscriber with a persistent session misses nothing while the broker is down."""
    workdir = tmp_path / "pbroker"
    extra = (f"persistence true\npersistence_location {workdir}/\n"
             # unlimited queue for the offline subscriber (Mosquitto's default 1000 would drop a long backlog);
             # `user root` keeps a root-run broker from dropping privileges and losing access to tmp_path
             "max_queued_messages 0\nuser root\n")
    broker = Broker(workdir=workdir, port=free_port(), extra_conf=extra).start()
    try:
        yield broker
    finally:
        broker.stop()
