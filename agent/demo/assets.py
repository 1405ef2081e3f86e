"""Generated demo data: a small, really trained colour classifier, sample images and a video.

The classifier learns which of red/green/blue dominates a 64x64 image in a few seconds on a
CPU, so the demo's results are meaningful rather than noise from random weights. Export uses
``paddle.jit.save`` (PIR ``.json`` on Paddle 3, ``.pdmodel`` on Paddle 2), the same way a
user exports a model for Paddle Inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

LABELS = ("red", "green", "blue")
SIZE = 64


@dataclass(frozen=True)
class DemoAssets:
    model: Path
    params: Path
    images: Path  # directory of PNGs
    video: Path
    labels: Path


def synthetic_images(n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` BGR uint8 images (a noisy background with a coloured square) and the colour index."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, size=n)
    for i in range(n):
        x, y = rng.integers(0, SIZE // 2, size=2)
        side = int(rng.integers(SIZE // 3, SIZE // 2))
        bgr_channel = 2 - int(labels[i])  # label order is RGB, images are BGR
        images[i, y:y + side, x:x + side, bgr_channel] = rng.integers(180, 256)
    return images, labels


def to_model_input(images_bgr: np.ndarray) -> np.ndarray:
    """The preprocessing the manifest declares: BGR→RGB, scale 1/255, NCHW float32."""
    return np.ascontiguousarray(images_bgr[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def train_and_export(out_dir: Path, steps: int = 150, seed: int = 7) -> Tuple[Path, Path]:
    import paddle
    from paddle import nn

    paddle.seed(seed)
    net = nn.Sequential(
        nn.Conv2D(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2D(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(16, len(LABELS)), nn.Softmax(),
    )
    opt = paddle.optimizer.Adam(learning_rate=0.01, parameters=net.parameters())
    images, labels = synthetic_images(steps * 32, seed)
    for step in range(steps):
        batch = slice(step * 32, (step + 1) * 32)
        x = paddle.to_tensor(to_model_input(images[batch]))
        y = paddle.to_tensor(labels[batch].astype("int64"))
        loss = nn.functional.nll_loss(paddle.log(net(x) + 1e-7), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
    net.eval()
    prefix = out_dir / "inference"
    spec = [paddle.static.InputSpec([None, 3, SIZE, SIZE], "float32", "x")]
    paddle.jit.save(net, str(prefix), input_spec=spec)
    program = prefix.with_suffix(".json")
    if not program.exists():
        program = prefix.with_suffix(".pdmodel")
    return program, prefix.with_suffix(".pdiparams")


def write_images(out_dir: Path, n: int = 6, seed: int = 99) -> List[Path]:
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    images, _ = synthetic_images(n, seed)
    paths = []
    for i, image in enumerate(images):
        path = out_dir / f"sample_{i:02d}.png"
        cv2.imwrite(str(path), cv2.resize(image, (256, 256), interpolation=cv2.INTER_NEAREST))
        paths.append(path)
    return paths


def write_video(path: Path, frames: int = 60, fps: float = 15.0, seed: int = 5) -> Path:
    """An MJPG AVI (readable by every OpenCV build) of colour squares that change every 10 frames."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (320, 240))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    images, _ = synthetic_images(frames // 10 + 1, seed)
    for i in range(frames):
        writer.write(cv2.resize(images[i // 10], (320, 240), interpolation=cv2.INTER_NEAREST))
    writer.release()
    return path


def ensure_assets(root: Path) -> DemoAssets:
    """Create whatever is missing under ``root``; cheap when everything exists."""
    model_dir = root / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    programs = sorted(model_dir.glob("inference.json")) + sorted(model_dir.glob("inference.pdmodel"))
    params = model_dir / "inference.pdiparams"
    if not programs or not params.exists():
        program, params = train_and_export(model_dir)
    else:
        program = programs[0]
    labels = root / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    images = root / "images"
    if not any(images.glob("*.png")):
        write_images(images)
    video = root / "video.avi"
    if not video.exists():
        write_video(video)
    return DemoAssets(program, params, images, video, labels)
