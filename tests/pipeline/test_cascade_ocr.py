"""OCR as users deploy it: a manifest with REAL PP-OCR models (PyPI wheels, tests/support/ppocr.py), a
pipeline whose text detector's regions cascade through the direction classifier into the recognizer,
run by the real runtime (prepare → pipelines → post thread → cascade)."""

from __future__ import annotations

import difflib
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytest

from agent.backends.registry import make_backends
from agent.engines.build import ModelPreparer
from agent.engines.cache import EngineCache
from agent.engines.device import detect_device
from agent.manifest.load import load_manifest
from agent.manifest.models import PipelineSpec
from agent.pipeline.runner import FrameResult
from agent.processing.preprocess import calibration_feeds, sample_feed
from agent.service.runtime import ManifestRuntime
from agent.sources.factory import open_source
from agent.sources.files import list_images
from tests.support.ppocr import PpOcr, read_image

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LINES = ["Jetson-Orin-Nano-8GB", "EDGE_AGENT:2026", "Camera-07/Door"]
UPSIDE_DOWN = 2  # LINES[2] is rendered turned 180 degrees


def render(path: Path) -> Path:
    """White page, black DejaVu Sans at 36 px, one line per row; one line upside down."""
    if not FONT.exists():
        pytest.skip(f"{FONT} missing: apt-get install fonts-dejavu-core (make setup does)")
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(FONT), 36)
    page = Image.new("RGB", (640, 300), "white")
    for row, text in enumerate(LINES):
        line = Image.new("RGB", (560, 60), "white")
        ImageDraw.Draw(line).text((10, 8), text, fill="black", font=font)
        page.paste(line.rotate(180) if row == UPSIDE_DOWN else line, (40, 20 + row * 90))
    page.save(path)
    return path


def manifest(tmp: Path, m: PpOcr, source: Path, version: str, det: str = "", with_cls: bool = True) -> Path:
    det_model, rec_model = (m.v4_det, m.v4_rec) if version == "v4" else (m.v5_det, m.v5_rec)
    dictionary = m.v4_dict if version == "v4" else m.v5_rec_yml
    cls_stage = "{model: direction, rotate_label: '180', then: [{model: rec}]}"
    stages = cls_stage if with_cls else "{model: rec}"
    text = f"""
version: 1
x-ppocr: &ppocr {{color: bgr, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}}
models:
  - name: det
    model: {det_model.model}
    params: {det_model.params}
    target: cpu
    preprocess: {{color: bgr, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]{det}}}
    postprocess: {{type: text_detection, score_threshold: 0.6}}
  - name: direction
    model: {m.v4_cls.model}
    params: {m.v4_cls.params}
    target: cpu
    preprocess: {{<<: *ppocr, resize_rule: text_line, line_min_width: 192, line_max_width: 192}}
    postprocess: {{type: classification, labels: ['0', '180'], top_k: 1}}
  - name: rec
    model: {rec_model.model}
    params: {rec_model.params}
    target: cpu
    preprocess: *ppocr
    postprocess: {{type: text_recognition, labels_file: {dictionary}}}
pipelines:
  - name: ocr
    source: {source}
    model: det
    queue: {{policy: block}}
    then: [{stages}]
"""
    path = tmp / "manifest.yaml"
    path.write_text(text)
    return path


def run(tmp: Path, manifest_path: Path, health: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Every result the pipeline published, after its finite source ended (and the models' health)."""
    loaded = load_manifest(manifest_path)
    preparer = ModelPreparer(EngineCache(tmp / "cache"), make_backends(tmp, sample_feed), detect_device(),
                             calibration_feeds, list_images)
    results: List[Dict[str, Any]] = []
    lock = threading.Lock()

    def make_sink(_: PipelineSpec) -> Any:
        def sink(batch: Sequence[FrameResult]) -> None:
            with lock:
                results.extend(r.outputs for r in batch)
        return sink

    runtime = ManifestRuntime.prepare(loaded, preparer, make_sink, open_source)
    assert runtime.healthy() is None, runtime.healthy()
    runtime.start()
    deadline = time.monotonic() + 120
    while not runtime.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    if health is not None:
        health.update(runtime.model_health())
    runtime.close()
    assert runtime.pipelines["ocr"].stats.errors == 0, runtime.pipelines["ocr"].stats.last_error
    return results


@pytest.mark.parametrize("version", ["v4", "v5"])
def test_rendered_text_is_read_exactly_through_det_direction_rec(tmp_path: Path, ppocr_models: PpOcr,
                                                                 version: str) -> None:
    image = render(tmp_path / "lines.png")
    health: Dict[str, Any] = {}
    (result,) = run(tmp_path, manifest(tmp_path, ppocr_models, image, version), health)
    healed = [n for n in health["det"].notes if n.startswith("oneDNN disabled: ")]
    assert len(healed) == (1 if version == "v5" else 0)  # PP-OCRv5's detector cannot run under oneDNN
    assert [health[m].inferences for m in ("det", "direction", "rec")] == [1, len(LINES), len(LINES)]
    regions = result["regions"]
    assert [r["rec"]["text"] for r in regions] == LINES
    for row, region in enumerate(regions):
        top = region["direction"]["classes"][0]
        assert top["label"] == ("180" if row == UPSIDE_DOWN else "0"), region
        assert region["rec"]["score"] > 0.9
        # in source pixels: each line's box lies in its 90-pixel row band of the 640 x 300 page
        assert 20 + row * 90 - 10 <= region["y1"] < region["y2"] <= 20 + row * 90 + 70
        assert len(region["quad"]) == 4


def test_a_scanned_page_agrees_with_rapidocr_on_the_same_models(tmp_path: Path, ppocr_models: PpOcr,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # RapidOCR's defaults for PP-OCRv4 (its config.yaml): short side at least 736, box_thresh 0.5,
    # unclip_ratio 1.6, dilation on; no direction classifier needed for an upright page
    det = ", limit_side_len: 736, limit_type: min"
    path = manifest(tmp_path, ppocr_models, ppocr_models.page, "v4", det=det, with_cls=False)
    path.write_text(path.read_text().replace("type: text_detection, score_threshold: 0.6",
                                             "type: text_detection, score_threshold: 0.5, unclip_ratio: 1.6, "
                                             "dilate: true")
                    .replace("mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]",
                             "mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]"))
    (result,) = run(tmp_path, path)
    ours = result["regions"]

    monkeypatch.syspath_prepend(str(ppocr_models.rapidocr_root))
    from rapidocr_paddle import RapidOCR  # the peer, as its package ships it

    peer, _ = RapidOCR()(read_image(ppocr_models.page))
    assert peer and len(ours) == len(peer)
    for quad, text, _score in peer:
        box = np.asarray(quad)
        centre = box.mean(axis=0)
        mine = min(ours, key=lambda r: float(np.linalg.norm(np.asarray(r["quad"]).mean(axis=0) - centre)))
        assert np.abs(np.asarray(mine["quad"]) - box).max() < 3.0, (mine, quad)
        similarity = difflib.SequenceMatcher(None, mine["rec"]["text"], text).ratio()
        assert similarity >= 0.95, (mine["rec"]["text"], text)
    sys.modules.pop("rapidocr_paddle", None)
