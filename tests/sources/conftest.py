"""Fixtures for source tests: real video files written with OpenCV, image folders, MJPEG cameras."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterator, List

import cv2
import numpy as np
import pytest

from tests.support.mjpeg_server import MjpegServer

FRAMES = 30
FPS = 30.0
SIZE = (64, 48)  # width, height


def marked_image(value: int, width: int = SIZE[0], height: int = SIZE[1]) -> np.ndarray:
    """Grey ``value`` with a white block in the top-left corner, so orientation is visible."""
    image = np.full((height, width, 3), value, dtype=np.uint8)
    image[: height // 3, : width // 3] = 255
    return image


def _write_video(path: Path, codec: str) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec), FPS, SIZE)
    assert writer.isOpened(), f"OpenCV cannot write {codec} into {path.suffix}"
    for i in range(FRAMES):
        writer.write(marked_image(20 + 3 * i))
    writer.release()
    return path


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """30 frames of 64x48 at 30 fps: mp4v in .mp4 and MJPG in .avi."""
    root = tmp_path_factory.mktemp("videos")
    return {"mp4": _write_video(root / "clip.mp4", "mp4v"), "avi": _write_video(root / "clip.avi", "MJPG")}


@pytest.fixture
def mjpeg(tmp_path: Path) -> Iterator[Callable[..., MjpegServer]]:
    """Starts MJPEG camera processes for one test; every one is killed afterwards."""
    servers: List[MjpegServer] = []

    def start(**kwargs: object) -> MjpegServer:
        server = MjpegServer(tmp_path / "mjpeg", **kwargs).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()
