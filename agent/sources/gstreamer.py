"""GStreamer pipeline strings for OpenCV's ``CAP_GSTREAMER``, in jetson-inference's style.

Every pipeline ends in BGR caps and ``appsink drop=true max-buffers=1``: OpenCV reads BGR
frames, and a live camera must hand over its newest frame rather than a backlog.
These strings are unit-tested as strings; they have not been run on Jetson hardware here.
"""

from __future__ import annotations

from typing import Optional

APPSINK = "appsink drop=true max-buffers=1"
TO_BGR = "videoconvert ! video/x-raw,format=BGR"
JPEG_CAPS = "image/jpeg"


def csi_pipeline(sensor_id: int, width: int, height: int, fps: int, flip_method: int) -> str:
    """A MIPI CSI camera through libargus; scaling and orientation happen in ``nvvidconv`` (VIC)."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1,format=NV12 ! "
        f"nvvidconv flip-method={flip_method} ! video/x-raw,format=BGRx ! {TO_BGR} ! {APPSINK}"
    )


def v4l2_pipeline(device: str, caps: str, width: Optional[int], height: Optional[int], fps: Optional[int]) -> str:
    """A V4L2 (USB) camera. ``caps`` is ``image/jpeg`` (decoded by ``jpegdec``) or a
    ``video/x-raw[,format=...]`` head; size and rate are added when given."""
    fields = "".join(
        f",{name}={value}" for name, value in (("width", width), ("height", height)) if value is not None
    )
    if fps is not None:
        fields += f",framerate={fps}/1"
    decode = " ! jpegdec" if caps == JPEG_CAPS else ""
    return f"v4l2src device={device} ! {caps}{fields}{decode} ! {TO_BGR} ! {APPSINK}"


def rtsp_pipeline(url: str, latency_ms: int, transport: str, hardware: bool) -> str:
    """An RTSP stream. ``hardware``: H.264 depayload into ``nvv4l2decoder`` (NVDEC) and ``nvvidconv``;
    otherwise ``decodebin`` picks a software decoder for whatever codec the camera sends."""
    src = f'rtspsrc location="{_quoted(url)}" latency={latency_ms} protocols={transport}'
    if hardware:
        return (
            f"{src} ! rtph264depay ! h264parse ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! "
            f"{TO_BGR} ! {APPSINK}"
        )
    return f"{src} ! decodebin ! {TO_BGR} ! {APPSINK}"


def _quoted(value: str) -> str:
    # gst_parse_launch reads double-quoted property values with backslash escapes;
    # quoting keeps '&', ';' and spaces of URLs inside the one property.
    return value.replace("\\", "\\\\").replace('"', '\\"')
