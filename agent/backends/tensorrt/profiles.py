"""Optimization-profile shapes: the network's inputs checked against the manifest's ``inputs``.

A dynamic dimension (-1 in the ONNX) needs a min/opt/max range from the manifest;
a batch-only dynamic input without one gets ``1..tensorrt.max_batch_size``, which is
what ``max_batch_size`` means for Paddle-TRT too. Fixed dimensions must agree.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

from agent.backends.tensorrt.network import NetworkInput
from agent.errors import BuildError
from agent.manifest.models import InputSpec, ModelSpec

Shape = Tuple[int, ...]
ShapeRange = Tuple[Shape, Shape, Shape]  # min, opt, max


def shape_ranges(spec: ModelSpec, inputs: Sequence[NetworkInput]) -> Dict[str, ShapeRange]:
    """A range for every network input (min == opt == max for fixed ones)."""
    declared: Dict[str, InputSpec] = {i.name: i for i in spec.inputs}
    names = [i.name for i in inputs]
    unknown = sorted(set(declared) - set(names))
    if unknown:
        raise BuildError(f"model '{spec.name}': inputs {unknown} are not inputs of the network; "
                         f"its inputs are {names}")
    ranges: Dict[str, ShapeRange] = {}
    for tensor in inputs:
        given = declared.get(tensor.name)
        if given is not None:
            ranges[tensor.name] = _checked(spec, tensor, given)
        elif -1 not in tensor.shape:
            ranges[tensor.name] = (tensor.shape, tensor.shape, tensor.shape)
        elif tensor.shape[0] == -1 and -1 not in tensor.shape[1:]:
            rest = tensor.shape[1:]
            batch = spec.tensorrt.max_batch_size
            ranges[tensor.name] = ((1, *rest), (batch, *rest), (batch, *rest))
        else:
            raise BuildError(
                f"model '{spec.name}': input '{tensor.name}' has dynamic dimensions {list(tensor.shape)}; "
                f"give its range in the manifest: inputs: [{{name: {tensor.name}, min: [...], opt: [...], max: [...]}}]"
            )
    return ranges


def _checked(spec: ModelSpec, tensor: NetworkInput, given: InputSpec) -> ShapeRange:
    lo, mid, hi = (tuple(s) for s in given.shapes())
    if len(lo) != len(tensor.shape):
        raise BuildError(f"model '{spec.name}': inputs[{tensor.name}] has rank {len(lo)}, "
                         f"the network's input has shape {list(tensor.shape)}")
    for axis, dim in enumerate(tensor.shape):
        if dim != -1 and not lo[axis] == mid[axis] == hi[axis] == dim:
            raise BuildError(
                f"model '{spec.name}': inputs[{tensor.name}] dimension {axis} must be {dim} "
                f"(fixed in the network), got min/opt/max {lo[axis]}/{mid[axis]}/{hi[axis]}"
            )
    return lo, mid, hi


def is_dynamic(ranges: Dict[str, ShapeRange]) -> bool:
    return any(lo != hi for lo, _, hi in ranges.values())


def calibration_shapes(spec: ModelSpec, ranges: Dict[str, ShapeRange], batch_size: int) -> Dict[str, Shape]:
    """The shape of each calibration batch: opt with the batch dimension set to ``batch_size``."""
    shapes: Dict[str, Shape] = {}
    for name, (lo, mid, hi) in ranges.items():
        if not lo[0] <= batch_size <= hi[0]:
            raise BuildError(
                f"model '{spec.name}': calibration.batch_size {batch_size} is outside input '{name}''s "
                f"batch range {lo[0]}..{hi[0]}; lower calibration.batch_size or raise inputs[{name}].max"
            )
        shapes[name] = (batch_size, *mid[1:])
    return shapes
