"""Small REAL Paddle models exported with ``paddle.jit.save``, for tests of every backend.

Three networks with deterministic, non-trivial weights (numpy ``RandomState(seed)``, so the
same seed gives the same weights whatever Paddle's own initializers do):

- ``classifier``: x [N,3,H,W] float32 → conv+bn+relu+pool, conv+bn+relu, global pool, fc →
  softmax probabilities [N,10].
- ``detector``: x [N,3,H,W] → ``bbox`` [N*8, 6] float32 rows ``(label, score, x1, y1, x2, y2)`` in input
  pixels (PaddleDetection's layout; 8 boxes per image, x1<x2, y1<y2) and ``bbox_num`` [N] int32.
- ``segmenter``: x [N,3,H,W] → per-pixel class logits [N,4,H,W].

H and W are dynamic in every model (``InputSpec([None, 3, None, None])``); the classifier and
detector need H, W >= 4 (two stride-2 stages), the segmenter any size.

Formats: PIR (``inference.json`` + ``.pdiparams``, Paddle 3's default) is exported in this process;
legacy (``inference.pdmodel`` + ``.pdiparams``) in ONE subprocess with ``FLAGS_enable_pir_api=0``
because Paddle reads that flag at import. ``paddle.jit.save`` needs the layers' source, which is why
the networks live in this module and the subprocess runs ``python -m tests.support.models``.

Session fixtures (register with ``pytest_plugins = ["tests.support.models"]`` in the root conftest,
or import them into a conftest): ``paddle_models`` (dict name → ExportedModel) and
``onnx_classifier`` (the PIR classifier converted with paddle2onnx). Exports land in a fixed
directory under the session's base temp dir and are reused when already complete, so importing
the fixtures into several conftests does not export twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import pytest

from agent.manifest.models import ModelSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES = 10
BOXES_PER_IMAGE = 8
DET_CLASSES = 3
SEG_CLASSES = 4
KINDS = ("classifier", "detector", "segmenter")
_HEAD_GAIN = {"classifier": 12.0, "detector": 1.5, "segmenter": 1.0}
_DONE = ".exported"


@dataclass(frozen=True)
class ExportedModel:
    name: str
    kind: str  # classifier | detector | segmenter
    fmt: str  # pir | legacy | onnx
    model: Path
    params: Path

    def spec(self, **fields: Any) -> ModelSpec:
        """A manifest entry for this model; ``fields`` override the defaults (e.g. target="cpu")."""
        doc: Dict[str, Any] = {"name": self.name, "model": str(self.model), "backend": "paddle"}
        if self.fmt == "onnx":
            doc["backend"] = "tensorrt"
        else:
            doc["params"] = str(self.params)
        doc.update(fields)
        return ModelSpec.model_validate(doc)


def _layers() -> Dict[str, Any]:
    """The network classes, built lazily so importing this module does not import paddle."""
    import paddle
    import paddle.nn.functional as F
    from paddle import nn

    class TinyClassifier(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2D(3, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2D(8)
            self.conv2 = nn.Conv2D(8, 16, 3, stride=2, padding=1)
            self.bn2 = nn.BatchNorm2D(16)
            self.fc = nn.Linear(16, NUM_CLASSES)

        def forward(self, x: Any) -> Any:
            y = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
            y = F.relu(self.bn2(self.conv2(y)))
            y = paddle.flatten(F.adaptive_avg_pool2d(y, 1), 1)
            return F.softmax(self.fc(y), axis=-1)

    class TinyDetector(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2D(3, 8, 3, stride=2, padding=1)
            self.conv2 = nn.Conv2D(8, 16, 3, stride=2, padding=1)
            self.head = nn.Linear(16, BOXES_PER_IMAGE * (4 + DET_CLASSES))

        def forward(self, x: Any) -> Any:
            y = F.relu(self.conv2(F.relu(self.conv1(x))))
            y = paddle.flatten(F.adaptive_avg_pool2d(y, 1), 1)
            raw = paddle.reshape(self.head(y), [-1, BOXES_PER_IMAGE, 4 + DET_CLASSES])
            geo, logits = paddle.split(raw, [4, DET_CLASSES], axis=-1)
            # hardsigmoid and topk: sigmoid, exp and argmax fail to trace with FLAGS_enable_pir_api=0 (3.3.1)
            gx, gy, gw, gh = paddle.split(F.hardsigmoid(geo), 4, axis=-1)
            probs = F.softmax(logits, axis=-1)
            size = paddle.cast(paddle.shape(x), "float32")
            h, w = size[2], size[3]
            # centre in the middle half of the image, size at most 45 % of it: boxes stay inside
            cx = (gx * 0.5 + 0.25) * w
            cy = (gy * 0.5 + 0.25) * h
            bw = (gw * 0.4 + 0.05) * w
            bh = (gh * 0.4 + 0.05) * h
            score, index = paddle.topk(probs, 1, axis=-1)
            label = paddle.cast(index, "float32")
            rows = paddle.concat([label, score, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=-1)
            bbox = paddle.reshape(rows, [-1, 6])
            bbox_num = paddle.full([paddle.shape(x)[0]], BOXES_PER_IMAGE, dtype="int32")
            return bbox, bbox_num

    class TinySegmenter(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2D(3, 8, 3, padding=1)
            self.conv2 = nn.Conv2D(8, 8, 3, padding=1)
            self.cls = nn.Conv2D(8, SEG_CLASSES, 1)

        def forward(self, x: Any) -> Any:
            return self.cls(F.relu(self.conv2(F.relu(self.conv1(x)))))

    return {"classifier": TinyClassifier, "detector": TinyDetector, "segmenter": TinySegmenter}


def build_layer(kind: str, seed: int = 0) -> Any:
    """The network ``kind`` in eval mode with He-normal weights drawn from ``RandomState(seed)``."""
    layer = _layers()[kind]()
    rng = np.random.RandomState(seed)
    for name, param in sorted(layer.named_parameters()):
        shape = list(param.shape)
        if name.endswith("bias"):
            value = rng.normal(0.0, 0.1, shape)
        elif "bn" in name:  # batch-norm scale
            value = rng.uniform(0.5, 1.5, shape)
        else:
            # Paddle's Linear weight is [in, out], Conv2D's [out, in, kh, kw]; the heads get a gain
            # so that softmax outputs are peaked and differ between inputs
            fan_in, gain = (shape[0], _HEAD_GAIN[kind]) if len(shape) == 2 else (int(np.prod(shape[1:])), 1.0)
            value = rng.normal(0.0, gain * np.sqrt(2.0 / fan_in), shape)
        param.set_value(value.astype("float32"))
    for name, buf in sorted(layer.named_buffers()):
        shape = list(buf.shape)
        value = rng.uniform(0.5, 1.5, shape) if name.endswith("variance") else rng.normal(0.0, 0.1, shape)
        buf.set_value(value.astype("float32"))
    layer.eval()
    return layer


def _save(kind: str, out_dir: Path, seed: int) -> None:
    import paddle

    spec = [paddle.static.InputSpec([None, 3, None, None], "float32", "x")]
    paddle.jit.save(build_layer(kind, seed), str(out_dir / "inference"), input_spec=spec)


def _exported(name: str, kind: str, fmt: str, out_dir: Path) -> ExportedModel:
    suffix = ".json" if fmt == "pir" else ".pdmodel"
    return ExportedModel(name, kind, fmt, out_dir / f"inference{suffix}", out_dir / "inference.pdiparams")


def export_pir(kind: str, out_dir: Path, seed: int = 0, name: str = "") -> ExportedModel:
    """Export ``kind`` in this process (PIR must be on, Paddle 3's default)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _save(kind, out_dir, seed)
    model = _exported(name or kind, kind, "pir", out_dir)
    if not model.model.exists():
        raise RuntimeError(f"paddle.jit.save wrote no {model.model.name} into {out_dir}: is FLAGS_enable_pir_api off?")
    return model


def export_legacy(kinds: Sequence[str], root: Path, seed: int = 0) -> Dict[str, ExportedModel]:
    """Export each of ``kinds`` to ``root/<kind>/inference.pdmodel`` in one subprocess."""
    env = dict(os.environ, FLAGS_enable_pir_api="0")
    cmd = [sys.executable, "-m", "tests.support.models", str(root), str(seed), *kinds]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"legacy export failed ({done.returncode}):\n{done.stderr[-4000:]}")
    models = {k: _exported(f"{k}-legacy", k, "legacy", root / k) for k in kinds}
    missing = [str(m.model) for m in models.values() if not m.model.exists()]
    if missing:
        raise RuntimeError(f"legacy export wrote no .pdmodel: {missing}")
    return models


