"""Live captures (CSI, V4L2, RTSP, HTTP, raw GStreamer): which OpenCV backend opens what, and how.

``plan_capture`` decides everything as data (testable without a camera); ``open_capture``
turns a plan into an opened ``cv2.VideoCapture`` or a ``SourceError`` that says what to do.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import cv2

from agent.errors import SourceError
from agent.logs import event
from agent.manifest.models import SourceOptions
from agent.sources.backends import GSTREAMER_MISSING, Platform
from agent.sources.gstreamer import JPEG_CAPS, csi_pipeline, rtsp_pipeline, v4l2_pipeline
from agent.sources.transform import FrameTransform, flip_method
from agent.sources.uri import SourceSpec

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"

# OpenCV's FFmpeg backend reads its options from this process-wide environment variable
# at open time only. Opens that set it hold this lock so two sources opening at once
# cannot see each other's options; it is module-level because the environment is.
_FFMPEG_ENV_LOCK = threading.Lock()

CSI_DEFAULT_SIZE = (1280, 720)
CSI_DEFAULT_FPS = 30

# pixel_format as users write it (V4L2 fourcc or GStreamer name) -> (V4L2 fourcc, GStreamer caps head).
PIXEL_FORMATS: Dict[str, Tuple[str, str]] = {
    "MJPG": ("MJPG", JPEG_CAPS),
    "MJPEG": ("MJPG", JPEG_CAPS),
    "JPEG": ("MJPG", JPEG_CAPS),
    "YUYV": ("YUYV", "video/x-raw,format=YUY2"),
    "YUY2": ("YUYV", "video/x-raw,format=YUY2"),
    "UYVY": ("UYVY", "video/x-raw,format=UYVY"),
    "NV12": ("NV12", "video/x-raw,format=NV12"),
    "GREY": ("GREY", "video/x-raw,format=GRAY8"),
    "GRAY8": ("GREY", "video/x-raw,format=GRAY8"),
    "BGR": ("BGR3", "video/x-raw,format=BGR"),
    "BGR3": ("BGR3", "video/x-raw,format=BGR"),
    "RGB": ("RGB3", "video/x-raw,format=RGB"),
    "RGB3": ("RGB3", "video/x-raw,format=RGB"),
}

_HINTS = {
    "ffmpeg": "check the host is reachable, the path and credentials are right (try the URL in VLC or ffprobe), "
              "and that the camera sends a codec FFmpeg decodes",
    "gstreamer": "check the pipeline with gst-launch-1.0 (replace appsink with fakesink), that every element "
                 "exists (gst-inspect-1.0 <element>) and that no other process holds the camera",
    "v4l2": "check no other process holds the camera and that it supports the requested size, fps and "
            "pixel_format (v4l2-ctl -d <device> --list-formats-ext)",
}


@dataclass(frozen=True)
class CapturePlan:
    """How to open one live source with OpenCV."""

    target: str  # URL, pipeline or device path given to cv2.VideoCapture
    api: int  # cv2.CAP_* backend
    backend: str  # "ffmpeg" | "gstreamer" | "v4l2", for messages and stats
    display: str  # masked source URI
    params: Tuple[int, ...] = ()  # open parameters (timeouts), as cv2.VideoCapture's params list
    props: Tuple[Tuple[int, float], ...] = ()  # set after opening, in order (V4L2 format, size, fps)
    ffmpeg_options: Optional[str] = None  # OPENCV_FFMPEG_CAPTURE_OPTIONS for this open only
    device: Optional[str] = None  # a device node that must exist
    resize: bool = True  # False when the device already delivers options.width x height
    orient: bool = True  # False when the device already applied flip/rotate

    def transform(self, options: SourceOptions) -> FrameTransform:
        return FrameTransform.from_options(options, resize=self.resize, orient=self.orient)


def plan_capture(spec: SourceSpec, options: SourceOptions, platform: Platform) -> CapturePlan:
    """Choose backend, pipeline and parameters for a live ``spec``; ``SourceError`` when this
    machine's OpenCV cannot read it at all."""
    if spec.kind == "csi":
        return _plan_csi(spec, options, platform)
    if spec.kind == "v4l2":
        return _plan_v4l2(spec, options, platform)
    if spec.kind == "rtsp":
        return _plan_rtsp(spec, options, platform)
    if spec.kind == "http":
        if not platform.ffmpeg:
            raise SourceError(
                f"source {spec.display!r}: http(s) streams are read with OpenCV's FFmpeg backend, which this "
                "OpenCV lacks; install an OpenCV built with FFmpeg (pip opencv-python-headless has it)"
            )
        return _ffmpeg_plan(spec, options, None)
    if spec.kind == "gstreamer":
        _require_gstreamer(spec, platform, "a GStreamer pipeline source")
        return CapturePlan(spec.location, cv2.CAP_GSTREAMER, "gstreamer", spec.display)
    raise ValueError(f"plan_capture: {spec.kind!r} is not a live source kind")


