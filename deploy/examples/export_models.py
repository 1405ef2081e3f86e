"""Export the example models with ``paddle.jit.save`` (random, seeded weights: the structure and the
input/output formats are real, the answers are not).

    python deploy/examples/export_models.py detector   OUT_DIR   # PaddleDetection-format detector
    python deploy/examples/export_models.py classifier OUT_DIR   # PaddleClas-style MobileNetV3 classifier

``detector``: a small anchor-free detector in PicoDet's shape (conv backbone, two-level feature
pyramid, a shared head with per-class sigmoid scores and left/top/right/bottom distances per
point), exported the way PaddleDetection exports: inputs ``image`` [N, 3, H, W], ``im_shape`` and
``scale_factor`` [N, 2]; boxes divided by ``scale_factor`` (so in source pixels) and clipped to the
source image; PaddleDetection's own NMS operator (``multiclass_nms3``) gives ``[M, 6]`` rows
(class, score, x1, y1, x2, y2) and the per-image count [N]. The ``paddledet`` package itself does
not install beside Paddle 3 (it pins numpy < 1.24 and ships no configs in its wheel), so its
architecture is not used here; a model exported by PaddleDetection has the same inputs and outputs.

``classifier``: ``paddle.vision.models.mobilenet_v3_small`` (the MobileNetV3 of PaddleClas' model zoo)
with a softmax, input ``x`` [N, 3, 224, 224]: 1000 ImageNet-style classes.

Writes ``OUT_DIR/inference.json`` + ``inference.pdiparams`` (Paddle 3's PIR format).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

NUM_CLASSES = 4
STRIDES = (8, 16)
SEED = 7


def _detector() -> Any:
    import paddle
    import paddle.nn.functional as F
    from paddle import _C_ops, nn

    def conv(cin: int, cout: int, stride: int) -> nn.Layer:
        return nn.Sequential(nn.Conv2D(cin, cout, 3, stride=stride, padding=1, bias_attr=False),
                             nn.BatchNorm2D(cout), nn.ReLU())

    class PicoStyleDetector(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(conv(3, 16, 2), conv(16, 24, 2))  # stride 4
            self.c3 = conv(24, 32, 2)  # stride 8
            self.c4 = conv(32, 48, 2)  # stride 16
            self.lateral3 = nn.Conv2D(32, 32, 1)
            self.lateral4 = nn.Conv2D(48, 32, 1)
            self.head = conv(32, 32, 1)
            self.cls = nn.Conv2D(32, NUM_CLASSES, 1)
            self.reg = nn.Conv2D(32, 4, 1)

        def _level(self, feature: Any, stride: int) -> Any:
            f = self.head(feature)
            scores = F.sigmoid(self.cls(f)).flatten(2)  # [N, C, P]
            dist = F.relu(self.reg(f)).flatten(2).transpose([0, 2, 1]) * float(stride * 4)  # [N, P, 4]
            h, w = paddle.shape(f)[2], paddle.shape(f)[3]
            ys, xs = paddle.meshgrid(paddle.arange(h, dtype="float32"), paddle.arange(w, dtype="float32"))
            cx = ((xs.flatten() + 0.5) * stride).unsqueeze(0).unsqueeze(-1)
            cy = ((ys.flatten() + 0.5) * stride).unsqueeze(0).unsqueeze(-1)
            boxes = paddle.concat([cx - dist[:, :, 0:1], cy - dist[:, :, 1:2], cx + dist[:, :, 2:3],
                                   cy + dist[:, :, 3:4]], axis=-1)
            return boxes, scores

        def forward(self, image: Any, im_shape: Any, scale_factor: Any) -> Any:
            c3 = self.c3(self.stem(image))
            c4 = self.c4(c3)
            p4 = self.lateral4(c4)
            p3 = self.lateral3(c3) + F.interpolate(p4, size=paddle.shape(c3)[2:], mode="nearest")
            b3, s3 = self._level(p3, STRIDES[0])
            b4, s4 = self._level(p4, STRIDES[1])
            boxes = paddle.concat([b3, b4], axis=1)
            scores = paddle.concat([s3, s4], axis=2)
            # PaddleDetection's convention: boxes back to the source image, clipped to it
            sf = paddle.concat([scale_factor[:, 1:2], scale_factor[:, 0:1]] * 2, axis=-1).unsqueeze(1)
            origin = im_shape / scale_factor
            limit = paddle.concat([origin[:, 1:2], origin[:, 0:1]] * 2, axis=-1).unsqueeze(1)
            boxes = paddle.maximum(paddle.minimum(boxes / sf, limit), paddle.zeros_like(boxes))
            out, _, count = _C_ops.multiclass_nms3(boxes, scores, None, 0.05, 200, 20, 0.5, True, 1.0, -1, False)
            return out, count

    return PicoStyleDetector()


def _classifier() -> Any:
    import paddle
    import paddle.nn.functional as F
    from paddle import nn

    class Classifier(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.net = paddle.vision.models.mobilenet_v3_small(num_classes=1000)

        def forward(self, x: Any) -> Any:
            return F.softmax(self.net(x), axis=-1)

    return Classifier()


def export(kind: str, out: Path) -> Path:
    import paddle
    from paddle.static import InputSpec

    paddle.seed(SEED)
    layer = _detector() if kind == "detector" else _classifier()
    rng = np.random.RandomState(SEED)
    for _, param in sorted(layer.named_parameters()):
        if len(param.shape) > 1:  # He-normal weights: activations stay in range through the layers
            fan_in = int(np.prod(param.shape[1:]))
            param.set_value(rng.normal(0.0, np.sqrt(2.0 / fan_in), param.shape).astype("float32"))
    layer.eval()
    if kind == "detector":
        spec = [InputSpec([None, 3, None, None], "float32", "image"), InputSpec([None, 2], "float32", "im_shape"),
                InputSpec([None, 2], "float32", "scale_factor")]
    else:
        spec = [InputSpec([None, 3, 224, 224], "float32", "x")]
    out.mkdir(parents=True, exist_ok=True)
    paddle.jit.save(layer, str(out / "inference"), input_spec=spec)
    return out / "inference.json"


def main(argv: Any) -> int:
    if len(argv) != 3 or argv[1] not in ("detector", "classifier"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 64
    print(export(argv[1], Path(argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
