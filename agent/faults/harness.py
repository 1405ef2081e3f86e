"""The pieces every fault scenario uses: a sandbox directory with config and manifest, a
persistent Mosquitto, and the agent as a real child process whose JSON log is parsed.

The agent runs as ``python -m agent -v --log-format json run --config <sandbox>/config.yaml``,
optionally behind a wrapper command (strace to delay syscalls, nsenter to run on a small tmpfs).
``AgentProcess.pid`` is always the agent's own process, not the wrapper's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import yaml

import agent
from agent.demo.assets import DemoAssets
from agent.demo.broker import Broker
from agent.engines.cache import EngineCache
from agent.mqtt.spool import Spool

DEVICE_ID = "fault-dev"
PREFIX = "edge"
AGENT_ROOT = Path(agent.__file__).resolve().parents[1]
# wrappers that exec the agent in their own process (no fork): the agent keeps the wrapper's pid
EXEC_WRAPPERS = ("unshare", "nsenter")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def persistent_broker(workdir: Path, port: int) -> Broker:
    """A Mosquitto that keeps sessions and queued messages across restarts, saving after every change,
    so a message it acknowledged survives even its own ``kill -9`` (outside a window of milliseconds).
    ``user root`` keeps a broker started as root from dropping privileges and losing its directory."""
    extra = (f"persistence true\npersistence_location {workdir}/\nautosave_on_changes true\nautosave_interval 1\n"
             "max_queued_messages 0\n" + ("user root\n" if os.geteuid() == 0 else ""))
    return Broker(workdir=workdir, port=port, extra_conf=extra)


@dataclass
class Sandbox:
    """One scenario's directory: config.yaml, manifest.yaml, cache/, state/ and its broker port."""

    root: Path
    assets: DemoAssets
    port: int
    device_id: str = DEVICE_ID

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.yaml"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def engines_dir(self) -> Path:
        return self.cache_dir / "engines"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def spool_path(self) -> Path:
        return self.state_dir / "spool.sqlite3"

    def write_config(self, **overrides: Any) -> Path:
        """config.yaml with fast reconnects, a 0.5 s health interval, a 0.5 s swap grace period and JSON
        info logs (the harness reads them; a SIGHUP re-applies config.yaml's log settings);
        top-level ``overrides`` replace whole sections."""
        doc: Dict[str, Any] = {
            "device_id": self.device_id, "manifest": "manifest.yaml", "cache_dir": "cache", "state_dir": "state",
            "health_interval": 0.5, "log_level": "info", "log_format": "json",
            "mqtt": {"host": "127.0.0.1", "port": self.port, "topic_prefix": PREFIX, "keepalive": 5,
                     "reconnect_min_s": 0.1, "reconnect_max_s": 1.0},
            "fleet": {"grace_period_s": 0.5},
        }
        doc.update(overrides)
        self.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.config_path

    def manifest_text(self, pipelines: Sequence[Mapping[str, Any]],
                      models: Optional[Sequence[Mapping[str, Any]]] = None, version: int = 1) -> str:
        doc = {"version": version, "models": list(models or [self.model()]), "pipelines": list(pipelines)}
        return yaml.safe_dump(doc, sort_keys=False)

    def write_manifest(self, pipelines: Sequence[Mapping[str, Any]],
                       models: Optional[Sequence[Mapping[str, Any]]] = None, version: int = 1) -> Path:
        self.manifest_path.write_text(self.manifest_text(pipelines, models, version))
        return self.manifest_path

    def model(self, name: str = "colors", validation: Optional[Mapping[str, Any]] = None, gate: bool = True,
              **overrides: Any) -> Dict[str, Any]:
        """The demo classifier as the demo manifest declares it (``target: gpu``, fp16: on a CPU-only
        Paddle it falls back to native CPU inference), with an accuracy gate over the sample images
        unless ``validation`` says otherwise or ``gate`` is False."""
        a = self.assets
        spec: Dict[str, Any] = {
            "name": name, "model": str(a.model), "params": str(a.params), "target": "gpu", "precision": "fp16",
            "inputs": [{"name": "x", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [4, 3, 64, 64]}],
            "preprocess": {"resize": [64, 64], "color": "rgb", "scale": 1 / 255.0, "layout": "nchw"},
            "postprocess": {"type": "classification", "labels_file": str(a.labels), "top_k": 3},
        }
        if gate:
            spec["validation"] = dict(validation) if validation else {"inputs": str(a.images), "metric": "top1"}
        spec.update(overrides)
        return spec

    def agent(self, name: str = "agent", wrapper: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
              command: Sequence[str] = ("run",)) -> AgentProcess:
        return AgentProcess(self.config_path, self.root / f"{name}.log", list(wrapper), dict(env or {}),
                            list(command))

    def cache_tmp(self) -> List[Path]:
        tmp = self.engines_dir / ".tmp"
        return sorted(tmp.iterdir()) if tmp.is_dir() else []


