"""deploy/examples/: every example manifest validates against the models its header says how to get
(the PP-OCR wheels' files in the layout its copy commands make, and export_models.py's exports)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict

import pytest

from agent.manifest.load import load_manifest
from tests.support.ppocr import PaddleOcrModel, PpOcr

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


@pytest.fixture
def example_dir(tmp_path: Path, ppocr_models: PpOcr, example_models: Dict[str, PaddleOcrModel]) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    for model in (ppocr_models.v4_det, ppocr_models.v4_rec, ppocr_models.v4_cls, ppocr_models.v5_det,
                  ppocr_models.v5_rec):
        (models / model.model.parent.name).symlink_to(model.model.parent)
    (models / "ppocr_keys_v1.txt").symlink_to(ppocr_models.v4_dict)
    (models / "ppdet").symlink_to(example_models["detector"].model.parent)
    (models / "paddleclas").symlink_to(example_models["classifier"].model.parent)
    for manifest in EXAMPLES.glob("*.yaml"):
        shutil.copy(manifest, tmp_path / manifest.name)
    return tmp_path


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_manifest_validates(example_dir: Path, name: str) -> None:
    loaded = load_manifest(example_dir / name)
    assert loaded.manifest.pipelines, name


def test_there_is_an_example_per_model_family() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} >= {"ppocr.yaml", "paddledetection.yaml", "paddleclas.yaml"}
