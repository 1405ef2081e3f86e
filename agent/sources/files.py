"""Finite sources from files: images (one file, a glob, a directory) and video files."""

from __future__ import annotations

import glob
import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

import cv2
import numpy as np

from agent.errors import SourceError
from agent.logs import event
from agent.manifest.models import SourceOptions
from agent.sources.base import Frame, Source
from agent.sources.rate import FpsGate
from agent.sources.transform import FrameTransform
from agent.sources.uri import IMAGE_SUFFIXES, SourceSpec

log = logging.getLogger(__name__)


def list_images(pattern: str) -> List[Path]:
    """Image files named by ``pattern``: one file, a directory (its images, not recursive) or a
    glob (``**`` recurses); sorted by path, filtered to image extensions. Empty when none match."""
    path = Path(pattern)
    if any(c in pattern for c in "*?["):
        candidates = [Path(p) for p in glob.glob(pattern, recursive=True)]
    elif path.is_dir():
        candidates = list(path.iterdir())
    else:
        candidates = [path]
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _ignored(options: SourceOptions, kind: str, names: List[str]) -> None:
    given = [n for n in names if getattr(options, n) != SourceOptions.model_fields[n].default]
    if given:
        event(log, logging.INFO, "source.options_ignored", kind=kind, options=given)


class ImageSource(Source):
    """Still images, in path order. An unreadable file is logged once, counted and skipped;
    a pass in which no image could be read ends the source with ``SourceError``. ``fps`` does
    not apply (images have no capture time); ``loop`` repeats the list."""

    finite = True

    def __init__(self, spec: SourceSpec, options: SourceOptions) -> None:
        self.uri = spec.display
        self.finite = not options.loop
        self._options = options
        self._transform = FrameTransform.from_options(options)
        self._paths = list_images(spec.location)
        if not self._paths:
            raise SourceError(self._nothing_found(spec))
        _ignored(options, "images", ["fps", "capture_fps", "pixel_format"])
        self._closed = threading.Event()
        self._unreadable: Set[Path] = set()
        self._delivered = 0
        self._loops = 0
        self._state = "open"

    @staticmethod
    def _nothing_found(spec: SourceSpec) -> str:
        exts = ", ".join(sorted(IMAGE_SUFFIXES))
        if spec.kind == "glob":
            return f"source {spec.display!r}: no image files match the pattern {spec.location!r} ({exts})"
        if spec.kind == "directory":
            return f"source {spec.display!r}: directory {spec.location} contains no image files ({exts})"
        return f"source {spec.display!r}: image file {spec.location} does not exist"

    def frames(self) -> Iterator[Frame]:
        while not self._closed.is_set():
            delivered_before = self._delivered
            for path in self._paths:
                if self._closed.is_set():
                    break
                image = self._read(path)
                if image is None:
                    continue
                yield Frame(self._transform.apply(image), self._delivered, time.time(), time.monotonic(), str(path))
                self._delivered += 1
            if self._closed.is_set():
                break
            if self._delivered == delivered_before:
                self._state = "failed"
                raise SourceError(
                    f"source {self.uri!r}: none of its {len(self._paths)} images could be read "
                    f"(first: {self._paths[0]}); check the files are complete images OpenCV can decode"
                )
            if not self._options.loop:
                break
            self._loops += 1
        self._state = "closed" if self._closed.is_set() else "finished"

    def _read(self, path: Path) -> Optional[np.ndarray]:
        """The image, or None (skipped with one warning) when it is unreadable or, by its header, has more
        than ``max_pixels`` pixels: decoding a 20000x20000 PNG of 1 MB costs gigabytes (and OpenCV refuses
        some sizes with an exception)."""
        pixels = _header_pixels(path)
        if pixels is not None and pixels > self._options.max_pixels:
            self._skip(path, f"{pixels} pixels, more than options.max_pixels {self._options.max_pixels}")
            return None
        try:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        except cv2.error as exc:
            self._skip(path, str(exc).strip().splitlines()[-1])
            return None
        if image is None:
            self._skip(path, "not an image OpenCV can decode")
        return image

    def _skip(self, path: Path, why: str) -> None:
        if path not in self._unreadable:
            self._unreadable.add(path)
            event(log, logging.WARNING, "source.image_unreadable", source=self.uri, path=str(path), reason=why)

    def close(self) -> None:
        self._closed.set()
        self._state = "closed"

    def stats(self) -> Dict[str, Any]:
        return {"state": self._state, "frames_total": self._delivered, "images": len(self._paths),
                "unreadable": len(self._unreadable), "loops": self._loops}


