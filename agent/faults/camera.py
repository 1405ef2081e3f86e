"""An HTTP camera on a loopback port, in the harness process: a steady, paced result load, and a hung one.

- ``/stream.mjpg``: the demo video's frames as MJPEG at ``fps`` (a live source: the agent's
  load is set by the camera, not by how fast the CPU decodes a file);
- ``/hang.mjpg``: accepts the connection, reads the request and never answers, like a camera
  whose encoder hung; ``freeze()`` makes ``/stream.mjpg`` stop sending the same way.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, List

BOUNDARY = "faultframe"


def jpeg_frames(video: Path, limit: int = 60) -> List[bytes]:
    import cv2

    capture = cv2.VideoCapture(str(video))
    frames: List[bytes] = []
    try:
        while len(frames) < limit:
            ok, image = capture.read()
            if not ok:
                break
            encoded, buf = cv2.imencode(".jpg", image)
            if encoded:
                frames.append(bytes(buf))
    finally:
        capture.release()
    if not frames:
        raise RuntimeError(f"no frame could be read from {video}")
    return frames


class HttpCamera:
    def __init__(self, video: Path, fps: float = 30.0) -> None:
        self.frames = jpeg_frames(video)
        self.period = 1.0 / fps
        self.sending = threading.Event()
        self.sending.set()
        self.closing = threading.Event()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Silent: a camera serving 30 fps would flood the selftest's output."""

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/hang.mjpg":
                    camera.closing.wait()
                elif path == "/stream.mjpg":
                    camera.stream(self)
                else:
                    self.send_error(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="fault-camera", daemon=True)

    def url(self, path: str = "stream.mjpg") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def start(self) -> HttpCamera:
        self._thread.start()
        return self

    def freeze(self) -> None:
        self.sending.clear()

    def thaw(self) -> None:
        self.sending.set()

    def close(self) -> None:
        self.closing.set()
        self.sending.set()
        self.server.shutdown()
        self.server.server_close()

    def stream(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        n = 0
        try:
            while not self.closing.is_set():
                self.sending.wait()
                body = self.frames[n % len(self.frames)]
                handler.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
                                    .encode() + body + b"\r\n")
                handler.wfile.flush()
                n += 1
                self.closing.wait(self.period)
        except (BrokenPipeError, ConnectionResetError):
            return
