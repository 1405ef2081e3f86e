"""Per-layer placement: which layers a DLA build keeps on the DLA and which fall back to the GPU.

Asked of the configured builder with ``can_run_on_DLA`` (it answers for the precision and
DLA settings in the config), written to ``placement.json`` in the cache entry, and
summarised in one line for the build output, since a DLA engine that silently runs
most of its layers on the GPU is the common DLA disappointment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

if TYPE_CHECKING:
    import tensorrt as trt

PLACEMENT_FILE = "placement.json"
_NAMES_IN_SUMMARY = 5


@dataclass(frozen=True)
class LayerPlacement:
    name: str
    type: str
    device: str  # "DLA0", "DLA1" or "GPU"


@dataclass(frozen=True)
class PlacementReport:
    target: str  # "gpu:0", "dla:0", "dla:1"
    layers: Sequence[LayerPlacement]

    @property
    def on_gpu(self) -> List[LayerPlacement]:
        return [layer for layer in self.layers if layer.device == "GPU"]

    def summary(self) -> str:
        total = len(self.layers)
        if not self.target.startswith("dla:"):
            return f"{total} layers on the GPU"
        core = "DLA" + self.target.split(":", 1)[1]
        fell = self.on_gpu
        line = f"{total - len(fell)} of {total} layers on {core}"
        if fell:
            names = ", ".join(f"{layer.name} ({layer.type})" for layer in fell[:_NAMES_IN_SUMMARY])
            more = ", …" if len(fell) > _NAMES_IN_SUMMARY else ""
            line += f", {len(fell)} fell back to GPU: {names}{more}"
        return line

    def as_dict(self) -> Dict[str, Any]:
        return {"target": self.target, "summary": self.summary(), "layers": [
            {"name": layer.name, "type": layer.type, "device": layer.device} for layer in self.layers]}


def placement_report(network: trt.INetworkDefinition, config: trt.IBuilderConfig,
                     dla_core: Optional[int]) -> PlacementReport:
    layers: List[LayerPlacement] = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        on_dla = dla_core is not None and config.can_run_on_DLA(layer)
        layers.append(LayerPlacement(layer.name, layer.type.name, f"DLA{dla_core}" if on_dla else "GPU"))
    return PlacementReport("gpu:0" if dla_core is None else f"dla:{dla_core}", layers)


def write_placement(entry_dir: Path, reports: Sequence[PlacementReport]) -> None:
    doc = {"engines": [r.as_dict() for r in reports]}
    (entry_dir / PLACEMENT_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