def export_onnx(model: ExportedModel, out_file: Path, opset: int = 13) -> ExportedModel:
    """Convert with the paddle2onnx CLI (installed in the venv next to this Python)."""
    tool = Path(sys.executable).with_name("paddle2onnx")
    cmd = [str(tool), "--model_dir", str(model.model.parent), "--model_filename", model.model.name,
           "--params_filename", model.params.name, "--save_file", str(out_file), "--opset_version", str(opset)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not out_file.exists():
        raise RuntimeError(f"paddle2onnx failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return ExportedModel(f"{model.name}-onnx", model.kind, "onnx", out_file, out_file)


def export_all(root: Path) -> Dict[str, ExportedModel]:
    """Every model the tests use: each kind in PIR and legacy format, plus a classifier with other weights."""
    models: Dict[str, ExportedModel] = {}
    for kind in KINDS:
        models[kind] = export_pir(kind, root / "pir" / kind)
    models["classifier-seed1"] = export_pir("classifier", root / "pir" / "classifier-seed1", seed=1,
                                            name="classifier-seed1")
    for kind, model in export_legacy(KINDS, root / "legacy").items():
        models[f"{kind}-legacy"] = model
    return models


def _reuse_or_export(root: Path) -> Dict[str, ExportedModel]:
    if (root / _DONE).exists():
        models = {k: _exported(k, k, "pir", root / "pir" / k) for k in KINDS}
        models["classifier-seed1"] = _exported("classifier-seed1", "classifier", "pir",
                                               root / "pir" / "classifier-seed1")
        models.update({f"{k}-legacy": _exported(f"{k}-legacy", k, "legacy", root / "legacy" / k) for k in KINDS})
        return models
    models = export_all(root)
    (root / _DONE).touch()
    return models


@pytest.fixture(scope="session")
def paddle_models(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, ExportedModel]:
    """name → model: classifier, detector, segmenter (PIR), the same with ``-legacy`` (.pdmodel),
    and classifier-seed1 (same network, other weights)."""
    return _reuse_or_export(tmp_path_factory.getbasetemp() / "paddle-models")


@pytest.fixture(scope="session")
def onnx_classifier(paddle_models: Dict[str, ExportedModel]) -> ExportedModel:
    """The PIR classifier converted to ONNX (opset 13) by paddle2onnx."""
    source = paddle_models["classifier"]
    out = source.model.parent.parent.parent / "onnx" / "classifier.onnx"
    if out.exists():
        return ExportedModel(f"{source.name}-onnx", source.kind, "onnx", out, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return export_onnx(source, out)


def random_images(shape: Sequence[int], count: int, seed: int = 0) -> List[np.ndarray]:
    """``count`` float32 NCHW arrays in [0, 1): stand-ins for preprocessed frames. Each gets its own
    per-channel brightness, so that the models' (globally pooled) outputs differ between images."""
    rng = np.random.RandomState(seed)
    dims = tuple(shape)
    out = []
    for _ in range(count):
        tint = rng.uniform(0.0, 0.5, (1, dims[1]) + (1,) * (len(dims) - 2))
        out.append((rng.random_sample(dims) * 0.5 + tint).astype("float32"))
    return out


if __name__ == "__main__":
    # The legacy-format exporter: python -m tests.support.models ROOT SEED KIND...
    _root, _seed, _kinds = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    for _kind in _kinds:
        (_root / _kind).mkdir(parents=True, exist_ok=True)
        _save(_kind, _root / _kind, _seed)
