"""An image over the pixel limit is skipped by its header, never decoded, and later images in the same
directory are still delivered (issue 10, defect 4)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from agent.manifest.models import SourceOptions
from agent.sources import open_source


def huge_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (its data is a few bytes, as in a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def test_an_image_over_max_pixels_is_skipped_and_the_next_ones_are_delivered(tmp_path: Path) -> None:
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 100, np.uint8))
    huge_png(tmp_path / "b.png", 20000, 20000)
    source = open_source(str(tmp_path), SourceOptions(), tmp_path)
    frames = list(source.frames())
    assert len(frames) == 2
    assert source.stats()["unreadable"] == 1 and source.stats()["state"] == "finished"


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.full((10, 10, 3), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.full((4, 4, 3), 100, np.uint8))
    source = open_source(str(tmp_path), SourceOptions(max_pixels=50), tmp_path)
    assert len(list(source.frames())) == 1 and source.stats()["unreadable"] == 1