class VideoSource(Source):
    """A video file read as fast as the consumer pulls. ``fps`` skips frames by media time
    (frame number / the file's fps), so the result does not depend on decode speed;
    ``loop`` seeks back to frame 0 (reopening the file if the container cannot seek)."""

    def __init__(self, spec: SourceSpec, options: SourceOptions) -> None:
        self.uri = spec.display
        self.finite = not options.loop
        self._path = Path(spec.location)
        self._options = options
        self._transform = FrameTransform.from_options(options)
        self._gate = FpsGate(options.fps)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._reading = False
        self._read = 0
        self._skipped = 0
        self._delivered = 0
        self._loops = 0
        self._truncated = False
        self._state = "open"
        _ignored(options, "video", ["capture_fps", "pixel_format"])
        self._cap: Optional[Any] = self._open()
        self._file_fps = _valid_fps(self._cap.get(cv2.CAP_PROP_FPS))
        self._frame_count = int(max(0.0, self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def _open(self) -> Any:
        if not self._path.is_file():
            raise SourceError(f"source {self.uri!r}: video file {self._path} does not exist")
        cap = cv2.VideoCapture(str(self._path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"source {self.uri!r}: OpenCV cannot decode {self._path} (unknown container or codec, or a "
                "truncated file); re-encode it, e.g. ffmpeg -i in -c:v mjpeg out.avi, or check the file"
            )
        return cap

    def frames(self) -> Iterator[Frame]:
        with self._lock:
            if self._closed.is_set():
                return
            self._reading = True
            if self._cap is None:
                self._cap = self._open()
        cap = self._cap
        try:
            yield from self._read_all(cap)
        finally:
            with self._lock:
                self._reading = False
                self._release()
            if self._state == "open":
                self._state = "closed" if self._closed.is_set() else "finished"

    def _read_all(self, cap: Any) -> Iterator[Frame]:
        in_pass = 0
        offset = 0.0  # media time of the current pass's first frame, so loops keep a rising clock
        while not self._closed.is_set():
            ok, image = cap.read()
            if not ok or image is None:
                self._check_complete(in_pass)
                if not self._options.loop:
                    return
                if in_pass == 0:
                    self._state = "failed"
                    raise SourceError(f"source {self.uri!r}: {self._path} has no decodable frames to loop over")
                offset += self._media_time(in_pass, None)
                in_pass = 0
                self._loops += 1
                cap = self._rewind(cap)
                continue
            mono = time.monotonic()
            self._read += 1
            in_pass += 1
            if not self._gate.admit(offset + self._media_time(in_pass - 1, mono)):
                self._skipped += 1
                continue
            yield Frame(self._transform.apply(image), self._delivered, time.time(), mono, self.uri)
            self._delivered += 1

    def _check_complete(self, in_pass: int) -> None:
        """A pass that ends before the frames the container declares: a truncated file or a decode error.
        Warned once (a looping source would repeat it every pass); the stats keep ``truncated``."""
        if self._truncated or self._closed.is_set() or not 0 < in_pass < self._frame_count:
            return
        self._truncated = True
        event(log, logging.WARNING, "source.video_truncated", source=self.uri, path=str(self._path),
              frames_read=in_pass, frames_declared=self._frame_count,
              hint="the file is truncated or damaged: copy it again or re-encode it")

    def _media_time(self, n: int, mono: Optional[float]) -> float:
        # Files without a usable fps fall back to wall-clock gating.
        if self._file_fps is not None:
            return n / self._file_fps
        return mono if mono is not None else 0.0

    def _rewind(self, cap: Any) -> Any:
        if cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            return cap
        with self._lock:
            self._release()
            self._cap = self._open()
            return self._cap

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        self._closed.set()
        self._state = "closed"
        with self._lock:
            # While frames() runs it owns the capture and releases it itself: OpenCV
            # captures must not be released while another thread is inside read().
            if not self._reading:
                self._release()

    def stats(self) -> Dict[str, Any]:
        return {"state": self._state, "frames_total": self._delivered, "frames_read": self._read,
                "frames_skipped": self._skipped, "loops": self._loops, "video_fps": self._file_fps,
                "frame_count": self._frame_count, "truncated": self._truncated}


def _valid_fps(value: float) -> Optional[float]:
    return float(value) if 0.0 < value < 1000.0 else None


def _header_pixels(path: Path) -> Optional[int]:
    """Width x height from the image's header, without decoding it; None when Pillow cannot tell."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is what we check
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        return 1 << 62  # Pillow's own limit: far over any max_pixels
    except Exception:  # not a format Pillow knows, or unreadable: OpenCV decides
        return None
    return int(width) * int(height)
