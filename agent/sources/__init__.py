"""Frame sources: files, videos, cameras and streams, opened by URI with ``open_source``."""

from __future__ import annotations

from agent.sources.base import Frame, Source
from agent.sources.factory import open_source
from agent.sources.uri import mask_uri

__all__ = ["Frame", "Source", "mask_uri", "open_source"]
