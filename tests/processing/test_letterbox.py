"""Boxes survive resize + letterbox + post-processing: a box drawn in the source comes back in source pixels."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import pytest

from agent.engines.contract import TensorInfo
from agent.manifest.models import PostprocessSpec, PreprocessSpec
from agent.processing import make_postprocessor
from agent.processing.meta import ImageMeta
from agent.processing.preprocess import Preprocessor

Box = Tuple[int, int, int, int]


def edges(profile: np.ndarray) -> Tuple[float, float]:
    """Sub-pixel positions (pixel-edge coordinates) where ``profile`` crosses 0.5 going up, then down."""
    above = np.flatnonzero(profile >= 0.5)
    first, last = int(above[0]), int(above[-1])
    rise = first - 1 + (0.5 - profile[first - 1]) / (profile[first] - profile[first - 1])
    fall = last + (profile[last] - 0.5) / (profile[last] - profile[last + 1])
    return rise + 0.5, fall + 0.5  # sample i sits at the centre of pixel i


def box_in_tensor(plane: np.ndarray) -> Tuple[float, float, float, float]:
    """The bright rectangle's edges in a [H, W] plane scaled to 0..1, measured through its middle."""
    rows, cols = np.nonzero(plane >= 0.5)
    cy, cx = int(np.median(rows)), int(np.median(cols))
    x1, x2 = edges(plane[cy, :])
    y1, y2 = edges(plane[:, cx])
    return x1, y1, x2, y2


@pytest.mark.parametrize(("source", "size", "keep_aspect", "box"), [
    ((160, 90), (320, 320), True, (40, 20, 121, 71)),  # upscale x2, padding above and below
    ((90, 160), (256, 256), True, (10, 35, 70, 150)),  # upscale x1.6, padding left and right
    ((200, 120), (160, 160), True, (30, 40, 170, 100)),  # downscale x0.8, padding above and below
    ((300, 100), (200, 160), False, (50, 10, 250, 90)),  # stretched: x0.667 horizontally, x1.6 vertically
])
def test_drawn_box_round_trips_within_one_pixel(
    source: Tuple[int, int], size: Tuple[int, int], keep_aspect: bool, box: Box
) -> None:
    w, h = source
    image = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    pre = Preprocessor(PreprocessSpec(resize=size, keep_aspect=keep_aspect, pad_value=60),
                       [TensorInfo("x", (-1, 3, -1, -1), "float32")])
    feeds, metas = pre([image])
    found = box_in_tensor(feeds["x"][0, 0])
    model_output = np.array([[[*found, 0.9, 0.0]]], np.float32)  # [N, K, 6] x1,y1,x2,y2,score,class
    post = make_postprocessor(PostprocessSpec(type="detection", nms_iou=None),
                              [TensorInfo("det", (-1, -1, 6), "float32")], ["thing"])
    (result,) = post({"det": model_output}, metas)
    det = result["detections"][0]
    assert [det["x1"], det["y1"], det["x2"], det["y2"]] == pytest.approx(list(box), abs=1.0)
    assert (det["label"], det["class"], det["score"]) == ("thing", 0, pytest.approx(0.9))


def test_to_source_by_hand() -> None:
    # 200x100 letterboxed into 100x100: scale 0.5, content 100x50, 25 rows of padding on top
    meta = ImageMeta(200, 100, 100, 100, 100, 50, 0, 25)
    boxes = np.array([[10, 35, 60, 60], [-5, 0, 120, 99]], np.float32)
    assert meta.to_source(boxes).tolist() == [[20, 20, 120, 70], [0, 0, 200, 100]]  # second one clipped


def test_to_source_with_horizontal_padding_and_unequal_scales() -> None:
    meta = ImageMeta(width=40, height=80, input_width=64, input_height=32, resized_width=16, resized_height=32,
                     pad_x=24, pad_y=0)
    assert (meta.scale_x, meta.scale_y) == (0.4, 0.4)
    assert meta.to_source(np.array([[24.0, 0.0, 40.0, 16.0]])).tolist() == [[0.0, 0.0, 40.0, 40.0]]