@dataclass
class AgentProcess:
    """``python -m agent`` as a child process; its JSON log lines are parsed into ``events()``."""

    config: Path
    log_path: Path
    wrapper: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    command: List[str] = field(default_factory=lambda: ["run"])
    proc: Optional[subprocess.Popen[bytes]] = None
    started: float = 0.0
    _events: List[Dict[str, Any]] = field(default_factory=list)
    _offset: int = 0
    _pid: Optional[int] = None

    def argv(self) -> List[str]:
        return [*self.wrapper, sys.executable, "-m", "agent", "-v", "--log-format", "json", *self.command,
                "--config", str(self.config)]

    def start(self) -> AgentProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(AGENT_ROOT), env.get("PYTHONPATH", "")) if p)
        env.update(self.env)
        # Restarts append to the same log: read only what this start writes.
        self._events, self._pid = [], None
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=str(self.config.parent))
        self.started = time.time()
        return self

    @property
    def pid(self) -> int:
        """The agent's pid: the wrapper's descendant running Python when there is a wrapper."""
        proc = self.proc
        assert proc is not None, "the agent was not started"
        if self._pid is None:
            if not self.wrapper or self.wrapper[0] in EXEC_WRAPPERS:
                self._pid = proc.pid
            else:
                found = wait_until(lambda: bool(_children(proc.pid)) or proc.poll() is not None, 30)
                if not found or proc.poll() is not None:
                    raise RuntimeError(f"{self.wrapper[0]} started no agent; see {self.log_path}")
                self._pid = _children(proc.pid)[0]
        return self._pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self, name: Optional[str] = None) -> List[Dict[str, Any]]:
        """Log events so far (this start only), optionally only those named ``name``."""
        self._read()
        return [e for e in self._events if name is None or e.get("event") == name]

    def wait_event(self, name: str, timeout: float, count: int = 1) -> Dict[str, Any]:
        """The ``count``-th event ``name``; raises if the agent exits or it does not come in time."""

        def seen() -> bool:
            return len(self.events(name)) >= count or not self.alive()

        wait_until(seen, timeout, 0.05)
        found = self.events(name)
        if len(found) < count:
            state = f"exited with {self.proc.returncode}" if self.proc and not self.alive() else "is still running"
            raise RuntimeError(f"the agent logged {name!r} {len(found)} times, wanted {count} within {timeout}s "
                               f"(it {state}); see {self.log_path}")
        return found[count - 1]

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the agent itself and reap it (and its wrapper)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.wait(30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the agent stops its pipelines, flushes the spool and exits; its exit code."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if self._pid is not None and self._pid != self.proc.pid:
                os.kill(self._pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(30)
            raise RuntimeError(f"the agent did not exit within {timeout}s and was killed; see {self.log_path}") \
                from None

    def threads(self) -> int:
        """Threads of the running agent, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise RuntimeError(f"no thread count for pid {self.pid}")

    def _read(self) -> None:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        for raw in chunk[:end].splitlines():
            if raw.startswith(b"{"):
                try:
                    doc = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    self._events.append(doc)


def _children(pid: int) -> List[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def spool_depth(path: Path) -> int:
    """Results left in a spool no agent holds open (the agent exited or was killed)."""
    spool = Spool(path, 1 << 30, 10_000_000)
    try:
        return spool.depth()
    finally:
        spool.close()


@dataclass(frozen=True)
class CacheState:
    entries: List[str]  # keys of sealed entries (meta.json parses)
    errors: List[str]  # entries a lookup would refuse, with the reason
    unsealed: List[str]  # directories under an entry's name without a meta.json: must never exist
    stale_tmp: int  # build directories left in .tmp/

    @property
    def consistent(self) -> bool:
        return not self.errors and not self.unsealed


def cache_state(engines_dir: Path) -> CacheState:
    """The engine cache as the agent's own verification sees it (every file hashed)."""
    cache = EngineCache(engines_dir)
    problems = cache.verify()
    keys = sorted(e.key for e in cache.entries())
    dirs = sorted(p.name for p in engines_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if engines_dir.is_dir() else []
    return CacheState(keys, [f"{p.key}: {p.kind}: {p.message}" for p in problems if p.severity == "error"],
                      [d for d in dirs if d not in keys], sum(1 for p in problems if p.kind == "stale-tmp"))
