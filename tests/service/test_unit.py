"""systemd/edge-agent.service: systemd itself accepts it, and it keeps the promises the agent relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from agent.cli.main import build_parser
from agent.errors import EX_CONFIG

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "edge-agent.service"
INSTALLED_EXEC = "/opt/edge-agent/venv/bin/edge-agent"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason="systemd-analyze not installed (apt-get install systemd)")

# systemd version that introduced each setting this unit uses or could plausibly gain.
# JetPack 5 runs systemd 245, JetPack 6 runs 249 (Ubuntu 20.04 / 22.04).
INTRODUCED_IN = {
    "LoadCredential": 247, "ProtectClock": 247, "ProtectProc": 247, "ProcSubset": 247,
    "PrivateIPC": 248, "ExtensionDirectories": 251, "OpenFile": 253, "RestartSteps": 254,
    "RestartMaxDelaySec": 254, "ReloadSignal": 253, "MemoryKSM": 254,
}
# LoadCredential= is ignored with a warning on 245; install.sh adds a drop-in for that case.
HANDLED_ON_JETPACK5 = {"LoadCredential"}


def directives() -> List[Tuple[str, str, str]]:
    """(section, key, value) for every setting; keys may repeat, so configparser does not fit."""
    out, section = [], ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def settings() -> Dict[str, List[str]]:
    found: Dict[str, List[str]] = {}
    for _, key, value in directives():
        found.setdefault(key, []).append(value)
    return found


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's agent: verify checks that it exists."""
    exe = Path(sys.executable).with_name("edge-agent")
    assert exe.exists(), f"{exe} missing: pip install -e . in the venv"
    text = UNIT.read_text()
    assert text.count(f"ExecStart={INSTALLED_EXEC} ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={exe} "))
    return copy


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(runnable_copy(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    # verify exits 0 even for unknown keys or an unknown Type=: any output is a finding.
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr


@needs_analyze
def test_systemd_analyze_verify_sees_the_jetpack5_dropin(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    unit = runnable_copy(tmp_path)
    dropin = tmp_path / "edge-agent.service.d"
    dropin.mkdir()
    (dropin / "50-credentials-fallback.conf").write_text(
        "[Service]\nEnvironment=CREDENTIALS_DIRECTORY=/etc/edge-agent/credentials\n")
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr


@needs_analyze
def test_hardening_exposure_does_not_regress(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    probe = subprocess.run([SYSTEMD_ANALYZE, "security", "--help"], capture_output=True, text=True, timeout=60)
    if "--offline" not in probe.stdout:
        pytest.skip("this systemd-analyze cannot score a unit offline (needs systemd >= 252)")
    # --threshold is ten times the printed score: 40 means "exposure 4.0 or better" (3.9 when written).
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=40",
                             str(runnable_copy(tmp_path))], capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert result.returncode == 0, f"exposure rose above 4.0: {score.group(1) if score else result.stdout[-500:]}"


def test_notify_protocol_settings() -> None:
    s = settings()
    # JetPack 5/6 (systemd 245/249) have no notify-reload; the agent sends RELOADING=1/READY=1 itself.
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert int(s["WatchdogSec"][0]) >= 10
    assert int(s["TimeoutStartSec"][0]) >= 60
    assert s["ExecStart"] == [f"{INSTALLED_EXEC} run --config /etc/edge-agent/config.yaml"]


def test_exec_start_is_a_valid_agent_command_line() -> None:
    argv = settings()["ExecStart"][0].split()[1:]
    args = build_parser().parse_args(argv)
    assert args.command == "run" and str(args.config) == "/etc/edge-agent/config.yaml" and not args.once


def test_restart_policy_stops_on_configuration_errors() -> None:
    s = settings()
    assert s["Restart"] == ["on-failure"]
    assert str(EX_CONFIG) in s["RestartPreventExitStatus"][0].split()


def test_gpu_stays_reachable() -> None:
    s = settings()
    assert "video" in s["SupplementaryGroups"][0].split()
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock", "PrivateUsers",
                "MemoryDenyWriteExecute", "PrivateTmp", "DynamicUser"):
        assert key not in s, f"{key}= breaks the GPU, cameras or JIT on a Jetson (see the unit's comments)"
    assert "AF_INET" in s["RestrictAddressFamilies"][0].split()


def test_directories_and_credential_match_the_installer() -> None:
    s = settings()
    assert s["StateDirectory"] == s["CacheDirectory"] == s["ConfigurationDirectory"] == ["edge-agent"]
    assert s["LoadCredential"] == ["mqtt.pass:/etc/edge-agent/credentials/mqtt.pass"]
    env = dict(v.split("=", 1) for v in s["Environment"])
    assert env["HOME"] == "/var/lib/edge-agent" and env["CUDA_CACHE_PATH"].startswith("/var/cache/edge-agent/")
    install = (REPO / "deploy" / "install.sh").read_text()
    for line in ("readonly STATE_DIR=/var/lib/edge-agent", "readonly CACHE_DIR=/var/cache/edge-agent",
                 "readonly CONF_DIR=/etc/edge-agent", "readonly CRED_NAME=mqtt.pass",
                 "readonly VENV=$PREFIX/venv", "readonly PREFIX=/opt/edge-agent"):
        assert line in install


def test_runs_on_jetpack_systemd() -> None:
    keys = {key for _, key, _ in directives()}
    too_new = {k for k in keys if INTRODUCED_IN.get(k, 0) > 245} - HANDLED_ON_JETPACK5
    assert not too_new, f"unknown to systemd 245 (JetPack 5): {sorted(too_new)}"
    assert all(INTRODUCED_IN.get(k, 0) <= 249 for k in keys)

