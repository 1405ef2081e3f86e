"""Where each source image landed in the input tensor, so results map back to source pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageMeta:
    """One image of a batch. Coordinates are continuous pixel edges: source ``[0, width]`` maps
    onto input ``[pad_x, pad_x + resized_width]``, which is exactly what ``cv2.resize`` does."""

    width: int  # source image
    height: int
    input_width: int  # spatial size of the tensor fed to the model
    input_height: int
    resized_width: int  # the image content inside the tensor; the rest is letterbox padding
    resized_height: int
    pad_x: int  # left / top padding in input pixels
    pad_y: int
    # The model was fed ``scale_factor`` and, by PaddleDetection's convention, already divided its
    # boxes by it.
    scale_factor_fed: bool = False

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.height

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Input-pixel ``[k, 4]`` x1,y1,x2,y2 boxes → source pixels (float64, a new array),
        letterbox offset and resize undone, clipped to the source image."""
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float64)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], dtype=np.float64)
        out = (np.asarray(boxes, dtype=np.float64) - offset) / scale
        limit = np.array([self.width, self.height, self.width, self.height], dtype=np.float64)
        return np.clip(out, 0.0, limit, out=out)
