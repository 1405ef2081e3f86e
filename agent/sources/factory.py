"""``open_source``: the one entry point pipelines use to turn a manifest ``source:`` into frames."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Optional

from agent.logs import event
from agent.manifest.models import SourceOptions
from agent.sources.backends import Platform
from agent.sources.base import Source
from agent.sources.camera import check_device, open_capture, plan_capture
from agent.sources.files import ImageSource, VideoSource
from agent.sources.resilient import ResilientSource
from agent.sources.uri import mask_uri, parse_uri

log = logging.getLogger(__name__)


def open_source(uri: str, options: SourceOptions, base_dir: Path, platform: Optional[Platform] = None) -> Source:
    """A source for ``uri``; relative paths start at ``base_dir`` (the manifest's folder).

    Files are checked now (missing file, empty glob, undecodable video raise ``SourceError``).
    Live sources are checked for what can never work here (no GStreamer for csi://, a camera
    device that does not exist) and then connect lazily in ``frames()``, retrying for as long
    as the source is open: a camera that is down at start-up is an outage, not a config error.
    """
    spec = parse_uri(uri, base_dir)
    if spec.kind in ("image", "glob", "directory"):
        return ImageSource(spec, options)
    if spec.kind == "video":
        return VideoSource(spec, options)
    plan = plan_capture(spec, options, platform or Platform.detect())
    if plan.device is not None:
        check_device(plan.device)
    event(log, logging.DEBUG, "source.plan", source=spec.display, backend=plan.backend, target=mask_uri(plan.target))
    return ResilientSource(partial(open_capture, plan), spec.display, options, plan.transform(options),
                           backend=plan.backend)
