"""Where each frame of a batch goes in the input tensor: the size rules of ``preprocess``.

A ``Layout`` is the batch's spatial size plus one ``Placement`` (content size and top-left offset)
per frame. Four rules:

- fixed size (``resize`` or the model's fixed H/W): the frame is stretched to it, or with
  ``keep_aspect`` letterboxed into its centre;
- no size at all: the frame as it is (all frames of a batch must then have one size);
- ``limit_side`` (PP-OCR's text detector, DetResizeForTest): scale so that the long side
  (``limit_type: max``) is at most, or the short side (``min``) at least, ``limit_side_len``, keeping
  the aspect ratio; then each side is rounded to the nearest multiple of ``size_multiple`` (at least
  one multiple). Frames of different sizes in one batch sit at the top left of the largest;
- ``text_line`` (PP-OCR's recognizer and direction classifier): height ``H`` (the model's fixed
  height, else 48), width ``ceil(H * w / h)`` capped at the batch width; the batch width is the
  widest frame's, clamped to ``[line_min_width, line_max_width]``. Content sits at the left; the rest
  is padding.

For the two PP-OCR rules the padding is zero in the normalised tensor, as PaddleOCR pads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from agent.errors import ConfigError
from agent.manifest.models import PreprocessSpec

DEFAULT_LINE_HEIGHT = 48
Size = Tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class Placement:
    width: int  # content size inside the tensor
    height: int
    x: int  # left / top padding
    y: int


@dataclass(frozen=True)
class Layout:
    size: Size  # (width, height) of the batch tensor
    placements: List[Placement]
    zero_pad: bool  # padding is 0 in the normalised tensor (PP-OCR), not pad_value pixels


def layout(spec: PreprocessSpec, fixed: Optional[Size], model_height: int, frames: Sequence[Size]) -> Layout:
    """The layout of a batch of frames of the given (width, height) sizes.

    ``fixed``: the input size from ``resize`` or the model; ``model_height``: the model's fixed
    input height, or -1."""
    if fixed is not None:
        return Layout(fixed, [_fit(spec.keep_aspect, fixed, f) for f in frames], False)
    if spec.resize_rule == "limit_side":
        return _top_left([limit_side(spec, f) for f in frames])
    if spec.resize_rule == "text_line":
        return text_line(spec, model_height if model_height > 0 else DEFAULT_LINE_HEIGHT, frames)
    sizes = set(frames)
    if len(sizes) > 1:
        raise ConfigError(
            f"preprocess.resize: frames of different sizes {sorted(sizes)} cannot form one batch for a model with "
            "a dynamic input size; set preprocess.resize: [width, height]"
        )
    size = frames[0]
    return Layout(size, [Placement(size[0], size[1], 0, 0) for _ in frames], False)


def _fit(keep_aspect: bool, size: Size, frame: Size) -> Placement:
    width, height = size
    w0, h0 = frame
    if not keep_aspect:
        return Placement(width, height, 0, 0)
    s = min(width / w0, height / h0)
    nw, nh = min(width, max(1, int(w0 * s + 0.5))), min(height, max(1, int(h0 * s + 0.5)))
    return Placement(nw, nh, (width - nw) // 2, (height - nh) // 2)


def limit_side(spec: PreprocessSpec, frame: Size) -> Size:
    w, h = frame
    limit = spec.limit_side_len
    if spec.limit_type == "max":
        ratio = limit / max(w, h) if max(w, h) > limit else 1.0
    else:
        ratio = limit / min(w, h) if min(w, h) < limit else 1.0
    m = spec.size_multiple
    # Python's round (half to even), as PaddleOCR rounds
    return max(m, round(int(w * ratio) / m) * m), max(m, round(int(h * ratio) / m) * m)


def _top_left(sizes: List[Size]) -> Layout:
    width, height = max(s[0] for s in sizes), max(s[1] for s in sizes)
    return Layout((width, height), [Placement(w, h, 0, 0) for w, h in sizes], True)


def text_line(spec: PreprocessSpec, height: int, frames: Sequence[Size]) -> Layout:
    widths = [max(1, math.ceil(height * w / h)) for w, h in frames]
    width = min(max(max(widths), spec.line_min_width), spec.line_max_width)
    return Layout((width, height), [Placement(min(w, width), height, 0, 0) for w in widths], True)
