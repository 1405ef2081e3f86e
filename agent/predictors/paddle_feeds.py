"""Inputs the Paddle backend feeds by itself: warm-up tensors, and calibration images by default.

The default calibration feed is a minimal stand-in for the model's real preprocessing (resize or
letterbox, colour order, scale, mean/std, layout, dtype, PaddleDetection's ``im_shape`` /
``scale_factor``); the engine orchestration should inject the shared preprocessing instead
(``PaddleBackend(calibration_feeds=...)``) so calibration sees exactly what inference sees.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Tuple

import numpy as np

from agent.errors import BuildError
from agent.manifest.models import ModelSpec, PreprocessSpec
from agent.predictors.paddle_config import ShapeRange

Feed = Dict[str, np.ndarray]
CalibrationFeeds = Callable[[ModelSpec], Iterator[Feed]]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def warmup_feeds(ranges: Mapping[str, ShapeRange], dtypes: Mapping[str, str]) -> List[Tuple[str, Feed]]:
    """One feed per distinct (min, opt, max) shape set: running these makes Paddle build (and, with
    use_static, serialize) the TensorRT engines for the whole range during the build."""
    out: List[Tuple[str, Feed]] = []
    seen = set()
    for label in ("min", "opt", "max"):
        shapes = {n: tuple(getattr(r, label)) for n, r in ranges.items()}
        key = tuple(sorted(shapes.items()))
        if key in seen:
            continue
        seen.add(key)
        out.append((label, {n: _fill(s, dtypes.get(n, "float32")) for n, s in shapes.items()}))
    return out


def _fill(shape: Tuple[int, ...], dtype: str) -> np.ndarray:
    # mid-range constants: valid for images in [0, 1] and for PaddleDetection's scale/shape inputs
    value = 0.5 if dtype.startswith(("float", "bfloat")) else 1
    return np.full(shape, value, dtype=dtype)


def list_images(pattern: str) -> List[Path]:
    """Image files of a glob, a directory (not recursive) or a single file, sorted."""
    if os.path.isdir(pattern):
        candidates = [str(p) for p in Path(pattern).iterdir()]
    elif os.path.isfile(pattern):
        candidates = [pattern]
    else:
        candidates = glob.glob(pattern, recursive=True)
    return sorted(Path(p) for p in candidates if Path(p).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(p))


def calibration_feeds(spec: ModelSpec) -> Iterator[Feed]:
    """Batches of ``spec.calibration.batch_size`` images, at most ``count`` images in all."""
    if spec.calibration is None:
        return
    calib = spec.calibration
    files = list_images(calib.images)[: calib.count]
    if not files:
        raise BuildError(f"model '{spec.name}': calibration.images matched no images: {calib.images}")
    name, size = _target(spec)
    for start in range(0, len(files), calib.batch_size):
        items = [_prepare(f, spec.preprocess, size) for f in files[start:start + calib.batch_size]]
        feed: Feed = {name: np.ascontiguousarray(np.stack([t for t, _, _ in items]))}
        for extra, kind in spec.preprocess.extra_inputs.items():
            rows = [[h, w] if kind == "im_shape" else [sy, sx] for _, (h, w), (sy, sx) in items]
            feed[extra] = np.asarray(rows, dtype="float32")
        yield feed


def _target(spec: ModelSpec) -> Tuple[str, Tuple[int, int]]:
    """(input name, (width, height)) the images are resized to."""
    pre = spec.preprocess
    name = pre.input or (spec.inputs[0].name if spec.inputs else "")
    declared = next((i for i in spec.inputs if i.name == name), None)
    if pre.resize is not None:
        size = pre.resize
    elif declared is not None:
        opt = declared.shapes()[1]
        size = (opt[3], opt[2]) if pre.layout == "nchw" else (opt[2], opt[1])
    else:
        raise BuildError(
            f"model '{spec.name}': calibration needs the input size: set preprocess.resize, or declare the "
            "input under inputs: (and preprocess.input when the model has several)"
        )
    if not name:
        raise BuildError(f"model '{spec.name}': calibration needs preprocess.input or inputs: to name the image input")
    return name, (int(size[0]), int(size[1]))


def _prepare(path: Path, pre: PreprocessSpec, size: Tuple[int, int]) -> Tuple[np.ndarray, Tuple[float, float],
                                                                              Tuple[float, float]]:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise BuildError(f"calibration image {path} cannot be decoded; remove it or replace it")
    height, width = image.shape[:2]
    w, h = size
    if pre.keep_aspect:
        ratio = min(w / width, h / height)
        nw, nh = max(1, round(width * ratio)), max(1, round(height * ratio))
        canvas = np.full((h, w, 3), pre.pad_value, dtype=np.uint8)
        canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        image, sy, sx = canvas, ratio, ratio
    else:
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        sy, sx = h / height, w / width
    if pre.color == "rgb":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif pre.color == "gray":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]
    channels = image.shape[2]
    if pre.dtype == "uint8":
        tensor = image
    else:
        mean = np.asarray(pre.mean[:channels], dtype="float32")
        std = np.asarray(pre.std[:channels], dtype="float32")
        tensor = ((image.astype("float32") * pre.scale - mean) / std).astype(pre.dtype)
    if pre.layout == "nchw":
        tensor = tensor.transpose(2, 0, 1)
    return tensor, (float(h), float(w)), (float(sy), float(sx))
