"""Pre-processing (frames → model inputs) and post-processing (model outputs → JSON results).

``preprocess.Preprocessor`` and ``preprocess.calibration_feeds``; post-processors by type through
``make_postprocessor``; ``labels.load_labels``; ``meta.ImageMeta`` links the two sides.
"""

from __future__ import annotations

from agent.processing.base import PostProcessor
from agent.processing.meta import ImageMeta
from agent.processing.registry import POSTPROCESSORS, make_postprocessor

__all__ = ["POSTPROCESSORS", "ImageMeta", "PostProcessor", "make_postprocessor"]
