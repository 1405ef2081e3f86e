"""tegrastats: parse its one-line reports, and optionally keep the latest from a running process.

tegrastats is the only unprivileged window onto EMC load, engine clocks (NVENC, NVDEC, NVDLA,
VIC, ...) and, when run as root, GR3D on older JetPacks. Its format changed over releases;
the parser accepts every form seen in public reports (see tests/telemetry/fixtures/README.md):

    [MM-DD-YYYY HH:MM:SS] RAM u/tMB (lfb NxSMB) SWAP u/tMB (cached cMB) [IRAM u/tkB(lfb lkB)]
    CPU [l%@f,off,...] | cpu [l%,l%,...]@f   EMC_FREQ l%[@f]   GR3D_FREQ l%[@f | @[f,f]]
    <ENGINE> off | l%@f | f   <sensor>@<t>C   <RAIL> c[mW]/a[mW]
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from typing import IO, Any, Callable, Dict, List, Optional, Sequence

from agent.logs import event
from agent.telemetry.thermal import MAX_VALID_C, MIN_VALID_C

log = logging.getLogger(__name__)

_TIME = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB(?: \(lfb (\d+)x(\d+)MB\))?")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB(?: \(cached (\d+)MB\))?")
_IRAM = re.compile(r"\bIRAM (\d+)/(\d+)kB ?\(lfb (\d+)kB\)")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CPU_LEGACY = re.compile(r"\bcpu \[([^\]]*)\]@(\d+)")
_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
_TEMP = re.compile(r"(?<![\w@])([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C(?!\w)")
_RAIL = re.compile(r"(?<!\S)([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?!\S)")
_ENGINE = re.compile(r"(?<!\S)([A-Z][A-Z0-9_]*) (off|\d+%@\[[\d,]*\]|\d+%@\d+|\d+%|@\d+|\d+)(?!\S)")
_LOAD_FREQ = re.compile(r"^(?:(\d+)%)?(?:@\[?([\d,]*)\]?)?$")


def _engine(value: str) -> Dict[str, Any]:
    if value == "off":
        return {"off": True}
    if value.isdigit():
        return {"freq_mhz": int(value)}
    match = _LOAD_FREQ.match(value)
    if match is None:
        return {}
    out: Dict[str, Any] = {}
    if match.group(1) is not None:
        out["load_percent"] = int(match.group(1))
    freqs = [int(f) for f in (match.group(2) or "").split(",") if f]
    if freqs:
        out["freq_mhz"] = max(freqs)
        if "[" in value:
            out["gpc_freq_mhz"] = freqs
    return out


def _cores(body: str, shared_mhz: Optional[int]) -> List[Dict[str, Any]]:
    cores: List[Dict[str, Any]] = []
    for item in body.split(","):
        item = item.strip()
        match = _CORE.match(item)
        if item == "off" or match is None:
            cores.append({"online": False})
            continue
        core: Dict[str, Any] = {"online": True, "load_percent": int(match.group(1))}
        mhz = int(match.group(2)) if match.group(2) else shared_mhz
        if mhz is not None:
            core["freq_mhz"] = mhz
        cores.append(core)
    return cores


def parse_tegrastats(line: str) -> Dict[str, Any]:
    """One tegrastats line as plain values; fields the line lacks are absent.

    Keys: ``time``, ``ram``/``swap`` (MB as tegrastats prints, i.e. MiB), ``iram`` (kB),
    ``cpu`` (per core), ``engines`` (EMC, GR3D, GR3D2, VIC, NVENC, NVDEC, NVDLA0, APE, ...:
    ``load_percent``/``freq_mhz``/``off``), ``temperatures_c`` (sensors reading -256C omitted),
    ``rails`` (``watts`` now and tegrastats' running ``average_watts``; "NC" channels omitted).
    """
    line = line.strip()
    out: Dict[str, Any] = {}
    stamp = _TIME.match(line)
    if stamp:
        out["time"] = stamp.group(1)
    ram = _RAM.search(line)
    if ram:
        out["ram"] = {"used_mb": int(ram.group(1)), "total_mb": int(ram.group(2))}
        if ram.group(3):
            out["ram"]["lfb_blocks"] = int(ram.group(3))
            out["ram"]["lfb_block_mb"] = int(ram.group(4))
    swap = _SWAP.search(line)
    if swap:
        out["swap"] = {"used_mb": int(swap.group(1)), "total_mb": int(swap.group(2))}
        if swap.group(3):
            out["swap"]["cached_mb"] = int(swap.group(3))
    iram = _IRAM.search(line)
    if iram:
        out["iram"] = {"used_kb": int(iram.group(1)), "total_kb": int(iram.group(2)), "lfb_kb": int(iram.group(3))}
    cpu = _CPU.search(line)
    legacy = _CPU_LEGACY.search(line)
    if cpu:
        out["cpu"] = _cores(cpu.group(1), None)
    elif legacy:
        out["cpu"] = _cores(legacy.group(1), int(legacy.group(2)))

    engines: Dict[str, Dict[str, Any]] = {}
    for name, value in _ENGINE.findall(line):
        parsed = _engine(value)
        if parsed:
            engines[name[: -len("_FREQ")] if name.endswith("_FREQ") else name] = parsed
    if engines:
        out["engines"] = engines

    temps: Dict[str, float] = {}
    for name, value in _TEMP.findall(line):
        celsius = float(value)
        if MIN_VALID_C < celsius <= MAX_VALID_C:
            temps[name] = celsius
    if temps:
        out["temperatures_c"] = temps

    rails: Dict[str, Dict[str, float]] = {}
    for name, now_mw, avg_mw in _RAIL.findall(line):
        if name != "NC":
            rails[name] = {"watts": int(now_mw) / 1000.0, "average_watts": int(avg_mw) / 1000.0}
    if rails:
        out["rails"] = rails
    return out


class TegrastatsReader:
    """Runs tegrastats and keeps its latest parsed line; ``latest()`` is safe from any thread.

    ``argv`` is the whole command, so tests can replay recorded output through a stand-in.
    """

    def __init__(self, argv: Sequence[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.argv = list(argv)
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: Optional[Dict[str, Any]] = None
        self._stamp = 0.0
        self._proc: Optional[subprocess.Popen[str]] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()

    @classmethod
    def for_binary(
        cls, interval_s: float = 1.0, which: Callable[[str], Optional[str]] = shutil.which
    ) -> Optional[TegrastatsReader]:
        """A reader for the installed tegrastats, or None where there is none (anything but L4T)."""
        binary = which("tegrastats")
        if binary is None:
            return None
        return cls([binary, "--interval", str(max(1, int(interval_s * 1000)))])

    def start(self) -> TegrastatsReader:
        self._proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1,
        )
        self._thread = threading.Thread(target=self._pump, args=(self._proc.stdout,), name="tegrastats", daemon=True)
        self._thread.start()
        event(log, logging.DEBUG, "telemetry.tegrastats.started", argv=self.argv, pid=self._proc.pid)
        return self

    def _pump(self, stream: Optional[IO[str]]) -> None:
        if stream is None:
            return
        for line in stream:
            parsed = parse_tegrastats(line)
            if parsed:
                with self._lock:
                    self._latest, self._stamp = parsed, self._clock()
        if self._stopping.is_set():
            return
        proc = self._proc
        try:
            code = proc.wait(timeout=5.0) if proc is not None else None
        except subprocess.TimeoutExpired:
            code = None
        event(log, logging.WARNING, "telemetry.tegrastats.exited", code=code, argv=self.argv,
              hint="health omits tegrastats fields until the agent restarts; check the binary runs as this user")

    def latest(self, max_age_s: float = 5.0) -> Optional[Dict[str, Any]]:
        """The newest parsed line if it is at most ``max_age_s`` old, with its ``age_s``."""
        with self._lock:
            if self._latest is None:
                return None
            age = self._clock() - self._stamp
            if age > max_age_s:
                return None
            return dict(self._latest, age_s=round(age, 3))

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
