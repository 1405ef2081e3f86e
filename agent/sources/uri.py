"""Source URIs: what kind of source a manifest's ``source:`` string names, and how to show it safely.

The accepted forms follow jetson-inference's ``videoSource``: ``file://`` or plain paths
(image, glob, directory, video), ``csi://N``, ``v4l2:///dev/videoN``, ``rtsp://``,
``http(s)://`` and a raw GStreamer pipeline ending in ``appsink``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from agent.errors import SourceError

SourceKind = Literal["image", "glob", "directory", "video", "csi", "v4l2", "rtsp", "http", "gstreamer"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
    ".h264", ".264", ".h265", ".265", ".hevc", ".mjpeg", ".mjpg", ".y4m",
})
LIVE_KINDS = frozenset({"csi", "v4l2", "rtsp", "http", "gstreamer"})

FORMS_HINT = (
    "use an image/video file, a directory, a glob like /data/*.jpg, csi://0, v4l2:///dev/video0, "
    "rtsp://host:554/path, http(s)://host/stream, or a GStreamer pipeline ending in '! appsink'"
)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_GLOB_MAGIC = re.compile(r"[*?\[]")
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#]*)@")
_SECRET_PARAM = re.compile(
    r"(?i)(?P<key>[?&;](?:password|passwd|pwd|pass|token|access_token|auth|key|apikey|api_key|secret|sig|signature)=)"
    r"[^&#\s\"']*"
)
_GST_SECRET = re.compile(r"(?i)(?P<key>\b(?:user-pw|proxy-pw)=)(?:\"[^\"]*\"|'[^']*'|[^\s!]+)")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source. ``location`` is an absolute path, a glob, a URL, a device or a pipeline."""

    kind: SourceKind
    location: str
    display: str  # masked: safe to log and publish

    @property
    def live(self) -> bool:
        return self.kind in LIVE_KINDS

    @property
    def sensor_id(self) -> int:
        """The CSI sensor number of ``csi://N``."""
        return int(self.location)


def mask_uri(text: str) -> str:
    """``text`` with credentials replaced by ``***``: URL passwords (``rtsp://user:***@host``;
    a user without a password may itself be a token, so it becomes ``***@``), secret query
    parameters (``?password=***``, ``token=``, ``key=``, ...) and GStreamer ``user-pw=``.
    Works on whole pipeline strings and error messages as well as on single URLs."""

    def userinfo(m: re.Match[str]) -> str:
        user, sep, _ = m.group("userinfo").partition(":")
        return f"{m.group('scheme')}{user}:***@" if sep else f"{m.group('scheme')}***@"

    masked = _USERINFO.sub(userinfo, text)
    masked = _SECRET_PARAM.sub(lambda m: m.group("key") + "***", masked)
    return _GST_SECRET.sub(lambda m: m.group("key") + "***", masked)


def parse_uri(uri: str, base_dir: Path) -> SourceSpec:
    """Classify ``uri``; relative paths are resolved against ``base_dir`` (the manifest's folder).

    Only the syntax and the kind are checked here; whether files, devices and streams exist
    is checked when the source opens.
    """
    text = uri.strip()
    display = mask_uri(text)
    if not text:
        raise SourceError(f"source is empty: {FORMS_HINT}")
    if " ! " in text:
        return SourceSpec("gstreamer", validate_pipeline(text), display)
    scheme_match = _SCHEME.match(text)
    if scheme_match is None:
        if text.startswith("/dev/video"):
            return SourceSpec("v4l2", text, display)
        return _classify_path(text, base_dir, display)
    scheme = scheme_match.group(1).lower()
    rest = text[scheme_match.end():]
    if scheme == "file":
        if not rest:
            raise SourceError(f"source {display!r}: file:// needs a path, e.g. file:///data/video.mp4")
        return _classify_path(unquote(rest), base_dir, display)
    if scheme == "csi":
        if not (rest.isascii() and rest.isdigit()):  # '¹' is a digit to str.isdigit, not to int()
            raise SourceError(f"source {display!r}: expected csi://<sensor-id>, e.g. csi://0")
        return SourceSpec("csi", str(int(rest)), display)
    if scheme == "v4l2":
        if not rest.startswith("/dev/"):
            raise SourceError(f"source {display!r}: expected v4l2:///dev/videoN (three slashes), e.g. v4l2:///dev/video0")
        return SourceSpec("v4l2", rest, display)
    if scheme in ("rtsp", "rtsps", "http", "https"):
        try:
            parts = urlsplit(text)
            host = parts.hostname
            parts.port  # noqa: B018 -- raises ValueError for a port outside 0-65535 or not a number
        except ValueError as exc:
            raise SourceError(f"source {display!r}: not a valid URL ({mask_uri(str(exc))})") from exc
        if not host:
            raise SourceError(f"source {display!r}: the URL has no host, e.g. {scheme}://192.168.1.10:554/stream")
        return SourceSpec("rtsp" if scheme.startswith("rtsp") else "http", text, display)
    raise SourceError(f"source {display!r}: unsupported scheme '{scheme}://'; {FORMS_HINT}")


def validate_pipeline(pipeline: str) -> str:
    """Check a raw GStreamer pipeline's shape: non-empty elements, ending in ``appsink``."""
    elements = [e.strip() for e in pipeline.split("!")]
    display = mask_uri(pipeline)
    if any(not e for e in elements):
        raise SourceError(f"GStreamer pipeline {display!r} has an empty element (two '!' in a row, or one at an end)")
    last = elements[-1].split()[0]
    if last != "appsink":
        raise SourceError(
            f"GStreamer pipeline {display!r} must end in appsink (it ends in {last!r}): OpenCV reads frames from it, "
            "e.g. '... ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1'"
        )
    return pipeline.strip()


def _classify_path(raw: str, base_dir: Path, display: str) -> SourceSpec:
    path = Path(os.path.expanduser(raw))  # unlike Path.expanduser, leaves an unknown '~user' as it is
    if not path.is_absolute():
        path = base_dir / path
    if _GLOB_MAGIC.search(raw):
        return SourceSpec("glob", str(path), display)
    if path.is_dir():
        return SourceSpec("directory", str(path), display)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return SourceSpec("video", str(path), display)
    if suffix in IMAGE_SUFFIXES:
        return SourceSpec("image", str(path), display)
    if not path.exists():
        raise SourceError(f"source {display!r}: {path} does not exist (relative paths start at {base_dir})")
    raise SourceError(
        f"source {display!r}: cannot tell what {path.name!r} is from its extension; images: "
        f"{', '.join(sorted(IMAGE_SUFFIXES))}; videos: {', '.join(sorted(VIDEO_SUFFIXES))}"
    )
