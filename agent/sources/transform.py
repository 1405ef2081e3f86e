"""What capture does to every admitted frame: resize, flip/rotate, and BGR with 3 channels.

Flip and rotate compose into one of the eight orientations ``nvvidconv flip-method``
numbers, so a CSI camera does it in hardware and every other source does the same
transform with at most two OpenCV calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from agent.manifest.models import SourceOptions

# (flip, clockwise rotation) -> nvvidconv flip-method, with flip applied first:
# 0 identity, 1 counterclockwise 90, 2 rotate 180, 3 clockwise 90, 4 horizontal flip,
# 5 upper-right diagonal (anti-transpose), 6 vertical flip, 7 upper-left diagonal (transpose).
_FLIP_METHOD: Dict[Tuple[str, int], int] = {
    ("none", 0): 0, ("none", 90): 3, ("none", 180): 2, ("none", 270): 1,
    ("horizontal", 0): 4, ("horizontal", 90): 5, ("horizontal", 180): 6, ("horizontal", 270): 7,
    ("vertical", 0): 6, ("vertical", 90): 7, ("vertical", 180): 4, ("vertical", 270): 5,
    ("both", 0): 2, ("both", 90): 1, ("both", 180): 0, ("both", 270): 3,
}

_APPLY: Dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
    2: lambda im: cv2.rotate(im, cv2.ROTATE_180),
    3: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
    4: lambda im: cv2.flip(im, 1),
    5: lambda im: cv2.flip(cv2.transpose(im), -1),
    6: lambda im: cv2.flip(im, 0),
    7: lambda im: cv2.transpose(im),
}


def flip_method(flip: str, rotate: int) -> int:
    """The ``nvvidconv flip-method`` equal to flipping by ``flip`` then rotating ``rotate`` degrees clockwise."""
    return _FLIP_METHOD[(flip, rotate)]


def orient(image: np.ndarray, method: int) -> np.ndarray:
    """Apply an ``nvvidconv flip-method`` orientation with OpenCV."""
    return image if method == 0 else _APPLY[method](image)


@dataclass(frozen=True)
class FrameTransform:
    """Resize to the capture size (``width``/``height``; one alone keeps the aspect ratio),
    then orient. Sources whose device already did either pass ``resize=False``/``orient=False``."""

    width: Optional[int] = None
    height: Optional[int] = None
    method: int = 0

    @classmethod
    def from_options(cls, options: SourceOptions, resize: bool = True, orient: bool = True) -> FrameTransform:
        return cls(
            width=options.width if resize else None,
            height=options.height if resize else None,
            method=flip_method(options.flip, options.rotate) if orient else 0,
        )

    def apply(self, image: np.ndarray) -> np.ndarray:
        image = _bgr(image)
        size = self._size(image.shape[1], image.shape[0])
        if size is not None:
            shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return orient(image, self.method)

    def _size(self, w: int, h: int) -> Optional[Tuple[int, int]]:
        if self.width is None and self.height is None:
            return None
        width = self.width or max(1, round(w * (self.height or h) / h))
        height = self.height or max(1, round(h * width / w))
        return None if (width, height) == (w, h) else (width, height)


def _bgr(image: np.ndarray) -> np.ndarray:
    # Frames must be H x W x 3 BGR; GStreamer pipelines and odd files can yield grey or BGRA.
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image
