"""A device site for fleet tests against the real daemon: the demo classifier copied into an
allowed model directory, a manifest and a config.yaml; plus recorders of its results and its
``manifest/reported`` topic on a real broker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from agent.demo.assets import DemoAssets, ensure_assets
from tests.mqtt.helpers import FAST, Recorder, wait_until

DEVICE = "dev1"
PREFIX = f"edge/{DEVICE}"
DESIRED = f"{PREFIX}/manifest/desired"
REPORTED = f"{PREFIX}/manifest/reported"
HEALTH = f"{PREFIX}/health"

# Publishing one frame in ten keeps the broker and recorders light: the looping video runs
# as fast as the CPU allows.
EVERY_N = 10


def shared_assets(factory: pytest.TempPathFactory) -> DemoAssets:
    """The demo's trained classifier, images and video; trained once per session (the directory is
    shared by every module that asks, and ``ensure_assets`` is cheap when it is complete)."""
    return ensure_assets(factory.getbasetemp() / "demo-assets")


def model(name: str, program: str, validation: str = "") -> str:
    """A manifest ``models`` entry for the demo classifier on CPU; ``program`` is relative to the models dir."""
    block = (f"  - name: {name}\n"
             f"    model: {program}\n"
             "    params: assets/model/inference.pdiparams\n"
             "    target: cpu\n"
             "    preprocess: {resize: [64, 64], color: rgb, scale: 0.00392156862745098}\n"
             "    postprocess: {type: classification, labels_file: assets/labels.txt, top_k: 1}\n")
    return block + (f"    validation: {validation}\n" if validation else "")


def pipeline(name: str, model_name: str, source: str = "assets/video.avi") -> str:
    return (f"  - name: {name}\n"
            f"    source: {source}\n"
            f"    model: {model_name}\n"
            "    options: {loop: true}\n"
            f"    publish: {{qos: 0, every_n: {EVERY_N}}}\n")


def manifest(version: int, models: Sequence[str], pipelines: Sequence[str]) -> str:
    return f"version: {version}\nmodels:\n{''.join(models)}pipelines:\n{''.join(pipelines)}"


class Site:
    """``root/config.yaml``; ``root/models`` (the first allowed model dir) holds the demo assets, a
    model that cannot build (``broken/``) and an unreadable image, and manifest v1: pipeline
    ``video`` on model ``colors``."""

    def __init__(self, root: Path, assets: DemoAssets) -> None:
        self.root = root
        self.models = root / "models"
        shutil.copytree(assets.model.parent.parent, self.models / "assets")
        self.program = f"assets/model/{assets.model.name}"
        broken = self.models / "broken"
        broken.mkdir()
        (broken / "inference.json").write_text('{"not": "a paddle program"}')
        (broken / "frame.png").write_bytes(b"\x89PNG but truncated")
        (self.models / "manifest.yaml").write_text(self.manifest(1, "video"))
        self.config = root / "config.yaml"

    def manifest(self, version: int, pipeline_name: str) -> str:
        """A good manifest: one looping video pipeline named ``pipeline_name``."""
        return manifest(version, [model("colors", self.program)], [pipeline(pipeline_name, "colors")])

    def write_config(self, port: int, public_keys: Sequence[str], grace_period_s: float = 1.0,
                     groups: Sequence[str] = (), device_id: str = DEVICE,
                     download: Optional[Dict[str, Any]] = None) -> Path:
        """``download``: the config's ``fleet.download`` section (artifact downloads)."""
        self.config.write_text(json.dumps({
            "device_id": device_id,
            "manifest": "models/manifest.yaml",
            "cache_dir": "cache",
            "state_dir": "state",
            "groups": list(groups),
            "health_interval": 0.5,
            "mqtt": {"port": port, **FAST},
            "fleet": {"public_keys": list(public_keys), "grace_period_s": grace_period_s,
                      **({"download": download} if download is not None else {})},
        }))
        return self.config


class Watch:
    """Everything the device publishes, recorded by a separate client from now on (live messages only)."""

    def __init__(self, port: int) -> None:
        self.recorder = Recorder(port, f"{PREFIX}/#", client_id="fleet-watch").start()

    def stop(self) -> None:
        self.recorder.stop()

    def mark(self) -> int:
        """A position in the recording; pass it as ``since`` to look only at what came later."""
        return len(self.recorder.snapshot())

    def docs(self, topic: str, since: int = 0) -> List[Dict[str, Any]]:
        return [json.loads(m.payload) for m in self.recorder.snapshot()[since:] if m.topic == topic]

    # results ------------------------------------------------------------------------------------------
    def results(self, pipeline_name: str, since: int = 0) -> List[Dict[str, Any]]:
        return self.docs(f"{PREFIX}/results/{pipeline_name}", since)

    def keeps_flowing(self, pipeline_name: str, more: int = 5, timeout: float = 20.0) -> bool:
        """``more`` new results from ``pipeline_name`` from now on."""
        since = self.mark()
        return wait_until(lambda: len(self.results(pipeline_name, since)) >= more, timeout)

    # health --------------------------------------------------------------------------------------------
    def wait_health(self, version: int, since: int = 0, timeout: float = 30.0) -> Dict[str, Any]:
        """The first health report, from ``since`` on, of a running agent on manifest ``version``."""
        def matching() -> List[Dict[str, Any]]:
            return [h for h in self.docs(HEALTH, since)
                    if h["agent"]["phase"] == "running" and h["manifest"]["version"] == version]

        assert wait_until(lambda: bool(matching()), timeout), \
            f"no health on manifest v{version}; seen: {[h['manifest']['version'] for h in self.docs(HEALTH, since)]}"
        return matching()[0]

    # manifest/reported ---------------------------------------------------------------------------------
    def reports(self, since: int = 0) -> List[Dict[str, Any]]:
        return self.docs(REPORTED, since)

    def steps(self, since: int = 0) -> List[Tuple[Optional[int], str]]:
        return [(r["version"], r["status"]) for r in self.reports(since)]

    def statuses(self, version: int, since: int = 0) -> List[str]:
        return [s for v, s in self.steps(since) if v == version]

    def wait_for(self, version: Optional[int], status: str, since: int = 0, timeout: float = 30.0) -> Dict[str, Any]:
        assert wait_until(lambda: (version, status) in self.steps(since), timeout), \
            f"no {status} for version {version}; reported so far: {self.steps(since)}"
        return [r for r in self.reports(since) if (r["version"], r["status"]) == (version, status)][-1]
