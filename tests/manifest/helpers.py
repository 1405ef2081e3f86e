"""A small, valid manifest tree on disk (files with a few bytes: the loader never parses model files)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Dict

PROBLEM_LINE = re.compile(r"^.+:(\d+|\?): \S.*: .+$")

MANIFEST = textwrap.dedent("""\
    version: 3
    x-trt: &trt
      workspace_size: 268435456
      max_batch_size: 4
    models:
      - name: classifier
        model: models/cls.pdmodel
        params: models/cls.pdiparams
        precision: fp16
        tensorrt:
          <<: *trt
          min_subgraph_size: 5
        inputs:
          - name: x
            min: [1, 3, 224, 224]
            opt: [2, 3, 224, 224]
            max: [4, 3, 224, 224]
        validation:
          inputs: golden/*.jpg
          metric: top1
        postprocess:
          type: classification
          labels_file: models/labels.txt
      - name: detector
        model: models/det.onnx
        backend: tensorrt
        target: dla:0
        precision: int8
        tensorrt: *trt
        calibration:
          images: calib/
          count: 2
        inputs:
          - name: images
            shape: [1, 3, 640, 640]
        postprocess:
          type: detection
          labels: [person, car]
    pipelines:
      - name: cam
        source: rtsp://user:secret@camera.local/stream
        model: detector
      - name: clips
        source: videos/clip.mp4
        model: classifier
        options: {loop: true}
      - name: frames
        source: file://frames/*.png
        model: classifier
      - name: usb
        source: /dev/video0
        model: detector
      - name: gst
        source: videotestsrc ! videoconvert ! appsink
        model: detector
    """)

FILES: Dict[str, bytes] = {
    "models/cls.pdmodel": b"paddle program",
    "models/cls.pdiparams": b"paddle weights",
    "models/det.onnx": b"onnx graph",
    "models/labels.txt": b"cat\ndog\n",
    "golden/a.jpg": b"jpeg",
    "calib/b.jpg": b"jpeg",
    "videos/clip.mp4": b"mp4",
}


def make_tree(root: Path, manifest: str = MANIFEST, name: str = "manifest.yaml") -> Path:
    """Write the model files under ``root`` and the manifest text; returns the manifest path."""
    for rel, data in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    path = root / name
    path.write_text(manifest, encoding="utf-8")
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing ``needle``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[occurrence - 1]
