"""A real HTTP(S) artifact server for fleet download tests, run as its own process so a test can
SIGKILL it mid-transfer and start it again on the same port.

It serves files from a directory with single-range ``Range`` support, logs every request
(path, Range header, concurrent requests at that moment) as JSON lines, and has a few fault
routes: ``/loop/a`` and ``/loop/b`` redirect to each other, ``/status/<code>/...`` always
answers ``<code>``, ``/claims/<n>/...`` announces ``n`` bytes in Content-Length and sends none.
``--rate`` throttles each response (bytes per second) so a kill lands mid-transfer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.demo.broker import _wait_listening, free_port

_RANGE = re.compile(r"^bytes=(\d+)-$")
CHUNK = 16 << 10


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.active += 1
            active = srv.active
        self._counted = True
        try:
            srv.log({"path": self.path, "range": self.headers.get("Range"), "active": active,
                     "auth": self.headers.get("Authorization") is not None})
            self._answer()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self._done()

    def _done(self) -> None:
        # Called as soon as the last byte is written: the client may start its next request right then.
        if self._counted:
            self._counted = False
            with self.server.lock:
                self.server.active -= 1

    def _answer(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/loop/a", "/loop/b"):
            self._redirect("/loop/b" if path == "/loop/a" else "/loop/a")
            return
        if path.startswith("/to/"):
            self._redirect("/" + path[len("/to/"):])
            return
        match = re.match(r"^/status/(\d{3})/", path)
        if match:
            self.send_response(int(match.group(1)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        match = re.match(r"^/claims/(\d+)/", path)
        if match:
            self.send_response(200)
            self.send_header("Content-Length", match.group(1))
            self.end_headers()
            self.wfile.flush()
            time.sleep(0.5)
            return
        file = (self.server.root / path.lstrip("/")).resolve()
        if not str(file).startswith(str(self.server.root.resolve())) or not file.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = file.read_bytes()
        start = 0
        rng = _RANGE.match(self.headers.get("Range") or "")
        if rng is not None:
            start = int(rng.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        rate = self.server.rate
        for offset in range(start, len(data), CHUNK):
            self.wfile.write(data[offset:offset + CHUNK])
            self.wfile.flush()
            if rate and offset + CHUNK < len(data):
                time.sleep(CHUNK / rate)
        self._done()

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, root: Path, log_path: Path, rate: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.root = root
        self.rate = rate
        self.lock = threading.Lock()
        self.active = 0
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - open for the server's life

    def log(self, doc: Dict[str, Any]) -> None:
        with self.lock:
            self._log.write(json.dumps(doc) + "\n")
            self._log.flush()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--rate", type=int, default=0)
    p.add_argument("--cert", default=None)
    p.add_argument("--key", default=None)
    args = p.parse_args(argv)
    server = _Server(args.port, args.root, args.log, args.rate)
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()
    return 0


@dataclass
class ArtifactServer:
    """The server process: ``url(name)``, ``kill()`` (SIGKILL), ``start()`` again on the same port,
    ``requests()`` as logged so far."""

    root: Path
    workdir: Path
    rate: int = 0
    cert: Optional[Path] = None
    key: Optional[Path] = None
    port: int = field(default_factory=free_port)
    proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "requests.jsonl"

    def url(self, name: str, userinfo: str = "") -> str:
        scheme = "https" if self.cert else "http"
        at = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{at}127.0.0.1:{self.port}/{name}"

    def start(self) -> ArtifactServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "tests.support.artifact_server", "--port", str(self.port), "--root",
               str(self.root), "--log", str(self.log_path), "--rate", str(self.rate)]
        if self.cert is not None and self.key is not None:
            cmd += ["--cert", str(self.cert), "--key", str(self.key)]
        root = Path(__file__).resolve().parents[2]
        with open(self.workdir / "server.log", "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=str(root), stdout=out, stderr=out)
        _wait_listening(self.port)
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def requests(self) -> List[Dict[str, Any]]:
        try:
            lines = self.log_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]


if __name__ == "__main__":
    raise SystemExit(main())
