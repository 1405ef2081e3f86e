"""Which machine an engine is built for: the device part of the cache fingerprint.

A TensorRT plan only runs on the GPU architecture, L4T release and CUDA it was built
with, and oneDNN picks kernels by CPU ISA, so all of them are part of the cache key.
Everything is read from files under ``root`` so tests can describe a Jetson, a GPU
box or a CPU machine with a small fake tree; absent files simply mean "unknown".
"""

from __future__ import annotations

import csv
import json
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional, Tuple

from agent.platform import DEVICE_TREE_COMPATIBLE, is_jetson, l4t_release, read_text

DeviceKind = Literal["jetson", "gpu", "cpu"]

# CUDA compute capability of each Jetson SoC (NVIDIA's CUDA GPUs table).
_TEGRA_COMPUTE_CAPABILITY: Dict[str, str] = {
    "tegra210": "5.3",  # Nano, TX1
    "tegra186": "6.2",  # TX2
    "tegra194": "7.2",  # Xavier NX / AGX Xavier
    "tegra234": "8.7",  # Orin Nano / NX / AGX
}

# CPU features that change which oneDNN kernels (and so which optimized program) are used.
_ONEDNN_FLAGS = frozenset({
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimdhp", "asimddp", "fphp", "sve", "sve2", "i8mm", "bf16", "svei8mm", "svebf16",
})

_VENDOR_WORDS = frozenset({"nvidia", "jetson", "developer", "kit", "engineering", "reference"})


@dataclass(frozen=True)
class GpuInfo:
    """A discrete GPU as reported by the driver (device 0, the one the agent uses)."""

    name: str
    compute_capability: str = ""  # "8.6"; empty when the driver is too old to say


GpuProbe = Callable[[], Optional[GpuInfo]]


@dataclass(frozen=True)
class DeviceIdentity:
    kind: DeviceKind
    arch: str = ""  # machine: "aarch64", "x86_64"
    model: str = ""  # Jetson device-tree model or discrete GPU name
    l4t: str = ""  # "R35.4.1"
    soc: str = ""  # "tegra234"
    compute_capability: str = ""  # "8.7"
    cuda: str = ""  # toolkit major.minor, "11.4"
    cpu_model: str = ""
    cpu_flags: Tuple[str, ...] = ()  # sorted subset of _ONEDNN_FLAGS

    def as_fields(self) -> Dict[str, str]:
        """Every attribute as a string, absent ones empty, for the fingerprint."""
        return {
            "kind": self.kind,
            "arch": self.arch,
            "model": self.model,
            "l4t": self.l4t,
            "soc": self.soc,
            "compute_capability": self.compute_capability,
            "cuda": self.cuda,
            "cpu_model": self.cpu_model,
            "cpu_flags": ",".join(self.cpu_flags),
        }

    def short(self) -> str:
        """A readable, filesystem-safe name: "orin-nano-r36.3", "gpu-sm86", "cpu-avx2"."""
        if self.kind == "jetson":
            words = [w for w in _slug(self.model).split("-") if w and w not in _VENDOR_WORDS]
            name = "-".join(words) or _slug(self.soc) or "jetson"
            release = self.l4t.lower()
            if release.endswith(".0"):
                release = release[:-2]
            return f"{name}-{release}" if release else name
        if self.kind == "gpu":
            if self.compute_capability:
                return "gpu-sm" + self.compute_capability.replace(".", "")
            return "gpu-" + (_slug(self.model) or "unknown")
        return "cpu-" + _cpu_tier(self.cpu_flags, self.arch)


