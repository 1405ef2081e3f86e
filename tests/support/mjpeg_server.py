"""A real HTTP MJPEG camera for source tests: a separate process on a loopback port.

It serves ``multipart/x-mixed-replace`` JPEG frames made with ``cv2.imencode`` at a
fixed rate, which OpenCV's FFmpeg backend reads like an IP camera's MJPEG stream.
Tests simulate real camera failures on it:

- ``kill()``: the camera process dies, connections reset, the port refuses;
- ``start()`` again on the same port: the camera comes back;
- ``freeze()``: the process stays up and keeps every socket open but sends nothing
  (SIGUSR1; ``thaw()`` with SIGUSR2 resumes) — what a hung encoder looks like.

Each frame's pixels encode its sequence number (``frame_value``) so tests can tell
frames apart after JPEG compression. Every request is printed to the log file as
``request <path> <user-agent>`` so tests can see what the client sent.

Run as ``python -m tests.support.mjpeg_server --port P [--fps F] [--width W] [--height H]``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from tests.support.broker import free_port

BOUNDARY = "edgeframe"


def frame_value(seq: int) -> int:
    """The grey level of frame ``seq``: steps of 40 survive JPEG and are easy to tell apart."""
    return (seq * 40) % 240 + 8


def _jpeg(seq: int, width: int, height: int) -> bytes:
    import cv2

    image = np.full((height, width, 3), frame_value(seq), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf)


def _serve(port: int, fps: float, width: int, height: int) -> None:
    sending = threading.Event()
    sending.set()
    signal.signal(signal.SIGUSR1, lambda *_: sending.clear())
    signal.signal(signal.SIGUSR2, lambda *_: sending.set())
    period = 1.0 / fps

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            print(f"request {self.path} {self.headers.get('User-Agent', '-')}", flush=True)
            if self.path.split("?")[0] != "/stream.mjpg":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            seq = 0
            try:
                while True:
                    sending.wait()
                    body = _jpeg(seq, width, height)
                    self.wfile.write(
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                        + body
                        + b"\r\n"
                    )
                    self.wfile.flush()
                    seq += 1
                    time.sleep(period)
            except (BrokenPipeError, ConnectionResetError):
                return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"listening {port}", flush=True)
    server.serve_forever()


@dataclass
class MjpegServer:
    """The server process, owned by one test; ``kill()``/``start()`` reuse the same port."""

    workdir: Path
    port: int = 0
    fps: float = 25.0
    width: int = 64
    height: int = 48
    proc: Optional[subprocess.Popen[bytes]] = None
    _starts: int = 0

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"mjpeg-{self.port}.log"

    def start(self) -> MjpegServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[2]
        cmd = [sys.executable, "-m", "tests.support.mjpeg_server", "--port", str(self.port), "--fps", str(self.fps),
               "--width", str(self.width), "--height", str(self.height)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=log)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 20.0) -> None:
        # The child prints its marker only after bind(), so the port is ready when it appears.
        assert self.proc is not None
        marker = f"listening {self.port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mjpeg server exited with {self.proc.returncode}; see {self.log_path}")
            if self.log_path.exists() and self.log_path.read_text().count(marker) > self._starts:
                self._starts += 1
                return
            time.sleep(0.02)
        raise RuntimeError(f"mjpeg server did not listen on port {self.port} within {timeout}s")

    def kill(self) -> None:
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR2)

    def requests(self) -> List[str]:
        if not self.log_path.exists():
            return []
        return [line for line in self.log_path.read_text().splitlines() if line.startswith("request ")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=48)
    args = parser.parse_args()
    _serve(args.port, args.fps, args.width, args.height)


if __name__ == "__main__":
    main()
