"""The tegrastats parser against lines collected from public reports (fixtures/README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from agent.telemetry.tegrastats import parse_tegrastats

TEGRASTATS = Path(__file__).parent / "fixtures" / "tegrastats"


def lines(name: str) -> List[str]:
    return [line for line in (TEGRASTATS / name).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("path", sorted(TEGRASTATS.glob("*.txt")), ids=lambda p: p.stem)
def test_every_recorded_line_yields_ram_cpu_and_engines(path: Path) -> None:
    for line in lines(path.name):
        parsed = parse_tegrastats(line)
        assert parsed["ram"]["total_mb"] >= parsed["ram"]["used_mb"] > 0
        assert parsed["cpu"] and all("online" in core for core in parsed["cpu"])
        assert "EMC" in parsed["engines"]
        for temp in parsed.get("temperatures_c", {}).values():
            assert -60 < temp <= 150


def test_jetson_nano_jetpack4_line() -> None:
    parsed = parse_tegrastats(lines("jetson_nano_jp4.txt")[2])
    assert parsed["ram"] == {"used_mb": 1504, "total_mb": 3956, "lfb_blocks": 331, "lfb_block_mb": 4}
    assert parsed["iram"] == {"used_kb": 0, "total_kb": 252, "lfb_kb": 252}
    assert "swap" not in parsed
    assert parsed["cpu"][0] == {"online": True, "load_percent": 19, "freq_mhz": 1479}
    assert parsed["engines"]["GR3D"] == {"load_percent": 99, "freq_mhz": 921}
    assert parsed["engines"]["EMC"] == {"load_percent": 9, "freq_mhz": 1600}
    assert parsed["engines"]["NVDEC"] == {"freq_mhz": 716}
    assert parsed["engines"]["VIC"] == {"load_percent": 0, "freq_mhz": 140}
    assert parsed["engines"]["APE"] == {"freq_mhz": 25}
    assert parsed["temperatures_c"] == {
        "PLL": 39.5, "CPU": 43.5, "PMIC": 100.0, "GPU": 43.0, "AO": 48.0, "thermal": 43.0,
    }
    # The pre-JetPack-5 rail form has no unit; tegrastats documents it as mW.
    assert parsed["rails"]["POM_5V_IN"] == {"watts": 4.523, "average_watts": 3.422}
    assert set(parsed["rails"]) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"}


def test_agx_orin_line_drops_unpowered_sensors_and_unconnected_rails() -> None:
    parsed = parse_tegrastats(lines("agx_orin_64gb.txt")[0])
    assert parsed["time"] == "04-11-2025 10:36:27"
    assert len(parsed["cpu"]) == 12
    assert parsed["swap"] == {"used_mb": 19, "total_mb": 31400, "cached_mb": 0}
    assert parsed["engines"]["GR3D"] == {"load_percent": 0, "freq_mhz": 0, "gpc_freq_mhz": [0, 0]}
    assert parsed["engines"]["VIC"] == {"freq_mhz": 729}
    temps = parsed["temperatures_c"]
    assert "CV0" not in temps and "GPU" not in temps  # both read -256C: sensor off
    assert temps["tj"] == 44.343 and temps["SOC1"] == 41.25
    assert set(parsed["rails"]) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    assert parsed["rails"]["VIN_SYS_5V0"] == {"watts": 4.025, "average_watts": 4.025}


def test_orin_line_with_video_engines_and_dla_off() -> None:
    parsed = parse_tegrastats(lines("orin_6core_vdd_in.txt")[0])
    engines = parsed["engines"]
    assert engines["NVENC"] == {"load_percent": 1, "freq_mhz": 115}
    assert engines["NVDEC"] == {"load_percent": 40, "freq_mhz": 115}
    assert engines["NVDLA0"] == {"off": True}
    assert engines["PVA0"] == {"off": True}
    assert engines["GR3D"]["gpc_freq_mhz"] == [713]
    assert parsed["cpu"][5] == {"online": True, "load_percent": 93, "freq_mhz": 247}
    assert parsed["temperatures_c"]["tj"] == 65.562
    assert parsed["rails"]["VDD_IN"] == {"watts": 17.946, "average_watts": 15.71}


def test_agx_xavier_jetpack42_rail_names_do_not_collide_with_sensors() -> None:
    parsed = parse_tegrastats(lines("agx_xavier_jp42.txt")[0])
    assert parsed["engines"]["EMC"] == {"load_percent": 0}
    assert parsed["engines"]["GR3D"] == {"load_percent": 0}
    assert parsed["temperatures_c"]["GPU"] == 30.5
    assert parsed["rails"]["GPU"] == {"watts": 0.463, "average_watts": 0.463}
    assert parsed["rails"]["SYS5V"]["watts"] == 3.306
    assert "MTS" not in parsed["engines"]


def test_l4t_28_legacy_format_shares_one_cpu_clock() -> None:
    parsed = parse_tegrastats(lines("tx1_l4t28.txt")[1])
    assert [core["load_percent"] for core in parsed["cpu"]] == [17, 11, 65, 0]
    assert {core["freq_mhz"] for core in parsed["cpu"]} == {1734}
    assert parsed["engines"]["GR3D"] == {"load_percent": 39, "freq_mhz": 76}
    assert parsed["engines"]["EMC"] == {"load_percent": 1, "freq_mhz": 1600}


def test_second_gpc_and_offline_cores() -> None:
    # GR3D2_FREQ as rbonghi/jetson_stats#362 quotes it from an Orin NX on early JetPack 5.
    parsed = parse_tegrastats("RAM 2257/30536MB CPU [3%@729,off,off] GR3D_FREQ 0%@114 GR3D2_FREQ 0%@114")
    assert parsed["engines"]["GR3D2"] == {"load_percent": 0, "freq_mhz": 114}
    assert parsed["cpu"][1:] == [{"online": False}, {"online": False}]


@pytest.mark.parametrize("line", ["", "   ", "tegrastats: permission denied", "NVML: not supported"])
def test_lines_without_statistics_parse_to_nothing(line: str) -> None:
    assert parse_tegrastats(line) == {}
