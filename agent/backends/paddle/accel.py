"""The self-healing chain of a native Paddle build: optional accelerations turned off in turn.

A model that fails to load or to run its warm-up under oneDNN (e.g. PP-OCRv5's PIR detector on
Paddle 3.3: ``ConvertPirAttribute2RuntimeAttribute not support``) is retried without it, then also
without IR optimisation (Paddle's graph passes). What was turned off, and why, goes into the build
record and the placement notes (build line, health). ``require_target`` turns the chain off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from agent.backends.paddle.plan import PaddlePlan
from agent.manifest.models import ModelSpec


@dataclass(frozen=True)
class Acceleration:
    mkldnn: bool
    ir_optim: bool

    def dropped_by(self, nxt: Acceleration) -> str:
        """What the next step of the chain disables, as the note says it."""
        return "oneDNN disabled" if self.mkldnn and not nxt.mkldnn else "IR optimisation disabled"


def acceleration_chain(spec: ModelSpec, plan: PaddlePlan) -> List[Acceleration]:
    """As configured; then without oneDNN (CPU only, when it was on); then also without IR
    optimisation. A model that fails every step fails its build."""
    first = Acceleration(mkldnn=spec.cpu.mkldnn and not plan.on_gpu, ir_optim=True)
    chain = [first]
    if first.mkldnn:
        chain.append(Acceleration(mkldnn=False, ir_optim=True))
    chain.append(Acceleration(mkldnn=False, ir_optim=False))
    return chain
