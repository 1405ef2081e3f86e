from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import pytest

from agent.manifest.models import SourceOptions
from agent.sources.transform import FrameTransform, flip_method, orient

# nvvidconv flip-method semantics written independently with numpy.
REFERENCE: Dict[int, Callable[[np.ndarray], np.ndarray]] = {
    0: lambda im: im,
    1: lambda im: np.rot90(im, 1),  # counterclockwise
    2: lambda im: np.rot90(im, 2),
    3: lambda im: np.rot90(im, -1),  # clockwise
    4: lambda im: im[:, ::-1],  # horizontal flip
    5: lambda im: im[::-1, ::-1].transpose(1, 0, 2),  # upper-right diagonal: across the anti-diagonal
    6: lambda im: im[::-1],  # vertical flip
    7: lambda im: im.transpose(1, 0, 2),  # upper-left diagonal: transpose
}
FLIPS = {"none": lambda im: im, "horizontal": lambda im: im[:, ::-1], "vertical": lambda im: im[::-1],
         "both": lambda im: im[::-1, ::-1]}


def _asymmetric() -> np.ndarray:
    return np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)


@pytest.mark.parametrize("flip", ["none", "horizontal", "vertical", "both"])
@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_flip_method_is_flip_then_clockwise_rotation(flip: str, rotate: int) -> None:
    image = _asymmetric()
    expected = np.rot90(FLIPS[flip](image), -rotate // 90)
    method = flip_method(flip, rotate)
    assert np.array_equal(REFERENCE[method](image), expected)
    assert np.array_equal(orient(image, method), expected)


@pytest.mark.parametrize("method", range(8))
def test_orient_matches_nvvidconv_reference(method: int) -> None:
    image = _asymmetric()
    assert np.array_equal(orient(image, method), REFERENCE[method](image))


@pytest.mark.parametrize(
    ("width", "height", "shape"),
    [(None, None, (48, 64, 3)), (32, None, (24, 32, 3)), (None, 96, (96, 128, 3)), (20, 30, (30, 20, 3)),
     (64, 48, (48, 64, 3))],
)
def test_resize_keeps_aspect_when_one_side_given(width, height, shape) -> None:
    out = FrameTransform(width, height).apply(np.zeros((48, 64, 3), np.uint8))
    assert out.shape == shape


def test_resize_happens_before_rotation() -> None:
    transform = FrameTransform.from_options(SourceOptions(width=32, height=24, rotate=90))
    assert transform.apply(np.zeros((48, 64, 3), np.uint8)).shape == (32, 24, 3)


def test_device_side_transforms_are_not_repeated() -> None:
    options = SourceOptions(width=32, rotate=180, flip="horizontal")
    transform = FrameTransform.from_options(options, resize=False, orient=False)
    image = _asymmetric()
    assert transform.apply(image) is image


@pytest.mark.parametrize("shape", [(4, 6), (4, 6, 1), (4, 6, 4)])
def test_output_is_always_three_channel_bgr(shape) -> None:
    assert FrameTransform().apply(np.zeros(shape, np.uint8)).shape == (4, 6, 3)
