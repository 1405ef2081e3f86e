from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import SourceError
from agent.sources.uri import mask_uri, parse_uri, validate_pipeline


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "frames").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    return tmp_path


@pytest.mark.parametrize(
    ("uri", "kind", "location"),
    [
        ("clip.mp4", "video", "{base}/clip.mp4"),
        ("sub/clip.MKV", "video", "{base}/sub/clip.MKV"),
        ("/data/a.webm", "video", "/data/a.webm"),
        ("img.png", "image", "{base}/img.png"),
        ("file:///data/img.jpg", "image", "/data/img.jpg"),
        ("file://rel/clip.avi", "video", "{base}/rel/clip.avi"),
        ("file:///data/my%20clip.mov", "video", "/data/my clip.mov"),
        ("frames", "directory", "{base}/frames"),
        ("frames/*.jpg", "glob", "{base}/frames/*.jpg"),
        ("/data/**/*.png", "glob", "/data/**/*.png"),
        ("csi://0", "csi", "0"),
        ("csi://1", "csi", "1"),
        ("v4l2:///dev/video0", "v4l2", "/dev/video0"),
        ("/dev/video2", "v4l2", "/dev/video2"),
        ("rtsp://cam.local:554/live", "rtsp", "rtsp://cam.local:554/live"),
        ("rtsps://cam.local/live", "rtsp", "rtsps://cam.local/live"),
        ("http://cam.local/video.mjpg", "http", "http://cam.local/video.mjpg"),
        ("https://cdn.example/live/index.m3u8", "http", "https://cdn.example/live/index.m3u8"),
        ("videotestsrc ! videoconvert ! appsink", "gstreamer", "videotestsrc ! videoconvert ! appsink"),
    ],
)
def test_kinds(base: Path, uri: str, kind: str, location: str) -> None:
    spec = parse_uri(uri, base)
    assert spec.kind == kind
    assert spec.location == location.format(base=base)
    assert spec.live == (kind in ("csi", "v4l2", "rtsp", "http", "gstreamer"))


def test_csi_sensor_id(base: Path) -> None:
    assert parse_uri("csi://1", base).sensor_id == 1


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "source is empty"),
        ("   ", "source is empty"),
        ("csi://front", "expected csi://<sensor-id>"),
        ("v4l2://video0", "v4l2:///dev/videoN"),
        ("rtsp:///live", "has no host"),
        ("ftp://host/clip.mp4", "unsupported scheme 'ftp://'"),
        ("file://", "file:// needs a path"),
        ("missing.xyz", "does not exist"),
        ("notes.txt", "cannot tell what 'notes.txt' is from its extension"),
        ("videotestsrc ! videoconvert", "must end in appsink"),
        ("videotestsrc ! ! appsink", "empty element"),
    ],
)
def test_errors_say_what_to_do(base: Path, uri: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_uri(uri, base)


def test_pipeline_error_is_masked(base: Path) -> None:
    with pytest.raises(SourceError) as info:
        parse_uri('rtspsrc location="rtsp://admin:hunter22@cam/live" ! decodebin', base)
    assert "hunter22" not in str(info.value)
    assert "admin:***@cam" in str(info.value)


def test_validate_pipeline_accepts_appsink_properties() -> None:
    text = "videotestsrc ! video/x-raw,format=BGR ! appsink name=out drop=true max-buffers=1"
    assert validate_pipeline(f"  {text} ") == text


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("rtsp://admin:s3cret@10.0.0.5:554/live", "rtsp://admin:***@10.0.0.5:554/live"),
        ("rtsp://admin:p@ss@cam/live", "rtsp://admin:***@cam/live"),
        ("rtsp://admin:@cam/live", "rtsp://admin:***@cam/live"),
        ("https://ghp_token123@host/stream", "https://***@host/stream"),
        ("http://cam/video.mjpg?user=bob&password=pw1&fps=5", "http://cam/video.mjpg?user=bob&password=***&fps=5"),
        ("http://cam/live?token=abc.def", "http://cam/live?token=***"),
        ("http://cam/live?TOKEN=abc&api_key=k", "http://cam/live?TOKEN=***&api_key=***"),
        ("rtsp://cam.local:554/live", "rtsp://cam.local:554/live"),
        ("/data/clip.mp4", "/data/clip.mp4"),
        (
            'rtspsrc location="rtsp://u:pw@cam/x" user-pw=secret latency=0 ! decodebin ! appsink',
            'rtspsrc location="rtsp://u:***@cam/x" user-pw=*** latency=0 ! decodebin ! appsink',
        ),
        ("could not open rtsp://u:pw@cam/x: refused", "could not open rtsp://u:***@cam/x: refused"),
    ],
)
def test_mask_uri(raw: str, masked: str) -> None:
    assert mask_uri(raw) == masked


def test_display_is_masked(base: Path) -> None:
    spec = parse_uri("rtsp://admin:s3cret@cam:554/live?token=t0k", base)
    assert spec.location == "rtsp://admin:s3cret@cam:554/live?token=t0k"  # the real URL still reaches OpenCV
    assert spec.display == "rtsp://admin:***@cam:554/live?token=***"


_secret_chars = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                                               blacklist_characters="/?#"), min_size=1, max_size=20)


@given(user=st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), password=_secret_chars,
       scheme=st.sampled_from(["rtsp", "rtsps", "http", "https"]))
def test_password_never_survives_masking(user: str, password: str, scheme: str) -> None:
    secret = f"Q{password}Z"  # a marker that does not occur elsewhere in the URL
    masked = mask_uri(f"{scheme}://{user}:{secret}@cam.local:8554/live/main")
    assert secret not in masked
    assert masked == f"{scheme}://{user}:***@cam.local:8554/live/main"
