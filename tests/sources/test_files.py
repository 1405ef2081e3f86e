"""File sources on real files: images written with cv2.imwrite, videos written with cv2.VideoWriter."""

from __future__ import annotations

import logging
import threading
from itertools import islice
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest

from agent.errors import SourceError
from agent.manifest.models import SourceOptions
from agent.sources import open_source
from agent.sources.files import ImageSource, VideoSource, list_images
from tests.sources.conftest import FRAMES, marked_image


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, name in enumerate(["b.png", "a.png", "c.jpg"]):
        cv2.imwrite(str(folder / name), marked_image(40 * (i + 1)))
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return folder


def _read(uri: str, base: Path, **options: object) -> list:
    source = open_source(uri, SourceOptions(**options), base)
    return list(source.frames())


def test_directory_yields_sorted_readable_images(image_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    source = open_source("imgs", SourceOptions(), image_dir.parent)
    assert isinstance(source, ImageSource) and source.finite
    frames = list(source.frames())
    assert [Path(f.source).name for f in frames] == ["a.png", "b.png", "c.jpg"]
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert source.stats() == {"state": "finished", "frames_total": 3, "images": 4, "unreadable": 1, "loops": 0}
    unreadable = [r for r in caplog.records if r.getMessage() == "source.image_unreadable"]
    assert len(unreadable) == 1 and unreadable[0].path.endswith("broken.jpg")  # type: ignore[attr-defined]


def test_glob_is_relative_to_base_dir(image_dir: Path) -> None:
    frames = _read("imgs/*.png", image_dir.parent)
    assert [Path(f.source).name for f in frames] == ["a.png", "b.png"]


def test_single_file_uri(image_dir: Path) -> None:
    frames = _read(f"file://{image_dir}/c.jpg", Path("/"), width=32)
    assert len(frames) == 1 and frames[0].image.shape == (24, 32, 3)


def test_loop_repeats_and_broken_files_warn_once(image_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    source = open_source("imgs", SourceOptions(loop=True), image_dir.parent)
    assert not source.finite
    frames = list(islice(source.frames(), 10))
    assert [f.index for f in frames] == list(range(10))
    assert source.stats()["loops"] == 3
    assert sum(r.getMessage() == "source.image_unreadable" for r in caplog.records) == 1


def test_empty_glob_names_the_pattern(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no image files match the pattern '.*/nothing/\*\.jpg'"):
        open_source("nothing/*.jpg", SourceOptions(), tmp_path)


def test_empty_directory_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="contains no image files"):
        open_source("empty", SourceOptions(), tmp_path)
    with pytest.raises(SourceError, match=r"image file .*/gone.png does not exist"):
        open_source("gone.png", SourceOptions(), tmp_path)


def test_all_images_unreadable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"junk")
    source = open_source("*.jpg", SourceOptions(loop=True), tmp_path)
    with pytest.raises(SourceError, match="none of its 1 images could be read"):
        list(source.frames())
    assert source.stats()["state"] == "failed"


def test_list_images(image_dir: Path) -> None:
    assert [p.name for p in list_images(str(image_dir))] == ["a.png", "b.png", "broken.jpg", "c.jpg"]
    assert [p.name for p in list_images(str(image_dir / "*.jpg"))] == ["broken.jpg", "c.jpg"]
    assert list_images(str(image_dir / "a.png")) == [image_dir / "a.png"]
    assert list_images(str(image_dir / "missing.png")) == []


@pytest.mark.parametrize("kind", ["mp4", "avi"])
def test_video_frame_count(videos: Dict[str, Path], kind: str) -> None:
    source = open_source(str(videos[kind]), SourceOptions(), Path("/"))
    assert isinstance(source, VideoSource) and source.finite
    frames = list(source.frames())
    assert [f.index for f in frames] == list(range(FRAMES))
    assert frames[0].source == str(videos[kind])
    assert frames[0].mono <= frames[-1].mono
    stats = source.stats()
    assert (stats["state"], stats["frames_total"], stats["video_fps"], stats["frame_count"]) == \
        ("finished", FRAMES, 30.0, FRAMES)
    # Pixels survive the (lossy) codec: frame i was written with grey level 20 + 3 i.
    assert abs(int(frames[10].image[40, 50, 0]) - 50) <= 8
    assert stats["truncated"] is False


@pytest.mark.parametrize("loop", [False, True])
def test_a_truncated_video_ends_with_a_warning_not_silently(
        videos: Dict[str, Path], tmp_path: Path, loop: bool, caplog: pytest.LogCaptureFixture) -> None:
    data = videos["avi"].read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:len(data) * 6 // 10])  # the header still declares every frame
    source = open_source(str(cut), SourceOptions(loop=loop), Path("/"))
    with caplog.at_level(logging.WARNING, logger="agent.sources.files"):
        delivered = len(list(islice(source.frames(), FRAMES * 3)))
    source.close()
    stats = source.stats()
    assert stats["frames_read"] > 0 and stats["frame_count"] == FRAMES and stats["truncated"] is True
    assert delivered < FRAMES or loop
    warned = [r for r in caplog.records if r.getMessage() == "source.video_truncated"]
    assert len(warned) == 1, "warned once, even when looping"


def test_video_loop_seeks_back(videos: Dict[str, Path]) -> None:
    source = open_source(str(videos["avi"]), SourceOptions(loop=True), Path("/"))
    assert not source.finite
    frames = list(islice(source.frames(), 2 * FRAMES + 5))
    assert [f.index for f in frames] == list(range(2 * FRAMES + 5))
    assert source.stats()["loops"] == 2
    assert abs(int(frames[FRAMES].image[40, 50, 0]) - int(frames[0].image[40, 50, 0])) <= 2


@pytest.mark.parametrize(("fps", "kept"), [(10, 10), (15, 15), (29.9, 30), (60, 30)])
def test_video_fps_skips_by_media_time(videos: Dict[str, Path], fps: float, kept: int) -> None:
    source = open_source(str(videos["mp4"]), SourceOptions(fps=fps), Path("/"))
    frames = list(source.frames())
    assert len(frames) == kept
    assert source.stats()["frames_skipped"] == FRAMES - kept
    assert [f.index for f in frames] == list(range(kept))


def test_video_fps_with_loop_keeps_the_rate_across_passes(videos: Dict[str, Path]) -> None:
    source = open_source(str(videos["mp4"]), SourceOptions(fps=10, loop=True), Path("/"))
    list(islice(source.frames(), 25))
    stats = source.stats()
    assert stats["frames_read"] - stats["frames_skipped"] == 25
    assert 72 <= stats["frames_read"] <= 75  # one frame in three, also over the loop seam


def _bright_corner(image: np.ndarray) -> str:
    h, w = image.shape[:2]
    corners = {"top-left": image[: h // 6, : w // 6], "top-right": image[: h // 6, -w // 6:],
               "bottom-left": image[-h // 6:, : w // 6], "bottom-right": image[-h // 6:, -w // 6:]}
    return max(corners, key=lambda k: float(corners[k].mean()))


@pytest.mark.parametrize(
    ("flip", "rotate", "shape", "corner"),
    [("none", 0, (48, 64, 3), "top-left"), ("horizontal", 0, (48, 64, 3), "top-right"),
     ("vertical", 0, (48, 64, 3), "bottom-left"), ("both", 0, (48, 64, 3), "bottom-right"),
     ("none", 90, (64, 48, 3), "top-right"), ("none", 270, (64, 48, 3), "bottom-left"),
     ("none", 180, (48, 64, 3), "bottom-right"), ("horizontal", 90, (64, 48, 3), "bottom-right")],
)
def test_video_flip_and_rotate(videos: Dict[str, Path], flip: str, rotate: int, shape, corner: str) -> None:
    frame = next(iter(open_source(str(videos["avi"]), SourceOptions(flip=flip, rotate=rotate), Path("/")).frames()))
    assert frame.image.shape == shape
    assert _bright_corner(frame.image) == corner


@pytest.mark.parametrize(("width", "height", "shape"), [(32, None, (24, 32, 3)), (32, 32, (32, 32, 3)),
                                                        (None, 96, (96, 128, 3))])
def test_video_resize(videos: Dict[str, Path], width, height, shape) -> None:
    frames = _read(str(videos["mp4"]), Path("/"), width=width, height=height)
    assert {f.image.shape for f in frames} == {shape}


def test_close_from_another_thread_stops_a_looping_video(videos: Dict[str, Path]) -> None:
    source = open_source(str(videos["avi"]), SourceOptions(loop=True), Path("/"))
    seen = threading.Event()
    count = []

    def consume() -> None:
        for frame in source.frames():
            count.append(frame.index)
            seen.set()

    thread = threading.Thread(target=consume)
    thread.start()
    assert seen.wait(10)
    source.close()
    thread.join(10)
    assert not thread.is_alive()
    assert source.stats()["state"] == "closed"


def test_close_before_reading_releases_the_file(videos: Dict[str, Path]) -> None:
    source = open_source(str(videos["mp4"]), SourceOptions(), Path("/"))
    source.close()
    assert list(source.frames()) == []


def test_undecodable_or_missing_video(tmp_path: Path) -> None:
    (tmp_path / "bad.mp4").write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError, match=r"OpenCV cannot decode .*bad.mp4"):
        open_source("bad.mp4", SourceOptions(), tmp_path)
    with pytest.raises(SourceError, match=r"video file .*/gone.mkv does not exist"):
        open_source("gone.mkv", SourceOptions(), tmp_path)


def test_options_that_do_not_apply_are_logged(videos: Dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.sources")
    open_source(str(videos["mp4"]), SourceOptions(capture_fps=60, pixel_format="MJPG"), Path("/")).close()
    records = [r for r in caplog.records if r.getMessage() == "source.options_ignored"]
    assert records and records[0].options == ["capture_fps", "pixel_format"]  # type: ignore[attr-defined]
