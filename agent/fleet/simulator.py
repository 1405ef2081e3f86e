"""A fleet SIMULATOR: many simulated devices from one process, for scale tests of the operator tools.

It speaks the device side of the fleet protocol (docs/fleet.md) over one MQTT connection: retained
``info`` (with ``"simulated": true``), ``status`` and ``manifest/reported`` per device; ``health``
and results at an interval; and it answers desired envelopes on device and group topics with
``received`` → ``validating`` → ``building`` → a final state after configurable delays. It does not
verify signatures, download artifacts or run models: a simulated device applies an envelope unless
the failure rate says otherwise, or the manifest text contains ``# simulator: rolled_back`` or
``# simulator: rejected`` (every simulated device then fails that way). Real agents run beside it
on the same broker in the tests and the benchmark.

    python -m agent.fleet.simulator --port 1883 --devices 1000 --group sim
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import heapq
import itertools
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent import __version__
from agent.errors import FleetError
from agent.fleet.envelope import Envelope, parse_envelope
from agent.mqtt.payloads import HEALTH_SCHEMA, INFO_SCHEMA, REPORTED_SCHEMA, RESULT_SCHEMA, encode
from agent.mqtt.topics import GROUP_SEGMENT

MARKER = "# simulator: "


@dataclass(frozen=True)
class SimOptions:
    devices: int = 100
    groups: Sequence[str] = ("sim",)
    prefix: str = "edge"
    id_format: str = "sim-{:05d}"
    delay_s: Tuple[float, float] = (0.2, 1.0)  # each step's delay, uniform in this range
    reject_rate: float = 0.0
    rollback_rate: float = 0.0
    health_interval_s: float = 10.0
    results_interval_s: float = 2.0
    initial_version: int = 1
    fail_devices: Tuple[str, ...] = ()  # these roll back every update
    offline_devices: Tuple[str, ...] = ()  # these are 'offline' (as after their last will) and answer nothing
    seed: int = 0


@dataclass
class SimDevice:
    device_id: str
    applied: Tuple[int, str]
    busy: bool = False


@dataclass
class SimStats:
    published: int = 0
    envelopes: int = 0
    applied: int = 0
    failed: int = 0


class FleetSimulator:
    """``start()``, ``stop()``; everything runs on paho's thread and one scheduler thread."""

    def __init__(self, host: str, port: int, options: SimOptions) -> None:
        self.options = options
        self.host, self.port = host, port
        self.rng = random.Random(options.seed)
        initial_sha = hashlib.sha256(f"simulated v{options.initial_version}".encode()).hexdigest()
        self.devices: Dict[str, SimDevice] = {}
        for i in range(options.devices):
            device_id = options.id_format.format(i)
            self.devices[device_id] = SimDevice(device_id, (options.initial_version, initial_sha))
        self.stats = SimStats()
        self._lock = threading.Lock()
        self._timers: List[Tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._connected = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-simulator-{os.urandom(3).hex()}",
                                   protocol=mqtt.MQTTv5)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._thread = threading.Thread(target=self._run_timers, name="fleet-simulator", daemon=True)

    # lifecycle --------------------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> FleetSimulator:
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(timeout):
            raise FleetError(f"simulator: broker {self.host}:{self.port} did not answer")
        self._thread.start()
        for dev in self.devices.values():
            self._publish(self._topic(dev, "info"), self._info(dev), retain=True)
            offline = dev.device_id in self.options.offline_devices
            self._publish(self._topic(dev, "status"), b"offline" if offline else b"online", retain=True)
            self._report(dev, None, "applied", "", {})
        p = self.options.prefix
        self._client.subscribe([(f"{p}/+/manifest/desired", 1), (f"{p}/{GROUP_SEGMENT}/+/manifest/desired", 1)])
        for i, dev in enumerate(self.devices.values()):
            spread = i / max(1, len(self.devices))
            self._at(time.monotonic() + spread * self.options.health_interval_s, functools.partial(self._health, dev))
            self._at(time.monotonic() + spread * self.options.results_interval_s, functools.partial(self._result, dev))
        return self

    def stop(self, clear: bool = True) -> None:
        """Stop; ``clear`` removes the simulated devices' retained messages from the broker."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(5)
        if clear:
            for dev in self.devices.values():
                for leaf in ("info", "status", "manifest/reported", "manifest/desired"):
                    self._publish(self._topic(dev, leaf), b"", retain=True)
        else:
            for dev in self.devices.values():
                self._publish(self._topic(dev, "status"), b"stopped", retain=True)
        self._client.disconnect()
        self._client.loop_stop()

    # protocol ---------------------------------------------------------------------------------------------
    def _on_connect(self, c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connected.set()

    def _on_message(self, c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not message.payload:
            return
        targets = self._targets(message.topic)
        if not targets:
            return
        try:
            envelope = parse_envelope(bytes(message.payload))
        except FleetError:
            return
        with self._lock:
            self.stats.envelopes += 1
        for dev in targets:
            if dev.device_id in self.options.offline_devices:
                continue
            if (envelope.version, envelope.sha256) == dev.applied or dev.busy:
                continue
            dev.busy = True
            self._step(dev, envelope, message.topic, "received", {})

    def _targets(self, topic: str) -> List[SimDevice]:
        parts = topic[len(self.options.prefix) + 1:].split("/")
        if parts[0] == GROUP_SEGMENT:
            group = parts[1]
            return [d for d in self.devices.values() if group in self.options.groups]
        dev = self.devices.get(parts[0])
        return [dev] if dev is not None else []

    def _step(self, dev: SimDevice, env: Envelope, topic: str, status: str, steps: Dict[str, float]) -> None:
        steps = {**steps, status: time.time()}
        if status == "received" and env.version <= dev.applied[0]:
            self._finish(dev, env, topic, "rejected",
                         f"replay: version {env.version} is not newer than the applied version {dev.applied[0]}", steps)
            return
        nxt = {"received": "validating", "validating": "building"}.get(status)
        self._report(dev, env, status, "", steps, topic)
        if nxt is not None:
            self._later(lambda: self._step(dev, env, topic, nxt, steps))
            return
        self._later(lambda: self._finish(dev, env, topic, *self._verdict(dev, env), steps))

    def _verdict(self, dev: SimDevice, env: Envelope) -> Tuple[str, str]:
        if dev.device_id in self.options.fail_devices:
            return "rolled_back", "build failed: simulated failure (fail_devices)"
        if MARKER + "rolled_back" in env.manifest:
            return "rolled_back", "build failed: simulated failure (the manifest asks for it)"
        if MARKER + "rejected" in env.manifest:
            return "rejected", "simulated rejection (the manifest asks for it)"
        draw = self.rng.random()
        if draw < self.options.reject_rate:
            return "rejected", "simulated rejection (reject_rate)"
        if draw < self.options.reject_rate + self.options.rollback_rate:
            return "rolled_back", "build failed: simulated failure (rollback_rate)"
        return "applied", ""

    def _finish(self, dev: SimDevice, env: Envelope, topic: str, status: str, reason: str,
                steps: Dict[str, float]) -> None:
        steps = {**steps, status: time.time()}
        if status == "applied":
            dev.applied = (env.version, env.sha256)
        with self._lock:
            if status == "applied":
                self.stats.applied += 1
            else:
                self.stats.failed += 1
        dev.busy = False
        self._report(dev, env, status, reason, steps, topic)
        if status == "applied":
            self._publish(self._topic(dev, "info"), self._info(dev), retain=True)

    def _report(self, dev: SimDevice, env: Optional[Envelope], status: str, reason: str, steps: Dict[str, float],
                topic: Optional[str] = None) -> None:
        now = time.time()
        doc = {"schema": REPORTED_SCHEMA, "device_id": dev.device_id,
               "version": None if env is None else env.version, "sha256": None if env is None else env.sha256,
               "status": status, "reason": reason, "ts": now, "received_at": steps.get("received", now),
               "steps": steps, "topic": topic, "key_id": None if env is None else env.key_id,
               "target": None if env is None else env.target,
               "applied": {"version": dev.applied[0], "sha256": dev.applied[1]}}
        self._publish(self._topic(dev, "manifest/reported"), encode(doc), retain=True)

    def _info(self, dev: SimDevice) -> bytes:
        return encode({"schema": INFO_SCHEMA, "device_id": dev.device_id, "ts": time.time(), "simulated": True,
                       "agent_version": __version__, "groups": list(self.options.groups),
                       "device": {"kind": "simulated", "model": "fleet simulator", "l4t": None, "dla_cores": 0},
                       "software": {"tensorrt": None, "paddle": None},
                       "applied": {"version": dev.applied[0], "sha256": dev.applied[1], "origin": "simulated"}})

    def _health(self, dev: SimDevice) -> None:
        doc = {"schema": HEALTH_SCHEMA, "device_id": dev.device_id, "ts": time.time(), "simulated": True,
               "agent": {"version": __version__, "phase": "running"},
               "manifest": {"version": dev.applied[0], "sha256": dev.applied[1]},
               "pipelines": {"sim": {"state": "running", "processed_fps": 10.0, "errors": 0}}}
        self._publish(self._topic(dev, "health"), encode(doc), qos=0)
        self._at(time.monotonic() + self.options.health_interval_s, lambda: self._health(dev))

    def _result(self, dev: SimDevice) -> None:
        doc = {"schema": RESULT_SCHEMA, "device_id": dev.device_id, "pipeline": "sim", "model": "sim",
               "source": "simulated", "frame": 0, "ts": time.time(), "outputs": []}
        self._publish(self._topic(dev, "results/sim"), encode(doc), qos=0)
        self._at(time.monotonic() + self.options.results_interval_s, lambda: self._result(dev))

    # plumbing -----------------------------------------------------------------------------------------------
    def _topic(self, dev: SimDevice, leaf: str) -> str:
        return f"{self.options.prefix}/{dev.device_id}/{leaf}"

    def _publish(self, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)
        with self._lock:
            self.stats.published += 1

    def _later(self, fn: Callable[[], None]) -> None:
        low, high = self.options.delay_s
        self._at(time.monotonic() + self.rng.uniform(low, high), fn)

    def _at(self, when: float, fn: Callable[[], None]) -> None:
        with self._wake:
            heapq.heappush(self._timers, (when, next(self._seq), fn))
            self._wake.notify()

    def _run_timers(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._timers or self._timers[0][0] > time.monotonic()):
                    self._wake.wait(None if not self._timers else max(0.0, self._timers[0][0] - time.monotonic()))
                if self._stopping:
                    return
                _, _, fn = heapq.heappop(self._timers)
            fn()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.fleet.simulator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="edge")
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--group", action="append", default=None, help="group of every simulated device (repeatable)")
    p.add_argument("--delay", type=float, nargs=2, default=(0.2, 1.0), metavar=("MIN", "MAX"),
                   help="seconds per step (uniform)")
    p.add_argument("--reject-rate", type=float, default=0.0)
    p.add_argument("--rollback-rate", type=float, default=0.0)
    p.add_argument("--health-interval", type=float, default=10.0)
    p.add_argument("--results-interval", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    options = SimOptions(args.devices, tuple(args.group or ["sim"]), args.prefix, delay_s=tuple(args.delay),
                         reject_rate=args.reject_rate, rollback_rate=args.rollback_rate,
                         health_interval_s=args.health_interval, results_interval_s=args.results_interval,
                         seed=args.seed)
    sim = FleetSimulator(args.host, args.port, options).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"fleet simulator: {args.devices} simulated devices on {args.host}:{args.port}", flush=True)
    done.wait()
    sim.stop(clear=False)
    print(f"fleet simulator: {sim.stats}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
