"""agent/platform.py: the one L4T release parser and Jetson check, in both of the formats its users need."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from agent.engines.device import detect_device, no_gpu
from agent.platform import is_jetson, l4t_release, parse_l4t_release
from agent.telemetry.jetson import JetsonReader

FIXTURES = Path(__file__).parent / "telemetry" / "fixtures" / "sysfs"


@pytest.mark.parametrize("text, version, tag", [
    ("# R32 (release), REVISION: 7.6, GCID: 38171779, BOARD: t210ref, EABI: aarch64", "32.7.6", "R32.7.6"),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64", "35.4.1", "R35.4.1"),
    ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64", "36.4.3", "R36.4.3"),
    ("# R32 (release), REVISION: 5, GCID: 25531747, BOARD: t186ref", "32.5", "R32.5"),
    ("not a release line", None, None),
    ("", None, None),
])
def test_one_parser_gives_the_release_and_the_cache_tag(text: str, version: Optional[str], tag: Optional[str]) -> None:
    release = parse_l4t_release(text)
    assert (release.version if release else None, release.tag if release else None) == (version, tag)


@pytest.mark.parametrize("fixture", ["nano_jp4", "orin_agx_jp6", "xavier_nx_jp5"])
def test_the_engine_device_and_telemetry_agree_on_a_jetson(fixture: str) -> None:
    root = FIXTURES / fixture
    release = l4t_release(root)
    assert is_jetson(root) and JetsonReader(root).available()
    device = detect_device(root, gpu_probe=no_gpu, machine="aarch64")
    assert device.kind == "jetson"
    assert device.l4t == (release.tag if release else "")
    assert JetsonReader(root).read()["l4t"] == (release.version if release else None)  # type: ignore[index]


def test_a_plain_machine_is_no_jetson(tmp_path: Path) -> None:
    assert not is_jetson(tmp_path) and l4t_release(tmp_path) is None
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    compatible = tmp_path / "proc" / "device-tree" / "compatible"
    compatible.write_bytes(b"nvidia,p3768-0000+p3767-0005\x00nvidia,tegra234\x00")
    assert is_jetson(tmp_path)  # a device tree alone is enough
