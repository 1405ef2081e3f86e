"""Small real ONNX models for the TensorRT backend tests, written with onnx.helper.

Shared by the unit tests (through the FAKE TensorRT) and the hardware tests (real
TensorRT on a Jetson), so both exercise the same graphs.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "x"
OUTPUT = "prob"
CHANNELS, SIZE, CLASSES = 3, 8, 5


def _weights(seed: int) -> List[onnx.TensorProto]:
    rng = np.random.default_rng(seed)
    return [
        numpy_helper.from_array(rng.normal(0, 0.5, (4, CHANNELS, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(0, 0.5, (4, CLASSES)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (CLASSES,)).astype(np.float32), "fc_b"),
    ]


def classifier(path: Path, batch: Optional[int] = None, qdq: bool = False, seed: int = 0, size: int = SIZE) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> MatMul -> Add -> Softmax; batch None = dynamic.

    ``size`` is the input's height and width; large sizes make buffers visible in device memory.

    ``qdq`` puts a QuantizeLinear/DequantizeLinear pair on the input: a pre-quantized
    (explicit-quantization) model that TensorRT builds in int8 without calibration.
    """
    first = INPUT
    nodes = []
    inits = _weights(seed)
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "q_scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "q_zero")]
        nodes += [helper.make_node("QuantizeLinear", [INPUT, "q_scale", "q_zero"], ["xq"], name="quant_x"),
                  helper.make_node("DequantizeLinear", ["xq", "q_scale", "q_zero"], ["xd"], name="dequant_x")]
        first = "xd"
    nodes += [
        helper.make_node("Conv", [first, "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c"], ["r"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], axis=1, name="flatten"),
        helper.make_node("MatMul", ["f", "fc_w"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "fc_b"], ["logits"], name="fc_bias"),
        helper.make_node("Softmax", ["logits"], [OUTPUT], axis=1, name="softmax"),
    ]
    dim = batch if batch is not None else "batch"
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [dim, CHANNELS, size, size])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [dim, CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def half_model(path: Path) -> Path:
    """A strongly typed fp16 model: Cast to fp16, Relu in fp16, Cast back (what TensorRT 11 builds as fp16)."""
    nodes = [
        helper.make_node("Cast", [INPUT], ["h"], to=TensorProto.FLOAT16, name="to_half"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu_half"),
        helper.make_node("Cast", ["hr"], [OUTPUT], to=TensorProto.FLOAT, name="to_float"),
    ]
    graph = helper.make_graph(
        nodes, "half",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, CHANNELS, SIZE, SIZE])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def sample(batch: int, seed: int = 1, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (batch, CHANNELS, size, size)).astype(np.float32)
