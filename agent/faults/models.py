"""A real Paddle model that raises at run time: it accepts any image size when exported, but its
classifier layer only fits one size, so Paddle fails inside ``run()`` on any other.

That size is the build's warm-up frame (``SAMPLE_FRAME_SIZE``): a model without declared inputs is run
once at build time on it, so the model builds and fails only on the frames of other sizes."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from agent.demo.assets import LABELS, synthetic_images
from agent.processing.preprocess import SAMPLE_FRAME_SIZE


def export_fixed_size_classifier(out_dir: Path) -> Tuple[Path, Path]:
    """``inference.json``/``.pdmodel`` + ``.pdiparams`` of flatten -> linear(3*w*h, 3) -> softmax."""
    import paddle
    from paddle import nn

    width, height = SAMPLE_FRAME_SIZE
    prefix = out_dir / "inference"
    programs = [prefix.with_suffix(s) for s in (".json", ".pdmodel")]
    if not any(p.exists() for p in programs) or not prefix.with_suffix(".pdiparams").exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        paddle.seed(3)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * width * height, len(LABELS)), nn.Softmax())
        net.eval()
        paddle.jit.save(net, str(prefix), input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32", "x")])
    program = next(p for p in programs if p.exists())
    return program, prefix.with_suffix(".pdiparams")


def write_mixed_sizes(out_dir: Path, pairs: int = 3, bad_size: int = 48) -> List[Path]:
    """``pairs`` times: one PNG of the size the model runs on, then one ``bad_size`` PNG it raises on."""
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    images, _ = synthetic_images(2 * pairs, seed=21)
    paths = []
    for i, image in enumerate(images):
        fits = i % 2 == 0
        size = SAMPLE_FRAME_SIZE if fits else (bad_size, bad_size)
        image = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)
        path = out_dir / f"frame_{i:02d}_{'ok' if fits else 'bad'}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths
