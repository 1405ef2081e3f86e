"""End to end: the real agent process (`python -m agent run`) under a NOTIFY_SOCKET this test owns.

A real Paddle model (exported with paddle.jit.save), a real video written with OpenCV and a
real Mosquitto; the test plays systemd's part of the sd_notify protocol.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest

from tests.support.broker import Broker

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0  # a cold start imports Paddle and builds the predictor on 2 shared cores
WATCHDOG_USEC = 1_000_000

Datagram = Tuple[bytes, int]  # (payload, sender pid)


class NotifySocket:
    """systemd's end: a bound datagram socket that records who sent what."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.seen: List[Datagram] = []

    def wait_for(self, match: Callable[[bytes], bool], timeout: float, proc: subprocess.Popen) -> Datagram:
        deadline = time.monotonic() + timeout
        creds = struct.calcsize("3i")
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited with {proc.returncode} while waiting; seen: {self.payloads()}")
            self.sock.settimeout(min(0.5, max(0.01, deadline - time.monotonic())))
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds))
            except socket.timeout:
                continue
            pid = next((struct.unpack("3i", p[:creds])[0] for lvl, kind, p in ancillary
                        if lvl == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), -1)
            item = (data, pid)
            self.seen.append(item)
            if match(data):
                return item
        raise AssertionError(f"no matching datagram within {timeout}s; seen: {self.payloads()}")

    def payloads(self) -> List[bytes]:
        return [d for d, _ in self.seen]

    def close(self) -> None:
        self.sock.close()


def write_video(path: Path) -> None:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(10):
        writer.write(np.full((48, 64, 3), i * 20, dtype=np.uint8))
    writer.release()


@pytest.fixture
def agent_files(tmp_path: Path, mqtt_broker: Broker) -> Path:
    from tests.support.models import export_pir

    model = export_pir("classifier", tmp_path / "model")
    write_video(tmp_path / "clip.avi")
    (tmp_path / "manifest.yaml").write_text(f"""version: 1
models:
  - name: cls
    model: {model.model}
    params: {model.params}
    target: cpu
    inputs: [{{name: x, shape: [1, 3, 32, 32]}}]
    preprocess: {{resize: [32, 32]}}
    postprocess: {{type: classification, top_k: 1}}
pipelines:
  - name: clip
    source: clip.avi
    model: cls
    options: {{loop: true, fps: 5}}
""")
    config = tmp_path / "config.yaml"
    config.write_text(f"""device_id: notify-e2e
manifest: manifest.yaml
cache_dir: cache
state_dir: state
health_interval: 1
mqtt: {{host: 127.0.0.1, port: {mqtt_broker.port}}}
fleet: {{grace_period_s: 0.5}}
""")
    return config


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    path = tmp_path / "n.sock"
    assert len(str(path)) < 104, "tmp_path too long for an AF_UNIX address; use a shorter --basetemp"
    sock = NotifySocket(path)
    yield sock
    sock.close()


@pytest.mark.slow
def test_agent_speaks_sd_notify_through_start_reload_and_stop(agent_files: Path, notify_socket: NotifySocket,
                                                               tmp_path: Path) -> None:
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_socket.path), WATCHDOG_USEC=str(WATCHDOG_USEC),
               PYTHONPATH=str(REPO))
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(agent_files)],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready, _ = notify_socket.wait_for(lambda d: d.startswith(b"READY=1"), START_TIMEOUT_S, proc)
        assert ready == b"READY=1\nSTATUS=running"
        starting = notify_socket.payloads()
        assert b"STATUS=building engines" in starting
        # Each build progress step moves systemd's start timeout (TimeoutStartSec=) further out.
        assert any(p.startswith(b"EXTEND_TIMEOUT_USEC=") for p in starting)

        # The running main loop keeps pinging (its pacing is tested in test_notify.py).
        for _ in range(2):
            notify_socket.wait_for(lambda d: d == b"WATCHDOG=1", 5, proc)

        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.send_signal(signal.SIGHUP)
        reloading, _ = notify_socket.wait_for(lambda d: d.startswith(b"RELOADING=1"), 10, proc)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        key, value = reloading.split(b"\n")[1].split(b"=")
        assert key == b"MONOTONIC_USEC" and before <= int(value) <= after
        reloaded, _ = notify_socket.wait_for(lambda d: d.startswith(b"READY=1"), 60, proc)
        assert reloaded == b"READY=1\nSTATUS=running (applied)"

        # A broken manifest on disk: the reload is rejected and the running pipelines stay.
        (agent_files.parent / "manifest.yaml").write_text("version: 2\nmodels: []\n")
        proc.send_signal(signal.SIGHUP)
        notify_socket.wait_for(lambda d: d.startswith(b"RELOADING=1"), 10, proc)
        rejected, _ = notify_socket.wait_for(lambda d: d.startswith(b"READY=1"), 10, proc)
        assert rejected == b"READY=1\nSTATUS=running (reload rejected: invalid manifest)"
        notify_socket.wait_for(lambda d: d == b"WATCHDOG=1", 5, proc)

        proc.send_signal(signal.SIGTERM)
        notify_socket.wait_for(lambda d: d == b"STOPPING=1", 10, proc)
        assert proc.wait(timeout=30) == 0
        # NotifyAccess=main: every datagram came from the agent's own pid.
        assert {pid for _, pid in notify_socket.seen} == {proc.pid}
    except AssertionError as exc:
        log.flush()
        tail = (tmp_path / "agent.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"{exc}\n--- agent log (tail) ---\n{tail}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
