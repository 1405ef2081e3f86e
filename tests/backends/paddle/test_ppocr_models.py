"""REAL PP-OCR models from PyPI wheels (tests/support/ppocr.py) through the preparer: the build runs
every model once without declared inputs, and heals itself when oneDNN cannot run a model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from agent.backends.paddle.backend import BuildRecord, PaddleBackend
from agent.engines.build import ModelPreparer, PreparedModel
from agent.engines.cache import EngineCache
from agent.engines.device import detect_device
from agent.errors import BuildError
from agent.manifest.models import ModelSpec
from agent.processing.preprocess import Preprocessor, calibration_feeds, sample_feed
from agent.sources.files import list_images
from tests.support.ppocr import PaddleOcrModel, PpOcr, read_image, run_paddle

DET_PRE = {"color": "bgr", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def prepare(tmp_path: Path, model: PaddleOcrModel, **fields: Any) -> PreparedModel:
    backend = PaddleBackend(sample_feed=sample_feed)
    prep = ModelPreparer(EngineCache(tmp_path / "cache"), {"paddle": backend}, detect_device(), calibration_feeds,
                         list_images)
    return prep.prepare(spec(model, **fields))


def spec(model: PaddleOcrModel, **fields: Any) -> ModelSpec:
    doc: Dict[str, Any] = {"name": "det", "model": str(model.model), "params": str(model.params),
                           "preprocess": DET_PRE, "postprocess": {"type": "text_detection"}}
    doc.update(fields)
    return ModelSpec.model_validate(doc)


def page_feed(prepared: PreparedModel, page: Path) -> Dict[str, np.ndarray]:
    assert prepared.predictor is not None
    feeds, _ = Preprocessor(prepared.spec.preprocess, prepared.predictor.inputs)([read_image(page)])
    return {k: v.copy() for k, v in feeds.items()}


def test_v4_detector_without_declared_inputs_runs_at_build_and_matches_paddle(
        tmp_path: Path, ppocr_models: PpOcr) -> None:
    prepared = prepare(tmp_path, ppocr_models.v4_det, target="cpu")
    # the VGA sample frame through the limit_side rule (960, max): 640 x 480 stays, both multiples of 32
    assert prepared.report["warmup"] == [{"x": [1, 3, 480, 640]}]
    feeds = page_feed(prepared, ppocr_models.page)
    assert feeds["x"].shape == (1, 3, 192, 384)
    assert prepared.predictor is not None
    got = prepared.predictor.infer(feeds)["sigmoid_0.tmp_0"]
    (expected,) = run_paddle(ppocr_models.v4_det, feeds, mkldnn=True)
    assert got.shape == expected.shape == (1, 1, 192, 384)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_v5_detector_with_default_settings_disables_onednn_and_matches_paddle_without_it(
        tmp_path: Path, ppocr_models: PpOcr, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        prepared = prepare(tmp_path, ppocr_models.v5_det)  # target gpu: CPU fallback here, oneDNN on
    notes = prepared.placement.notes
    healed = [n for n in notes if n.startswith("oneDNN disabled: ")]
    assert len(healed) == 1 and "ConvertPirAttribute2RuntimeAttribute" in healed[0], notes
    assert any(r.getMessage() == "paddle.acceleration_fallback" for r in caplog.records)
    record = BuildRecord.read(prepared.entry.path)
    assert record.mkldnn is False and record.ir_optim is True
    assert prepared.entry.report["placement"]["notes"] == notes  # in the cache entry, so a hit reports it too

    feeds = page_feed(prepared, ppocr_models.page)
    assert prepared.predictor is not None
    got = prepared.predictor.infer(feeds)["fetch_name_0"]
    (expected,) = run_paddle(ppocr_models.v5_det, feeds, mkldnn=False)
    np.testing.assert_allclose(got, expected, atol=1e-5)

    again = prepare(tmp_path, ppocr_models.v5_det)
    assert again.hit and again.placement.notes == notes


def test_require_target_turns_the_fallback_off(tmp_path: Path, ppocr_models: PpOcr) -> None:
    with pytest.raises(BuildError, match="require_target is set, so the build does not retry with oneDNN disabled"):
        prepare(tmp_path, ppocr_models.v5_det, target="cpu", require_target=True)


def test_mkldnn_off_in_the_manifest_needs_no_fallback(tmp_path: Path, ppocr_models: PpOcr) -> None:
    prepared = prepare(tmp_path, ppocr_models.v5_det, target="cpu", cpu={"mkldnn": False})
    assert prepared.placement.notes == []
    assert prepared.report["warmup"] == [{"x": [1, 3, 480, 640]}]


def test_the_chain_ends_without_ir_optimisation_and_load_repeats_it(tmp_path: Path, paddle_models: Any) -> None:
    from paddle.inference import create_predictor

    def no_ir_passes(config: Any) -> Any:  # a model Paddle's graph passes break, as some exports do
        if config.ir_optim():
            raise RuntimeError("(InvalidArgument) a pass broke this program")
        return create_predictor(config)

    backend = PaddleBackend(sample_feed=sample_feed, create_predictor=no_ir_passes)
    prep = ModelPreparer(EngineCache(tmp_path / "cache"), {"paddle": backend}, detect_device(), calibration_feeds,
                         list_images)
    model = paddle_models["classifier"]
    prepared = prep.prepare(ModelSpec.model_validate({
        "name": "cls", "model": str(model.model), "params": str(model.params), "target": "cpu",
        "preprocess": {"resize": [32, 32]}}))
    notes = prepared.placement.notes
    assert [n.split(":")[0] for n in notes] == ["oneDNN disabled", "IR optimisation disabled"]
    assert "a pass broke this program" in notes[1]
    record = BuildRecord.read(prepared.entry.path)
    assert (record.mkldnn, record.ir_optim) == (False, False)
    assert prepared.predictor is not None  # loaded from the entry with the recorded settings
    assert prepared.predictor.infer(sample_feed(prepared.spec, prepared.predictor.inputs))
