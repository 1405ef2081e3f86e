"""JetsonReader and its parts against sysfs trees built from public reports (fixtures/README.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.telemetry.ina3221 import input_power, read_power_rails
from agent.telemetry.jetson import JetsonReader, parse_nvpmodel
from agent.telemetry.thermal import read_thermal_zones

SYSFS = Path(__file__).parent / "fixtures" / "sysfs"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_agx_orin_jetpack6_tree() -> None:
    snapshot = JetsonReader(SYSFS / "orin_agx_jp6").read()
    assert snapshot is not None
    assert snapshot["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert snapshot["l4t"] == "36.4.0"
    assert snapshot["nvpmodel"] == {"id": 0, "name": "MAXN"}
    assert snapshot["gpu_load_percent"] == 0.0
    thermal = snapshot["thermal_c"]
    assert thermal["tj-thermal"] == 47.5 and thermal["tdiode-thermal"] == 39.75
    # cv0 reads -256 C and cv1/cv2 cannot be read (EAGAIN on a device): all three are left out.
    assert not any(zone.startswith("cv") for zone in thermal)
    assert list(thermal)[-1] == "tdiode-thermal"  # zone10 sorts after zone9, not after zone1
    rails = snapshot["power"]["rails"]
    assert set(rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}  # "NC" channels skipped
    assert rails["VDD_GPU_SOC"] == {"volts": 0.843, "amps": 6.17, "watts": 5.201,
                                    "crit_alarm": False, "warn_alarm": False}
    assert rails["VIN_SYS_5V0"]["watts"] == pytest.approx(4.968 * 0.953, abs=1e-3)
    # AGX Orin has no whole-module input rail: no total rather than a double-counted sum.
    assert "input_watts" not in snapshot["power"]


def test_jetson_nano_jetpack4_iio_tree() -> None:
    snapshot = JetsonReader(SYSFS / "nano_jp4").read()
    assert snapshot is not None
    assert snapshot["model"] == "NVIDIA Jetson Nano Developer Kit"
    assert snapshot["l4t"] == "32.7.6"
    assert snapshot["nvpmodel"] == {"id": 0, "name": "MAXN", "default_id": 0}
    assert snapshot["gpu_load_percent"] == 99.0
    assert snapshot["thermal_c"]["CPU-therm"] == 43.5
    assert snapshot["thermal_c"]["PMIC-Die"] == 100.0
    power = snapshot["power"]
    assert power["rails"]["POM_5V_IN"] == {"volts": 5.0, "amps": 0.904, "watts": 4.523}
    assert (power["input_rail"], power["input_watts"]) == ("POM_5V_IN", 4.523)


def test_xavier_nx_jetpack5_tree() -> None:
    snapshot = JetsonReader(SYSFS / "xavier_nx_jp5").read()
    assert snapshot is not None
    assert snapshot["model"] == "NVIDIA Jetson Xavier NX Developer Kit (SD-card)"
    assert snapshot["l4t"] == "35.4.1"
    # No nvpmodel.conf in this tree: the mode id and fan mode are known, its name is not.
    assert snapshot["nvpmodel"] == {"id": 8, "fan_mode": "quiet"}
    rails = snapshot["power"]["rails"]
    assert set(rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}  # not "sum of shunt voltages"
    assert rails["VDD_IN"]["warn_alarm"] is True and rails["VDD_IN"]["crit_alarm"] is False
    assert snapshot["power"]["input_watts"] == 5.08


@pytest.mark.parametrize("root", ["empty", "x86_with_thermal_zone"])
def test_off_jetson_nothing_is_read_and_nothing_is_logged(
    tmp_path: Path, root: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    if root == "x86_with_thermal_zone":
        write(tmp_path / "sys/class/thermal/thermal_zone0/type", "x86_pkg_temp\n")
        write(tmp_path / "sys/class/thermal/thermal_zone0/temp", "45000\n")
    reader = JetsonReader(tmp_path)
    assert reader.available() is False
    assert reader.read() is None
    assert not caplog.records


def test_device_tree_alone_identifies_a_jetson(tmp_path: Path) -> None:
    # Containers often lack /etc/nv_tegra_release but still see the device tree.
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/compatible").write_bytes(b"nvidia,p3768-0000+p3767-0005\x00nvidia,tegra234\x00")
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Orin Nano Developer Kit\x00")
    snapshot = JetsonReader(tmp_path).read()
    assert snapshot == {"model": "NVIDIA Orin Nano Developer Kit"}


@pytest.mark.parametrize("load_path", [
    "sys/devices/platform/gpu.0/load",
    "sys/devices/gpu.0/load",
    "sys/devices/platform/bus@0/17000000.gpu/load",
    "sys/devices/17000000.ga10b/load",
    "sys/devices/57000000.gpu/load",
])
def test_gpu_load_is_found_under_each_known_path(tmp_path: Path, load_path: str) -> None:
    write(tmp_path / load_path, "437\n")
    assert JetsonReader(tmp_path).gpu_load_percent() == 43.7


def test_unreadable_or_garbage_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "sys/class/thermal/thermal_zone0/temp").mkdir(parents=True)  # read fails: EISDIR
    write(tmp_path / "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
    write(tmp_path / "sys/class/thermal/thermal_zone1/type", "gpu-thermal")
    write(tmp_path / "sys/class/thermal/thermal_zone1/temp", "n/a")
    write(tmp_path / "sys/class/thermal/thermal_zone2/type", "gpu-thermal")
    write(tmp_path / "sys/class/thermal/thermal_zone2/temp", "51000")
    write(tmp_path / "sys/class/thermal/thermal_zone3/type", "gpu-thermal")
    write(tmp_path / "sys/class/thermal/thermal_zone3/temp", "52000")
    assert read_thermal_zones(tmp_path) == {"gpu-thermal": 51.0, "gpu-thermal#3": 52.0}


def test_rails_need_label_voltage_and_current(tmp_path: Path) -> None:
    hwmon = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon2"
    write(hwmon / "in1_label", "VDD_IN")
    write(hwmon / "in1_input", "5000")
    write(hwmon / "curr1_input", "2000")
    write(hwmon / "in2_label", "VDD_SOC")
    write(hwmon / "in2_input", "5000")  # no curr2_input: not a rail reading
    other = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0041/hwmon/hwmon3"
    write(other / "in1_label", "VDD_IN")
    write(other / "in1_input", "1800")
    write(other / "curr1_input", "100")
    iio = tmp_path / "sys/bus/i2c/drivers/ina3221x/0-0040/iio:device0"
    write(iio / "rail_name_0", "VDD_GPU")
    write(iio / "in_power0_input", "1250")  # power alone is enough on the iio driver
    rails = read_power_rails(tmp_path)
    assert rails == {
        "VDD_IN": {"volts": 5.0, "amps": 2.0, "watts": 10.0},
        "VDD_IN@1-0041": {"volts": 1.8, "amps": 0.1, "watts": 0.18},
        "VDD_GPU": {"watts": 1.25},
    }
    assert input_power(rails) == ("VDD_IN", 10.0)
    assert input_power({}) is None


def test_nvpmodel_parsing() -> None:
    conf = (
        "< POWER_MODEL ID=0 NAME=MAXN >\nCPU_ONLINE CORE_0 1\n"
        "< POWER_MODEL ID=1 NAME=5W >\n< PM_CONFIG DEFAULT=0 >\n"
    )
    assert parse_nvpmodel(conf, "pmode:0001 fmode:cool") == {"id": 1, "name": "5W", "fan_mode": "cool",
                                                              "default_id": 0}
    assert parse_nvpmodel(conf, None) == {"default_id": 0}
    assert parse_nvpmodel(None, "pmode:0002") == {"id": 2}
    assert parse_nvpmodel(None, None) is None
