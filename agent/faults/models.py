"""A real Paddle model that raises at run time: it accepts any image size when exported, but its
classifier layer only fits 64x64 inputs, so Paddle fails inside ``run()`` on any other size."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from agent.demo.assets import LABELS, SIZE, synthetic_images


def export_fixed_size_classifier(out_dir: Path) -> Tuple[Path, Path]:
    """``inference.json``/``.pdmodel`` + ``.pdiparams`` of flatten -> linear(3*64*64, 3) -> softmax."""
    import paddle
    from paddle import nn

    prefix = out_dir / "inference"
    programs = [prefix.with_suffix(s) for s in (".json", ".pdmodel")]
    if not any(p.exists() for p in programs) or not prefix.with_suffix(".pdiparams").exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        paddle.seed(3)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, len(LABELS)), nn.Softmax())
        net.eval()
        paddle.jit.save(net, str(prefix), input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32", "x")])
    program = next(p for p in programs if p.exists())
    return program, prefix.with_suffix(".pdiparams")


def write_mixed_sizes(out_dir: Path, pairs: int = 3, bad_size: int = 48) -> List[Path]:
    """``pairs`` times: one 64x64 PNG the model runs on, then one ``bad_size`` PNG it raises on."""
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    images, _ = synthetic_images(2 * pairs, seed=21)
    paths = []
    for i, image in enumerate(images):
        fits = i % 2 == 0
        if not fits:
            image = cv2.resize(image, (bad_size, bad_size), interpolation=cv2.INTER_NEAREST)
        path = out_dir / f"frame_{i:02d}_{'ok' if fits else 'bad'}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths
