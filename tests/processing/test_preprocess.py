"""Preprocessor against a slow per-pixel reference, buffer reuse, extra inputs, manifest checks."""

from __future__ import annotations

import itertools
import math
import re
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pytest

from agent.engines.contract import TensorInfo
from agent.errors import BuildError, ConfigError, ManifestError, SourceError
from agent.manifest.models import ModelSpec, PreprocessSpec
from agent.processing.preprocess import Preprocessor, calibration_feeds

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def image_input(layout: str, color: str, h: int = -1, w: int = -1, dtype: str = "float32",
                name: str = "x") -> TensorInfo:
    c = 1 if color == "gray" else 3
    shape = (-1, c, h, w) if layout == "nchw" else (-1, h, w, c)
    return TensorInfo(name, shape, dtype)


def frames(seed: int, sizes: Sequence[Tuple[int, int]]) -> List[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8) for w, h in sizes]


def reference(images: Sequence[np.ndarray], spec: PreprocessSpec, size: Optional[Tuple[int, int]]) -> np.ndarray:
    """The documented preprocessing, one pixel at a time in float64."""
    out = []
    for img in images:
        h0, w0 = img.shape[:2]
        width, height = size or (w0, h0)
        if spec.keep_aspect:
            s = min(width / w0, height / h0)
            nw, nh = math.floor(w0 * s + 0.5), math.floor(h0 * s + 0.5)
            px, py = (width - nw) // 2, (height - nh) // 2
            canvas: np.ndarray = np.full((height, width, 3), spec.pad_value, np.uint8)
            canvas[py:py + nh, px:px + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        else:
            canvas = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
        if spec.color == "gray":
            pix = cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY)[:, :, None]
        elif spec.color == "rgb":
            pix = canvas[:, :, ::-1]
        else:
            pix = canvas
        c_count = pix.shape[2]
        mean = spec.mean if len(spec.mean) == c_count else [spec.mean[0]] * c_count
        std = spec.std if len(spec.std) == c_count else [spec.std[0]] * c_count
        arr = np.zeros((c_count, height, width) if spec.layout == "nchw" else (height, width, c_count))
        for y in range(height):
            for x in range(width):
                for c in range(c_count):
                    v = float(pix[y, x, c])
                    if spec.dtype != "uint8":
                        v = (v * spec.scale - mean[c]) / std[c]
                    if spec.layout == "nchw":
                        arr[c, y, x] = v
                    else:
                        arr[y, x, c] = v
        out.append(arr)
    return np.stack(out).astype(spec.dtype)


COMBOS = list(itertools.product(["nchw", "nhwc"], ["rgb", "bgr", "gray"], [False, True]))


@pytest.mark.parametrize(("layout", "color", "keep_aspect"), COMBOS)
def test_matches_reference_with_resize(layout: str, color: str, keep_aspect: bool) -> None:
    mean_std: Any = {"mean": [0.5], "std": [0.25]} if color == "gray" else IMAGENET
    spec = PreprocessSpec(resize=(24, 20), keep_aspect=keep_aspect, color=color, layout=layout, pad_value=7, **mean_std)
    images = frames(1, [(37, 23), (19, 41)])
    feeds, metas = Preprocessor(spec, [image_input(layout, color)])(images)
    expected = reference(images, spec, (24, 20))
    assert feeds["x"].shape == expected.shape and feeds["x"].dtype == np.float32
    assert np.allclose(feeds["x"], expected, rtol=1e-5, atol=1e-5)
    assert [(m.input_width, m.input_height) for m in metas] == [(24, 20), (24, 20)]


@pytest.mark.parametrize(("layout", "color"), [("nchw", "rgb"), ("nhwc", "bgr"), ("nhwc", "gray")])
@pytest.mark.parametrize("keep_aspect", [False, True])
def test_size_from_static_input_shape(layout: str, color: str, keep_aspect: bool) -> None:
    spec = PreprocessSpec(keep_aspect=keep_aspect, color=color, layout=layout)
    images = frames(2, [(30, 12)])
    pre = Preprocessor(spec, [image_input(layout, color, h=16, w=16)])
    assert pre.input_size == (16, 16)
    feeds, _ = pre(images)
    assert np.allclose(feeds["x"], reference(images, spec, (16, 16)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("layout", "color"), [("nchw", "rgb"), ("nhwc", "rgb"), ("nchw", "gray")])
def test_dynamic_input_keeps_frame_size_and_reads_frame_in_place(layout: str, color: str) -> None:
    spec = PreprocessSpec(color=color, layout=layout, keep_aspect=True)
    images = frames(3, [(21, 13), (21, 13)])
    before = [im.copy() for im in images]
    feeds, metas = Preprocessor(spec, [image_input(layout, color)])(images)
    assert np.allclose(feeds["x"], reference(images, spec, None), rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(images, before))  # frames are never written to
    assert (metas[0].pad_x, metas[0].pad_y, metas[0].scale_x) == (0, 0, 1.0)


@pytest.mark.parametrize(("dtype", "tol"), [("float16", 2e-3), ("uint8", 0)])
@pytest.mark.parametrize(("layout", "color"), [("nchw", "rgb"), ("nhwc", "rgb"), ("nhwc", "gray")])
def test_float16_and_uint8_outputs(dtype: str, tol: float, layout: str, color: str) -> None:
    extra: Any = {} if dtype == "uint8" else IMAGENET if color != "gray" else {}
    spec = PreprocessSpec(resize=(18, 14), keep_aspect=True, color=color, layout=layout, dtype=dtype, **extra)
    images = frames(4, [(25, 31)])
    feeds, _ = Preprocessor(spec, [image_input(layout, color, dtype=dtype)])(images)
    expected = reference(images, spec, (18, 14))
    assert feeds["x"].dtype == np.dtype(dtype)
    assert np.allclose(feeds["x"].astype(np.float64), expected.astype(np.float64), rtol=tol, atol=tol)


def test_letterbox_geometry_is_centred_and_recorded() -> None:
    spec = PreprocessSpec(resize=(64, 64), keep_aspect=True, pad_value=114, color="bgr", dtype="uint8", layout="nhwc",
                          scale=1.0)
    (meta,) = Preprocessor(spec, [image_input("nhwc", "bgr", dtype="uint8")])(frames(5, [(200, 100)]))[1]
    # s = min(64/200, 64/100) = 0.32 -> content 64 x 32, centred: 16 rows of padding above
    assert (meta.width, meta.height, meta.resized_width, meta.resized_height) == (200, 100, 64, 32)
    assert (meta.pad_x, meta.pad_y) == (0, 16)
    assert meta.scale_x == pytest.approx(0.32) and meta.scale_y == pytest.approx(0.32)


def test_pad_border_refilled_when_placement_changes() -> None:
    spec = PreprocessSpec(resize=(16, 16), keep_aspect=True, pad_value=9, color="bgr", layout="nhwc", dtype="uint8")
    pre = Preprocessor(spec, [image_input("nhwc", "bgr", dtype="uint8")])
    wide, tall, square, big = frames(6, [(32, 8), (8, 32), (16, 16), (32, 32)])
    # `big` fills the whole canvas, so the border must be drawn again for the next `wide`
    for image in (wide, tall, square, wide, big, wide):
        feeds, _ = pre([image])
        assert np.array_equal(feeds["x"], reference([image], spec, (16, 16)))


def test_output_buffers_are_reused_per_batch_shape() -> None:
    spec = PreprocessSpec(resize=(12, 10))
    pre = Preprocessor(spec, [image_input("nchw", "rgb")])
    a, b, c = frames(7, [(20, 20), (9, 30), (40, 15)])
    first = pre([a])[0]["x"]
    second = pre([b])[0]["x"]
    assert second is first  # the caller must consume a batch before asking for the next
    assert np.allclose(second, reference([b], spec, (12, 10)), atol=1e-6)
    pair = pre([a, c])[0]["x"]
    assert pair is not first and pair.shape[0] == 2
    assert pre([c])[0]["x"] is first
    fresh = Preprocessor(spec, [image_input("nchw", "rgb")], reuse_buffers=False)
    assert fresh([a])[0]["x"] is not fresh([a])[0]["x"]


def test_extra_inputs_im_shape_and_scale_factor() -> None:
    spec = PreprocessSpec(resize=(64, 64), keep_aspect=True, extra_inputs={"im_shape": "im_shape",
                                                                           "scale_factor": "scale_factor"})
    inputs = [TensorInfo("im_shape", (-1, 2), "float32"), image_input("nchw", "rgb", name="image"),
              TensorInfo("scale_factor", (-1, 2), "float32")]
    pre = Preprocessor(spec.model_copy(update={"input": "image"}), inputs)
    feeds, metas = pre(frames(8, [(200, 100), (50, 100)]))
    assert set(feeds) == {"image", "im_shape", "scale_factor"}
    # 200x100 -> 64x32; 50x100 -> 32x64
    assert feeds["im_shape"].tolist() == [[32.0, 64.0], [64.0, 32.0]]
    assert np.allclose(feeds["scale_factor"], [[0.32, 0.32], [0.64, 0.64]])
    assert feeds["scale_factor"].dtype == np.float32
    assert all(m.scale_factor_fed for m in metas)


@pytest.mark.parametrize(("spec", "inputs", "message"), [
    (PreprocessSpec(input="nope"), [image_input("nchw", "rgb")], "preprocess.input"),
    (PreprocessSpec(), [TensorInfo("x", (-1, 3), "float32")], "not an image batch"),
    (PreprocessSpec(), [image_input("nchw", "rgb"), TensorInfo("scale_factor", (-1, 2), "float32")],
     "scale_factor"),
    (PreprocessSpec(extra_inputs={"x": "im_shape"}), [image_input("nchw", "rgb")], "non-image input"),
    (PreprocessSpec(layout="nchw"), [TensorInfo("x", (-1, 32, 32, 3), "float32")], "layout: nhwc"),
    (PreprocessSpec(color="gray"), [image_input("nchw", "rgb")], "color 'gray' gives 1"),
    (PreprocessSpec(dtype="float16"), [image_input("nchw", "rgb")], "preprocess.dtype: float32"),
    (PreprocessSpec(resize=(32, 32)), [image_input("nchw", "rgb", h=64, w=48)], "set resize: [48, 64]"),
    (PreprocessSpec(), [image_input("nchw", "rgb", h=64)], "fixes only one"),
    (PreprocessSpec(color="gray", mean=[0.1, 0.2, 0.3]), [image_input("nchw", "gray")], "preprocess.mean: 3 different"),
    (PreprocessSpec(dtype="uint8", mean=[1.0, 1.0, 1.0]), [image_input("nchw", "rgb", dtype="uint8")],
     "raw pixel values"),
])
def test_manifest_mistakes_are_explained(spec: PreprocessSpec, inputs: List[TensorInfo], message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        Preprocessor(spec, inputs)


def test_runtime_mismatches_are_typed() -> None:
    fixed_batch = Preprocessor(PreprocessSpec(resize=(8, 8)), [TensorInfo("x", (1, 3, 8, 8), "float32")])
    with pytest.raises(ConfigError, match="batches of exactly 1"):
        fixed_batch(frames(9, [(8, 8), (8, 8)]))
    dynamic = Preprocessor(PreprocessSpec(), [image_input("nchw", "rgb")])
    with pytest.raises(ConfigError, match=r"set preprocess\.resize"):
        dynamic(frames(9, [(8, 8), (9, 8)]))
    with pytest.raises(SourceError, match="H x W x 3 uint8"):
        dynamic([np.zeros((8, 8), np.uint8)])


def _model(**fields: Any) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "model": "m.onnx", "backend": "tensorrt", **fields})


def test_calibration_feeds_batches_fresh_arrays(tmp_path: Any) -> None:
    images = frames(10, [(40, 30), (30, 40), (20, 20), (64, 48), (16, 16)])
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(files[-1]), image)
    spec = _model(precision="int8", calibration={"images": str(tmp_path), "batch_size": 2},
                  preprocess={"resize": [16, 12], "keep_aspect": True})
    batches = list(calibration_feeds(spec, [image_input("nchw", "rgb")], files))
    assert [b["x"].shape for b in batches] == [(2, 3, 12, 16), (2, 3, 12, 16), (1, 3, 12, 16)]
    assert batches[0]["x"] is not batches[1]["x"]  # callers keep them (the accuracy gate lists them)
    expected = reference(images[:2], spec.preprocess, (16, 12))
    assert np.allclose(batches[0]["x"], expected, atol=1e-6)
    single = list(calibration_feeds(_model(preprocess={"resize": [16, 12]}), [image_input("nchw", "rgb")], files))
    assert len(single) == 5


def test_calibration_feeds_unreadable_image(tmp_path: Any) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(BuildError, match=r"model 'm': cannot read image .*broken\.jpg"):
        list(calibration_feeds(_model(), [image_input("nchw", "rgb", 8, 8)], [bad]))