def detect_device(
    root: Path = Path("/"),
    gpu_probe: Optional[GpuProbe] = None,
    machine: Optional[str] = None,
) -> DeviceIdentity:
    """Identify this machine from files under ``root``.

    ``gpu_probe`` is asked only when the machine is not a Jetson; the default runs
    ``nvidia-smi`` when it is installed. ``machine`` defaults to ``platform.machine()``.
    """
    arch = machine if machine is not None else platform.machine()
    cpu_model, cpu_flags = read_cpuinfo(read_text(root / "proc/cpuinfo"))
    cuda = read_cuda_version(root)
    if is_jetson(root):
        release = l4t_release(root)
        soc = _tegra_soc(read_text(root / DEVICE_TREE_COMPATIBLE))
        return DeviceIdentity(
            kind="jetson", arch=arch, model=read_device_model(root), l4t=release.tag if release else "", soc=soc,
            compute_capability=_TEGRA_COMPUTE_CAPABILITY.get(soc, ""), cuda=cuda,
            cpu_model=cpu_model, cpu_flags=cpu_flags,
        )
    gpu = (gpu_probe or probe_nvidia_smi)()
    if gpu is not None:
        return DeviceIdentity(
            kind="gpu", arch=arch, model=gpu.name, compute_capability=gpu.compute_capability, cuda=cuda,
            cpu_model=cpu_model, cpu_flags=cpu_flags,
        )
    return DeviceIdentity(kind="cpu", arch=arch, cuda=cuda, cpu_model=cpu_model, cpu_flags=cpu_flags)


def no_gpu() -> Optional[GpuInfo]:
    """A ``gpu_probe`` for machines (and tests) known to have no discrete GPU."""
    return None


def read_device_model(root: Path = Path("/")) -> str:
    """The board name from the device tree, e.g. ``"NVIDIA Jetson AGX Orin"``."""
    return read_text(root / "proc/device-tree/model").replace("\x00", "").strip()


def read_cpuinfo(text: str) -> Tuple[str, Tuple[str, ...]]:
    """(CPU model, sorted oneDNN-relevant flags) from the first processor in /proc/cpuinfo."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if values:
                break  # the first processor block is enough: cores of one CPU share features
            continue
        name, sep, value = line.partition(":")
        if sep:
            values.setdefault(name.strip().lower(), value.strip())
    model = values.get("model name") or values.get("hardware") or ""
    if not model and "cpu part" in values:
        model = f"arm-{values.get('cpu implementer', '')}-{values['cpu part']}"
    flags = (values.get("flags") or values.get("features") or "").split()
    return model, tuple(sorted(_ONEDNN_FLAGS.intersection(flags)))


def read_cuda_version(root: Path = Path("/")) -> str:
    """Toolkit ``major.minor`` from /usr/local/cuda (version.json since 11, version.txt before)."""
    cuda = root / "usr/local/cuda"
    version = ""
    try:
        doc = json.loads(read_text(cuda / "version.json") or "{}")
        version = str(doc.get("cuda", {}).get("version", "")) if isinstance(doc, dict) else ""
    except (ValueError, AttributeError):
        version = ""
    if not version:
        match = re.search(r"CUDA Version\s+([0-9.]+)", read_text(cuda / "version.txt"))
        version = match.group(1) if match else ""
    # Patch releases do not change what a plan was built against; major.minor does.
    return ".".join(version.split(".")[:2])


def probe_nvidia_smi(executable: str = "nvidia-smi", timeout: float = 10.0) -> Optional[GpuInfo]:
    """GPU 0 from ``nvidia-smi``; None when it is not installed or reports no GPU."""
    path = shutil.which(executable)
    if path is None:
        return None
    # compute_cap is a query field only since driver 510; fall back to the name alone.
    for fields in ("name,compute_cap", "name"):
        rows = _run_csv([path, f"--query-gpu={fields}", "--format=csv,noheader", "-i", "0"], timeout)
        if rows and rows[0] and rows[0][0]:
            row = rows[0]
            return GpuInfo(name=row[0], compute_capability=row[1] if len(row) > 1 else "")
    return None


def _run_csv(argv: List[str], timeout: float) -> List[List[str]]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [[cell.strip() for cell in row] for row in csv.reader(done.stdout.splitlines()) if row]


def _tegra_soc(compatible: str) -> str:
    for item in compatible.split("\x00"):
        vendor, _, chip = item.strip().partition(",")
        if vendor == "nvidia" and chip.startswith("tegra"):
            return chip
    return ""


def _cpu_tier(flags: Tuple[str, ...], arch: str) -> str:
    for flag, tier in (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse4_2", "sse4"),
                       ("sve", "sve"), ("asimd", "neon")):
        if flag in flags:
            return tier
    return _slug(arch) or "unknown"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-._")
