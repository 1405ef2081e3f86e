"""Inputs the Paddle backend makes by itself: warm-up tensors, and the shapes calibration images are
sized to. The calibration images themselves come from the preparer (``Backend.build``'s
``calibration``), through the model's own preprocessing, exactly as for the TensorRT backend.
"""

from __future__ import annotations

from typing import List, Mapping, Sequence, Tuple

import numpy as np

from agent.backends.paddle.config import ShapeRange
from agent.engines.contract import Feed, TensorInfo


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


def calibration_inputs(inputs: Sequence[TensorInfo], ranges: Mapping[str, ShapeRange]) -> List[TensorInfo]:
    """The inputs as the preprocessing should size calibration images: each input with a shape
    range at its opt size, batch left dynamic (the batches are ``calibration.batch_size`` images)."""
    out = []
    for info in inputs:
        r = ranges.get(info.name)
        out.append(TensorInfo(info.name, (-1, *r.opt[1:]), info.dtype) if r is not None else info)
    return out