def _require_gstreamer(spec: SourceSpec, platform: Platform, what: str) -> None:
    if not platform.gstreamer:
        raise SourceError(f"source {spec.display!r}: {what} needs GStreamer. {GSTREAMER_MISSING}")


def _plan_csi(spec: SourceSpec, options: SourceOptions, platform: Platform) -> CapturePlan:
    _require_gstreamer(spec, platform, "a CSI camera (read with nvarguscamerasrc)")
    width, height = _csi_size(options.width, options.height)
    pipeline = csi_pipeline(spec.sensor_id, width, height, options.capture_fps or CSI_DEFAULT_FPS,
                            flip_method(options.flip, options.rotate))
    return CapturePlan(pipeline, cv2.CAP_GSTREAMER, "gstreamer", spec.display, resize=False, orient=False)


def _csi_size(width: Optional[int], height: Optional[int]) -> Tuple[int, int]:
    # Argus scales to any output size; one side alone keeps the default 16:9, rounded to even.
    default_w, default_h = CSI_DEFAULT_SIZE
    if width and height:
        return width, height
    if width:
        return width, max(2, round(width * default_h / default_w / 2) * 2)
    if height:
        return max(2, round(height * default_w / default_h / 2) * 2), height
    return default_w, default_h


def _plan_v4l2(spec: SourceSpec, options: SourceOptions, platform: Platform) -> CapturePlan:
    fmt = _pixel_format(spec, options.pixel_format)
    if platform.v4l2:
        props = []
        if fmt is not None:
            props.append((cv2.CAP_PROP_FOURCC, float(fourcc(fmt[0]))))
        if options.width:
            props.append((cv2.CAP_PROP_FRAME_WIDTH, float(options.width)))
        if options.height:
            props.append((cv2.CAP_PROP_FRAME_HEIGHT, float(options.height)))
        if options.capture_fps:
            props.append((cv2.CAP_PROP_FPS, float(options.capture_fps)))
        # One driver buffer: a slow consumer then gets the newest frame, not a seconds-old backlog.
        props.append((cv2.CAP_PROP_BUFFERSIZE, 1.0))
        return CapturePlan(spec.location, cv2.CAP_V4L2, "v4l2", spec.display, props=tuple(props),
                           device=spec.location)
    if platform.gstreamer:
        caps = fmt[1] if fmt is not None else "video/x-raw"
        pipeline = v4l2_pipeline(spec.location, caps, options.width, options.height, options.capture_fps)
        return CapturePlan(pipeline, cv2.CAP_GSTREAMER, "gstreamer", spec.display, device=spec.location)
    raise SourceError(f"source {spec.display!r}: this OpenCV has neither V4L2 nor GStreamer capture. "
                      f"{GSTREAMER_MISSING}")


def fourcc(code: str) -> int:
    """V4L2's little-endian four-character code (what cv2.VideoWriter.fourcc computes)."""
    return sum(ord(c) << (8 * i) for i, c in enumerate(code))


def _pixel_format(spec: SourceSpec, name: Optional[str]) -> Optional[Tuple[str, str]]:
    if name is None:
        return None
    fmt = PIXEL_FORMATS.get(name.upper())
    if fmt is None:
        raise SourceError(f"source {spec.display!r}: pixel_format {name!r} is not supported; use one of "
                          f"{', '.join(sorted(PIXEL_FORMATS))}")
    return fmt


def _plan_rtsp(spec: SourceSpec, options: SourceOptions, platform: Platform) -> CapturePlan:
    if options.decoder == "hardware":
        _require_gstreamer(spec, platform, "decoder: hardware (NVDEC through nvv4l2decoder; or set decoder: software)")
        return _gst_rtsp(spec, options, hardware=True)
    if options.decoder == "auto" and platform.gstreamer and platform.jetson:
        return _gst_rtsp(spec, options, hardware=True)
    if platform.ffmpeg:
        return _ffmpeg_plan(spec, options, f"rtsp_transport;{options.transport}")
    if platform.gstreamer:
        return _gst_rtsp(spec, options, hardware=False)
    raise SourceError(f"source {spec.display!r}: this OpenCV has neither FFmpeg nor GStreamer to read RTSP. "
                      f"{GSTREAMER_MISSING}")


def _gst_rtsp(spec: SourceSpec, options: SourceOptions, hardware: bool) -> CapturePlan:
    pipeline = rtsp_pipeline(spec.location, options.latency_ms, options.transport, hardware)
    return CapturePlan(pipeline, cv2.CAP_GSTREAMER, "gstreamer", spec.display)


def read_timeout_s(stall_timeout_s: float) -> float:
    """FFmpeg's open/read timeout: it unblocks a reader stuck on a silent stream so it can
    release the connection, and is longer than the stall timeout so the watchdog decides first."""
    return stall_timeout_s + max(0.5, stall_timeout_s / 2)


def _ffmpeg_plan(spec: SourceSpec, options: SourceOptions, ffmpeg_options: Optional[str]) -> CapturePlan:
    timeout_ms = round(read_timeout_s(options.stall_timeout_s) * 1000.0)
    params = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms)
    return CapturePlan(spec.location, cv2.CAP_FFMPEG, "ffmpeg", spec.display, params=params,
                       ffmpeg_options=ffmpeg_options)


def check_device(device: str) -> None:
    """``SourceError`` unless ``device`` is an existing character device, naming the ones present."""
    path = Path(device)
    if not path.exists():
        present = sorted(glob.glob("/dev/video*"))
        seen = f"video devices present: {', '.join(present)}" if present else "no /dev/video* devices are present"
        raise SourceError(f"camera device {device} does not exist ({seen}); check the cable or USB port and the "
                          "device number (v4l2-ctl --list-devices)")
    if not path.is_char_device():
        raise SourceError(f"{device} is not a camera device (not a character device); use v4l2:///dev/videoN")


def open_capture(plan: CapturePlan) -> Any:
    """An opened ``cv2.VideoCapture`` for ``plan``, or ``SourceError`` with what to check."""
    if plan.device is not None:
        check_device(plan.device)
    cap = _create(plan)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"could not open {plan.display} with OpenCV's {plan.backend} backend: "
                          f"{_HINTS[plan.backend]}")
    for prop, value in plan.props:
        if not cap.set(prop, value):
            event(log, logging.DEBUG, "capture.property_rejected", source=plan.display, prop=prop, value=value)
    return cap


def _create(plan: CapturePlan) -> Any:
    if plan.ffmpeg_options is None:
        return _video_capture(plan)
    with _FFMPEG_ENV_LOCK:
        previous = os.environ.get(FFMPEG_OPTIONS_ENV)
        # Options the operator set for the whole process stay; ours come last and win on clashes.
        os.environ[FFMPEG_OPTIONS_ENV] = plan.ffmpeg_options if not previous else f"{previous}|{plan.ffmpeg_options}"
        try:
            return _video_capture(plan)
        finally:
            if previous is None:
                del os.environ[FFMPEG_OPTIONS_ENV]
            else:
                os.environ[FFMPEG_OPTIONS_ENV] = previous


def _video_capture(plan: CapturePlan) -> Any:
    if not plan.params:
        return cv2.VideoCapture(plan.target, plan.api)
    try:
        return cv2.VideoCapture(plan.target, plan.api, list(plan.params))
    except (TypeError, cv2.error):
        # OpenCV before 4.5.2 (JetPack 4) has no open parameters: no open/read timeouts,
        # the stall watchdog alone then detects a silent stream.
        event(log, logging.INFO, "capture.timeouts_unsupported", source=plan.display, opencv=cv2.__version__)
        return cv2.VideoCapture(plan.target, plan.api)
