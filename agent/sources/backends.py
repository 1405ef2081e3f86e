"""What this machine's OpenCV can capture with: GStreamer, FFmpeg, V4L2, and whether it is a Jetson."""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2

from agent.platform import is_jetson

GSTREAMER_MISSING = (
    "OpenCV was built without GStreamer; on Jetson use JetPack's python3-opencv "
    "(install.sh creates the venv with --system-site-packages)"
)


@dataclass(frozen=True)
class Platform:
    gstreamer: bool
    ffmpeg: bool
    v4l2: bool
    jetson: bool

    @classmethod
    def detect(cls) -> Platform:
        info = cv2.getBuildInformation()
        return cls(
            gstreamer=_has_backend(cv2.CAP_GSTREAMER, "GStreamer", info),
            ffmpeg=_has_backend(cv2.CAP_FFMPEG, "FFMPEG", info),
            v4l2=_has_backend(cv2.CAP_V4L2, "v4l/v4l2", info),
            jetson=is_jetson(),
        )


def _has_backend(api: int, label: str, build_info: str) -> bool:
    # The registry also knows backends loaded as plugins; the build summary is the
    # fallback for OpenCV builds older than the registry (before 4.1).
    registry = getattr(cv2, "videoio_registry", None)
    if registry is not None and hasattr(registry, "hasBackend"):
        return bool(registry.hasBackend(api))
    return re.search(rf"^\s*{re.escape(label)}:\s*YES", build_info, re.MULTILINE) is not None
