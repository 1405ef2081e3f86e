"""One scenario's set-up and guaranteed tear-down: sandbox, persistent broker, result counter, agents."""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from agent.demo.assets import DemoAssets
from agent.demo.broker import Broker, free_port
from agent.faults.camera import HttpCamera
from agent.faults.harness import AgentProcess, Sandbox, persistent_broker
from agent.faults.observe import ResultCounter


@dataclass(frozen=True)
class FaultEnv:
    """Where scenarios work and the demo assets they share (generated once)."""

    work: Path
    assets: DemoAssets


@dataclass
class Rig:
    box: Sandbox
    broker: Broker
    counter: ResultCounter
    camera: HttpCamera
    agents: List[AgentProcess] = field(default_factory=list)

    def agent(self, name: str = "agent", **kwargs: Any) -> AgentProcess:
        """A new (not yet started) agent process for this sandbox; killed at tear-down if still running."""
        process = self.box.agent(name, **kwargs)
        self.agents.append(process)
        return process

    def camera_pipeline(self, name: str = "camera", path: str = "stream.mjpg", **options: Any) -> Dict[str, Any]:
        """A pipeline on the rig's HTTP camera (30 fps), published with QoS 1."""
        return {"name": name, "source": self.camera.url(path), "model": "colors", "options": options,
                "publish": {"qos": 1}}

    def restart_broker(self, hard: bool = False, down_s: float = 0.0) -> None:
        self.broker.stop(hard=hard)
        time.sleep(down_s)
        self.broker.start()


@contextmanager
def rig(env: FaultEnv, name: str) -> Iterator[Rig]:
    shutil.rmtree(env.work / name, ignore_errors=True)  # a spool or cache left by an earlier run would count
    box = Sandbox(env.work / name, env.assets, free_port())
    broker = persistent_broker(box.root / "broker", box.port).start()
    camera = HttpCamera(env.assets.video).start()
    counter: Optional[ResultCounter] = None
    made: Optional[Rig] = None
    try:
        counter = ResultCounter(box.port).start()
        made = Rig(box, broker, counter, camera)
        yield made
    finally:
        for process in made.agents if made is not None else []:
            if process.alive():
                process.kill()
        if counter is not None:
            counter.stop()
        camera.close()
        broker.stop()
