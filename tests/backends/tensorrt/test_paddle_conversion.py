"""backend: tensorrt on a Paddle model: real paddle2onnx conversion of a real exported model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.errors import BuildError

pytestmark = pytest.mark.slow  # paddle2onnx imports Paddle in a child process (seconds)


@pytest.fixture(scope="module")
def paddle_model(tmp_path_factory):
    """A small classifier saved with paddle.jit.save, and its own output on a known input."""
    paddle = pytest.importorskip("paddle")
    paddle.seed(0)
    layer = paddle.nn.Sequential(
        paddle.nn.Conv2D(3, 4, 3, padding=1), paddle.nn.ReLU(), paddle.nn.AdaptiveAvgPool2D(1),
        paddle.nn.Flatten(), paddle.nn.Linear(4, 5), paddle.nn.Softmax(),
    )
    layer.eval()
    x = np.random.default_rng(3).uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    expected = layer(paddle.to_tensor(x)).numpy()
    prefix = tmp_path_factory.mktemp("paddle") / "inference"
    paddle.jit.save(layer, str(prefix), input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")])
    model = next(p for p in prefix.parent.iterdir() if p.suffix in (".json", ".pdmodel"))
    return model, prefix.with_suffix(".pdiparams"), x, expected


def test_paddle_model_is_converted_parsed_and_runs(rig, paddle_model):
    model, params, x, expected = paddle_model
    r = rig("10.3.0")
    spec = r.spec(model=model, params=str(params))
    entry = r.build(spec)
    assert r.progress[0].phase == "convert" and r.info.report["converted_from_paddle"] is True
    assert not (entry / ".onnx").exists()  # the converted ONNX is not kept in the entry
    predictor = r.backend.load(spec, "fp32", entry)
    name = predictor.inputs[0].name
    out = predictor.infer({name: x})
    np.testing.assert_allclose(next(iter(out.values())), expected, rtol=1e-4, atol=1e-6)


def test_conversion_failure_points_to_backend_paddle(rig, tmp_path):
    pytest.importorskip("paddle2onnx")
    model, params = tmp_path / "broken.pdmodel", tmp_path / "broken.pdiparams"
    model.write_bytes(b"not a paddle program")
    params.write_bytes(b"")
    r = rig("10.3.0")
    with pytest.raises(BuildError, match=r"paddle2onnx could not convert .*broken\.pdmodel.*use backend: paddle"):
        r.build(r.spec(model=Path(model), params=str(params)))
