"""Capture plans and GStreamer strings (checked as strings: no Jetson, camera or GStreamer here),
device checks, and the FFmpeg options mechanism against a real HTTP camera."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import pytest

from agent.errors import SourceError
from agent.manifest.models import SourceOptions
from agent.sources.backends import Platform
from agent.sources.camera import (
    FFMPEG_OPTIONS_ENV,
    CapturePlan,
    check_device,
    fourcc,
    open_capture,
    plan_capture,
)
from agent.sources.uri import parse_uri

JETSON = Platform(gstreamer=True, ffmpeg=True, v4l2=True, jetson=True)
PC = Platform(gstreamer=False, ffmpeg=True, v4l2=True, jetson=False)
GST_ONLY = Platform(gstreamer=True, ffmpeg=False, v4l2=False, jetson=False)
NOTHING = Platform(gstreamer=False, ffmpeg=False, v4l2=False, jetson=False)
NO_GST = "OpenCV was built without GStreamer; on Jetson use JetPack's python3-opencv"


def plan(uri: str, platform: Platform, **options: object) -> CapturePlan:
    return plan_capture(parse_uri(uri, Path("/")), SourceOptions(**options), platform)


def test_csi_pipeline_defaults() -> None:
    p = plan("csi://0", JETSON)
    assert p.target == (
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1,format=NV12 ! "
        "nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1"
    )
    assert (p.api, p.backend) == (cv2.CAP_GSTREAMER, "gstreamer")
    assert not p.resize and not p.orient  # the camera and nvvidconv do both


def test_csi_pipeline_options() -> None:
    p = plan("csi://1", JETSON, width=1920, height=1080, capture_fps=60, rotate=180)
    assert "sensor-id=1 !" in p.target
    assert "width=1920,height=1080,framerate=60/1" in p.target
    assert "nvvidconv flip-method=2 !" in p.target
    assert p.transform(SourceOptions(rotate=180)).method == 0


def test_csi_one_side_keeps_16_to_9() -> None:
    assert "width=640,height=360," in plan("csi://0", JETSON, width=640).target
    assert "width=1920,height=1080," in plan("csi://0", JETSON, height=1080).target


def test_csi_without_gstreamer_says_what_to_install() -> None:
    with pytest.raises(SourceError, match=re.escape(NO_GST)) as info:
        plan("csi://0", PC)
    assert "--system-site-packages" in str(info.value)


def test_v4l2_with_opencv_backend_sets_format_size_and_fps() -> None:
    p = plan("v4l2:///dev/video0", PC, width=640, height=480, capture_fps=30, pixel_format="mjpg")
    assert (p.target, p.api, p.backend, p.device) == ("/dev/video0", cv2.CAP_V4L2, "v4l2", "/dev/video0")
    assert p.props == (
        (cv2.CAP_PROP_FOURCC, float(cv2.VideoWriter.fourcc(*"MJPG"))),
        (cv2.CAP_PROP_FRAME_WIDTH, 640.0),
        (cv2.CAP_PROP_FRAME_HEIGHT, 480.0),
        (cv2.CAP_PROP_FPS, 30.0),
        (cv2.CAP_PROP_BUFFERSIZE, 1.0),
    )
    assert p.resize and p.orient  # a UVC camera may not honour the size; flips are done in software


def test_v4l2_gstreamer_pipelines() -> None:
    mjpg = plan("/dev/video1", GST_ONLY, width=640, height=480, capture_fps=30, pixel_format="MJPG")
    assert mjpg.target == (
        "v4l2src device=/dev/video1 ! image/jpeg,width=640,height=480,framerate=30/1 ! jpegdec ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
    )
    yuyv = plan("v4l2:///dev/video0", GST_ONLY, width=1280, pixel_format="YUYV")
    assert yuyv.target == (
        "v4l2src device=/dev/video0 ! video/x-raw,format=YUY2,width=1280 ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
    )
    plain = plan("v4l2:///dev/video0", GST_ONLY)
    assert plain.target.startswith("v4l2src device=/dev/video0 ! video/x-raw ! videoconvert")


def test_v4l2_rejects_unknown_pixel_format() -> None:
    with pytest.raises(SourceError, match=r"pixel_format 'H264' is not supported; use one of .*MJPG"):
        plan("v4l2:///dev/video0", PC, pixel_format="H264")


def test_v4l2_needs_some_capture_backend() -> None:
    with pytest.raises(SourceError, match="neither V4L2 nor GStreamer"):
        plan("v4l2:///dev/video0", NOTHING)


def test_rtsp_on_jetson_decodes_in_hardware() -> None:
    p = plan("rtsp://admin:pw@cam:554/main", JETSON, latency_ms=100, transport="udp")
    assert p.target == (
        'rtspsrc location="rtsp://admin:pw@cam:554/main" latency=100 protocols=udp ! rtph264depay ! h264parse ! '
        "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1"
    )
    assert p.display == "rtsp://admin:***@cam:554/main"


def test_rtsp_elsewhere_uses_ffmpeg_with_transport_and_timeouts() -> None:
    p = plan("rtsp://cam/main", PC, stall_timeout_s=4.0, transport="tcp")
    assert (p.target, p.api, p.backend) == ("rtsp://cam/main", cv2.CAP_FFMPEG, "ffmpeg")
    assert p.ffmpeg_options == "rtsp_transport;tcp"
    # Read/open timeouts exceed the stall timeout so the watchdog decides first.
    assert p.params == (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 6000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 6000)
    assert plan("rtsp://cam/main", JETSON, decoder="software").backend == "ffmpeg"


def test_rtsp_software_with_gstreamer_only_uses_decodebin() -> None:
    p = plan('rtsp://cam/a"b', GST_ONLY, decoder="software")
    assert p.target == (
        'rtspsrc location="rtsp://cam/a\\"b" latency=200 protocols=tcp ! decodebin ! videoconvert ! '
        "video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
    )


def test_rtsp_hardware_without_gstreamer_is_an_error() -> None:
    with pytest.raises(SourceError, match="decoder: hardware.*" + re.escape(NO_GST)):
        plan("rtsp://cam/main", PC, decoder="hardware")
    with pytest.raises(SourceError, match="neither FFmpeg nor GStreamer"):
        plan("rtsp://cam/main", NOTHING)


def test_http_needs_ffmpeg() -> None:
    assert plan("http://cam/video.mjpg", PC).backend == "ffmpeg"
    assert plan("http://cam/video.mjpg", PC).ffmpeg_options is None
    with pytest.raises(SourceError, match="FFmpeg backend, which this OpenCV lacks"):
        plan("http://cam/video.mjpg", GST_ONLY)


def test_raw_gstreamer_pipeline() -> None:
    text = "videotestsrc ! videoconvert ! video/x-raw,format=BGR ! appsink"
    p = plan(text, GST_ONLY)
    assert (p.target, p.api) == (text, cv2.CAP_GSTREAMER)
    with pytest.raises(SourceError, match=re.escape(NO_GST)):
        plan(text, PC)


def test_platform_detection_matches_build_information() -> None:
    platform = Platform.detect()
    info = cv2.getBuildInformation()
    assert platform.gstreamer == bool(re.search(r"^\s*GStreamer:\s*YES", info, re.MULTILINE))
    assert platform.ffmpeg == bool(re.search(r"^\s*FFMPEG:\s*YES", info, re.MULTILINE))
    assert platform.jetson == Path("/etc/nv_tegra_release").exists()


def test_fourcc_matches_opencv() -> None:
    for code in ("MJPG", "YUYV", "GREY"):
        assert fourcc(code) == cv2.VideoWriter.fourcc(*code)


def test_missing_device_names_what_exists() -> None:
    with pytest.raises(SourceError, match=r"device /dev/video9 does not exist \((video devices present|no /dev/video)"):
        check_device("/dev/video9")


def test_device_must_be_a_character_device(tmp_path: Path) -> None:
    fake = tmp_path / "video0"
    fake.write_bytes(b"")
    with pytest.raises(SourceError, match="not a camera device"):
        check_device(str(fake))
    check_device("/dev/null")  # a character device passes the check


def test_open_failure_is_a_source_error_with_hints(mjpeg) -> None:
    server = mjpeg()
    url = f"http://127.0.0.1:{server.port}/no-such-stream"
    p = plan(url, PC, stall_timeout_s=1.0)
    with pytest.raises(SourceError, match=r"could not open .* with OpenCV's ffmpeg backend: check the host"):
        open_capture(p)


def test_ffmpeg_options_apply_to_one_open_only(mjpeg, monkeypatch: pytest.MonkeyPatch) -> None:
    server = mjpeg()
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, "reconnect;0")
    base = plan(server.url, PC, stall_timeout_s=2.0)
    tagged = CapturePlan(base.target, base.api, base.backend, base.display, base.params,
                         ffmpeg_options="user_agent;edge-agent-test")
    cap = open_capture(tagged)
    try:
        assert cap.read()[0]
    finally:
        cap.release()
    assert os.environ[FFMPEG_OPTIONS_ENV] == "reconnect;0"  # the operator's setting is back
    cap = open_capture(base)
    cap.release()
    agents = [line.split()[-1] for line in server.requests()]
    assert agents[0] == "edge-agent-test"
    assert agents[1] != "edge-agent-test"
