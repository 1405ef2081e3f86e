"""ModelPreparer with the real Paddle backend, cache and gate: hits, precision fallback on a
failing gate, and gate results stored in the cache entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest

from agent.backends.paddle.backend import PaddleBackend
from agent.engines.build import ModelPreparer, calibration_feeds_for, calibration_images
from agent.engines.cache import EngineCache
from agent.engines.device import detect_device
from agent.errors import BuildError
from agent.manifest.models import ModelSpec
from agent.processing.preprocess import calibration_feeds
from agent.progress import Progress
from agent.sources.files import list_images
from tests.support.models import ExportedModel


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    import cv2
    import numpy as np

    folder = tmp_path / "golden"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        cv2.imwrite(str(folder / f"g{i}.png"), rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    return folder


def preparer(tmp_path: Path) -> ModelPreparer:
    return ModelPreparer(EngineCache(tmp_path / "cache"), {"paddle": PaddleBackend()}, detect_device(),
                         calibration_feeds, list_images)


def spec(model: ExportedModel, golden: Path, **fields: Any) -> ModelSpec:
    doc: Dict[str, Any] = {"target": "cpu", "preprocess": {"resize": [32, 32]},
                           "validation": {"inputs": str(golden), "metric": "cosine"}}
    doc.update(fields)
    return model.spec(**doc)


def test_a_failing_gate_falls_back_to_the_next_precision_and_records_why(
        tmp_path: Path, golden: Path, paddle_models: Dict[str, ExportedModel]) -> None:
    events: List[Progress] = []
    prep = preparer(tmp_path)
    # A cosine similarity can never exceed 1: the fp16 candidate must fail, fp32 passes by default.
    s = spec(paddle_models["classifier"], golden, precision="fp16", precision_fallback=True,
             validation={"inputs": str(golden), "metric": "cosine", "tolerance": {"fp16": 1.5}})
    prepared = prep.prepare(s, progress=events.append)
    assert prepared.precision == "fp32"
    assert [(a.precision, a.outcome) for a in prepared.attempts] == [("fp16", "gate_failed"), ("fp32", "built")]
    assert "accuracy gate failed at fp16" in prepared.attempts[0].detail
    gate = prepared.entry.report["gate"]
    assert gate["passed"] and gate["metric"] == "cosine" and gate["value"] > 0.999
    assert {e.phase for e in events} >= {"build", "gate"}

    # The failed fp16 attempt left nothing in the cache; the second prepare is a hit at fp32.
    again = prep.prepare(s)
    assert again.hit and again.precision == "fp32"
    assert [e.precision for e in prep.cache.entries()] == ["fp32"]


def test_without_fallback_a_failing_gate_is_a_build_error_with_the_numbers(
        tmp_path: Path, golden: Path, paddle_models: Dict[str, ExportedModel]) -> None:
    s = spec(paddle_models["classifier"], golden,
             validation={"inputs": str(golden), "metric": "cosine", "tolerance": {"fp32": 1.5}})
    with pytest.raises(BuildError, match=r"no precision passed .*cosine=.*threshold 1\.5"):
        preparer(tmp_path).prepare(s)
    assert EngineCache(tmp_path / "cache").entries() == []


def test_a_different_model_file_with_the_same_name_is_a_new_key(
        tmp_path: Path, golden: Path, paddle_models: Dict[str, ExportedModel]) -> None:
    prep = preparer(tmp_path)
    a = prep.prepare(spec(paddle_models["classifier"], golden), load=False)
    b = prep.prepare(spec(paddle_models["classifier-seed1"], golden, name="classifier"), load=False)
    assert a.key != b.key and not b.hit
    assert a.key.split("-")[:3] == b.key.split("-")[:3]  # same readable prefix, different weights hash


def test_calibration_images_are_listed_once_when_a_build_asks_with_one_error_text(tmp_path: Path) -> None:
    spec = ModelSpec.model_validate({"name": "m", "model": str(tmp_path / "m.onnx"), "backend": "tensorrt",
                                     "precision": "int8", "calibration": {"images": "*.png", "count": 2}})
    seen: Dict[str, Any] = {}
    listed = [Path("a.png"), Path("b.png"), Path("c.png")]

    def factory(spec: ModelSpec, inputs: Any, files: Any) -> Any:
        seen["files"] = list(files)
        return iter([])

    def lister(pattern: str) -> List[Path]:
        seen["pattern"] = pattern
        return listed

    feeds = calibration_feeds_for(spec, factory, lister)
    assert seen == {}, "nothing is listed before a build calibrates"
    list(feeds([]))
    assert seen == {"pattern": "*.png", "files": listed[:2]}
    assert calibration_images(spec, lister) == listed[:2]  # what the fingerprint hashes
    with pytest.raises(BuildError, match=r"calibration\.images matched no images: \*\.png"):
        calibration_feeds_for(spec, factory, lambda pattern: [])([])
    with pytest.raises(BuildError, match="int8 calibration needs calibration images"):
        calibration_images(spec.model_copy(update={"calibration": None}), lister)
