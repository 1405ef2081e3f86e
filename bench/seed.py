"""The seed's example (docs: "Using the Paddle-TensorRT Repository for Inference"), as a user adapts it.

``create_predictor`` and ``run`` follow the seed line by line. The adaptations: the model paths and
thread count are arguments; on a CPU-only machine the two GPU calls are replaced by
``set_cpu_math_library_num_threads`` (oneDNN is on by default in a fresh ``Config``), because
``enable_tensorrt_engine`` raises on a CPU build; and ``use_static=True`` with a cache directory so
that a Jetson does not rebuild the TensorRT engine on every benchmark run. The limit and the peer
both create their predictor here, so they run exactly the same Paddle configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")


def create_predictor(model: Path, params: Path, threads: int, device: str = "cpu", precision: str = "fp32",
                     cache_dir: Optional[Path] = None) -> Any:
    import paddle.inference as paddle_infer

    config = paddle_infer.Config(str(model), str(params))
    config.enable_memory_optim()
    if device == "gpu":
        # Only written for Jetson (no GPU here): the seed's two calls, in the seed's order.
        config.enable_use_gpu(1000, 0)
        mode = {"fp32": paddle_infer.PrecisionType.Float32, "fp16": paddle_infer.PrecisionType.Half,
                "int8": paddle_infer.PrecisionType.Int8}[precision]
        config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=1, min_subgraph_size=3,
                                      precision_mode=mode, use_static=True, use_calib_mode=False)
        if cache_dir is not None:
            config.set_optim_cache_dir(str(cache_dir))
    else:
        config.set_cpu_math_library_num_threads(threads)
    if str(model).endswith(".json"):
        # Paddle 3.3.1 refuses memory_optim on a PIR program without the new executor (see
        # agent/backends/paddle/config.py); a user hits the same error and adds this line.
        config.enable_new_executor()
    config.disable_glog_info()
    return paddle_infer.create_predictor(config)


def run(predictor: Any, img: Sequence[np.ndarray]) -> List[np.ndarray]:
    """The seed's ``run``: inputs by position, ``copy_from_cpu``, ``run``, ``copy_to_cpu``."""
    input_names = predictor.get_input_names()
    for i, name in enumerate(input_names):
        input_tensor = predictor.get_input_handle(name)
        input_tensor.reshape(img[i].shape)
        # The seed copies first (img[i].copy()); dropped so that the limit is a true upper bound.
        input_tensor.copy_from_cpu(img[i])
    predictor.run()
    results = []
    output_names = predictor.get_output_names()
    for name in output_names:
        output_tensor = predictor.get_output_handle(name)
        results.append(output_tensor.copy_to_cpu())
    return results
