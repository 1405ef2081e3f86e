from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict

from agent.engines.device import (
    DeviceIdentity,
    GpuInfo,
    detect_device,
    no_gpu,
    probe_nvidia_smi,
    read_cpuinfo,
)

ORIN_CPUINFO = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp \
uscat ilrcpc flagm paca pacg
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd42
CPU revision\t: 1

processor\t: 1
BogoMIPS\t: 62.50
Features\t: fp asimd
CPU implementer\t: 0x41
CPU part\t: 0xd42
"""

NANO_CPUINFO = """processor\t: 0
model name\t: ARMv8 Processor rev 1 (v8l)
BogoMIPS\t: 38.40
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32
CPU implementer\t: 0x41
CPU part\t: 0xd07
"""

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 sha_ni vaes

processor\t: 1
model name\t: AMD EPYC 7B13
"""

XEON_CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16
"""


def make_tree(root: Path, files: Dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def cuda_json(version: str) -> str:
    return json.dumps({"cuda": {"name": "CUDA SDK", "version": version}, "cuda_cudart": {"version": version}})


def test_orin_nano_jetpack6(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "proc/device-tree/model": "NVIDIA Jetson Orin Nano Developer Kit\x00",
        "proc/device-tree/compatible": "nvidia,p3768-0000+p3767-0005\x00nvidia,p3767-0005\x00nvidia,tegra234\x00",
        "etc/nv_tegra_release": "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
                                "DATE: Mon May  6 17:34:21 UTC 2024\n# KERNEL_VARIANT: oot\n",
        "proc/cpuinfo": ORIN_CPUINFO,
        "usr/local/cuda/version.json": cuda_json("12.2.140"),
    })
    dev = detect_device(root, gpu_probe=_must_not_probe, machine="aarch64")
    assert dev == DeviceIdentity(
        kind="jetson", arch="aarch64", model="NVIDIA Jetson Orin Nano Developer Kit", l4t="R36.3.0",
        soc="tegra234", compute_capability="8.7", cuda="12.2", cpu_model="arm-0x41-0xd42",
        cpu_flags=("asimd", "asimddp", "asimdhp", "fphp"),
    )
    assert dev.short() == "orin-nano-r36.3"


def test_agx_orin_jetpack5(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00",
        "proc/device-tree/compatible": "nvidia,p3737-0000+p3701-0005\x00nvidia,p3701-0005\x00nvidia,tegra234\x00",
        "etc/nv_tegra_release": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
                                "DATE: Tue Aug  1 19:57:35 UTC 2023\n",
        "usr/local/cuda/version.json": cuda_json("11.4.315"),
    })
    dev = detect_device(root, gpu_probe=_must_not_probe, machine="aarch64")
    assert (dev.l4t, dev.cuda, dev.compute_capability) == ("R35.4.1", "11.4", "8.7")
    assert dev.short() == "agx-orin-r35.4.1"


def test_jetson_nano_jetpack4_reads_version_txt(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {
        "proc/device-tree/model": "NVIDIA Jetson Nano Developer Kit\x00",
        "proc/device-tree/compatible": "nvidia,p3449-0000-b00+p3448-0002-b00\x00nvidia,jetson-nano\x00"
                                       "nvidia,tegra210\x00",
        "etc/nv_tegra_release": "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, "
                                "DATE: Sat Feb 19 17:05:08 UTC 2022\n",
        "proc/cpuinfo": NANO_CPUINFO,
        "usr/local/cuda/version.txt": "CUDA Version 10.2.300\n",
    })
    dev = detect_device(root, gpu_probe=_must_not_probe, machine="aarch64")
    assert (dev.soc, dev.compute_capability, dev.cuda) == ("tegra210", "5.3", "10.2")
    assert dev.cpu_model == "ARMv8 Processor rev 1 (v8l)"
    assert dev.short() == "nano-r32.7.1"


def test_unknown_tegra_is_still_a_jetson_without_guessing(tmp_path: Path) -> None:
    # A future SoC: kind and soc are known, the compute capability is not guessed.
    root = make_tree(tmp_path, {"proc/device-tree/compatible": "nvidia,tegra999\x00"})
    dev = detect_device(root, gpu_probe=_must_not_probe, machine="aarch64")
    assert (dev.kind, dev.soc, dev.compute_capability, dev.model, dev.l4t) == ("jetson", "tegra999", "", "", "")
    assert dev.short() == "tegra999"


def test_cpu_machine(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"proc/cpuinfo": X86_CPUINFO})
    dev = detect_device(root, gpu_probe=no_gpu, machine="x86_64")
    assert dev == DeviceIdentity(kind="cpu", arch="x86_64", cpu_model="AMD EPYC 7B13",
                                 cpu_flags=("avx", "avx2", "f16c", "fma", "sse4_2"))
    assert dev.short() == "cpu-avx2"


def test_cpu_tiers() -> None:
    _, xeon = read_cpuinfo(XEON_CPUINFO)
    assert "amx_int8" in xeon and "sse4_2" in xeon
    assert DeviceIdentity(kind="cpu", cpu_flags=xeon).short() == "cpu-avx512"
    assert DeviceIdentity(kind="cpu", arch="aarch64", cpu_flags=("asimd",)).short() == "cpu-neon"
    assert DeviceIdentity(kind="cpu", arch="aarch64", cpu_flags=("asimd", "sve")).short() == "cpu-sve"
    assert DeviceIdentity(kind="cpu", arch="riscv64").short() == "cpu-riscv64"


def test_discrete_gpu_from_probe(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"proc/cpuinfo": X86_CPUINFO, "usr/local/cuda/version.json": cuda_json("12.4.1")})
    dev = detect_device(root, gpu_probe=lambda: GpuInfo("NVIDIA GeForce RTX 3060", "8.6"), machine="x86_64")
    assert (dev.kind, dev.model, dev.compute_capability, dev.cuda) == ("gpu", "NVIDIA GeForce RTX 3060", "8.6", "12.4")
    assert dev.short() == "gpu-sm86"
    assert DeviceIdentity(kind="gpu", model="Tesla T4").short() == "gpu-tesla-t4"


def test_empty_root_is_an_unknown_cpu(tmp_path: Path) -> None:
    dev = detect_device(tmp_path, gpu_probe=no_gpu, machine="x86_64")
    assert dev == DeviceIdentity(kind="cpu", arch="x86_64")
    assert dev.short() == "cpu-x86_64"
    assert set(dev.as_fields().values()) == {"cpu", "x86_64", ""}


def test_this_machine() -> None:
    dev = detect_device()
    assert dev.kind in ("jetson", "gpu", "cpu")
    assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*", dev.short())
    assert all(isinstance(v, str) for v in dev.as_fields().values())


def test_as_fields_covers_every_attribute() -> None:
    dev = DeviceIdentity(kind="jetson", arch="a", model="m", l4t="l", soc="s", compute_capability="c",
                         cuda="u", cpu_model="p", cpu_flags=("x", "y"))
    assert dev.as_fields() == {"kind": "jetson", "arch": "a", "model": "m", "l4t": "l", "soc": "s",
                               "compute_capability": "c", "cuda": "u", "cpu_model": "p", "cpu_flags": "x,y"}


def fake_nvidia_smi(tmp_path: Path, body: str) -> str:
    """A stand-in nvidia-smi executable (a real process) printing what a driver would."""
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def test_nvidia_smi_probe(tmp_path: Path) -> None:
    exe = fake_nvidia_smi(tmp_path, 'echo "NVIDIA GeForce RTX 3060, 8.6"\n')
    assert probe_nvidia_smi(exe) == GpuInfo("NVIDIA GeForce RTX 3060", "8.6")


def test_nvidia_smi_probe_old_driver_without_compute_cap(tmp_path: Path) -> None:
    exe = fake_nvidia_smi(tmp_path, 'case "$1" in *compute_cap*) echo "Field \\"compute_cap\\" is not a valid '
                                    'field to query." >&2; exit 2;; esac\necho "Tesla T4"\n')
    assert probe_nvidia_smi(exe) == GpuInfo("Tesla T4", "")


def test_nvidia_smi_probe_without_gpu_or_tool(tmp_path: Path) -> None:
    exe = fake_nvidia_smi(tmp_path, 'echo "NVIDIA-SMI has failed because it could not communicate with the '
                                    'NVIDIA driver." >&2; exit 9\n')
    assert probe_nvidia_smi(exe) is None
    assert probe_nvidia_smi(os.fspath(tmp_path / "absent" / "nvidia-smi")) is None


def _must_not_probe() -> GpuInfo:
    raise AssertionError("a Jetson must not be probed for a discrete GPU")
