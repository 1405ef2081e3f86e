"""deploy/install.sh staged into a temporary root (--root): files, modes, idempotence, uninstall.

Users, ownership, the venv and systemctl are only printed in this mode, so those parts are
checked by what the script says it would run; a real install was not run here.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest
import yaml

from agent.manifest.config import AgentConfig
from agent.manifest.load import load_config
from agent.manifest.models import Manifest
from tests.support.fake_toolkits import fake_cuda_toolkit, fake_pycuda_package, hidden_pycuda

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"
UNIT = REPO / "systemd" / "edge-agent.service"

JETPACK_6_1 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 2025"

Tree = Dict[str, Tuple[int, bytes]]


def run(root: Path, *args: str, check: bool = True,
        env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    cmd = ["bash", str(INSTALL), "--root", str(root), "--python", sys.executable, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def snapshot(root: Path) -> Tree:
    """Every path under root: mode and content (symlinks by target)."""
    tree: Tree = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            body = os.readlink(path).encode()
        elif stat.S_ISREG(st.st_mode):
            body = path.read_bytes()
        else:
            body = b""
        tree[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), body)
    return tree


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def no_real_pycuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whether pycuda gets built must not depend on the machine running the tests.
    monkeypatch.setenv("PYTHONPATH", str(hidden_pycuda(tmp_path / "hidden")))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "nv_tegra_release").write_text(JETPACK_6_1 + "\n")
    (r / "etc" / "hostname").write_text("Orin_NX.lab\n")
    fake_cuda_toolkit(r / "usr" / "local" / "cuda", "12.6")  # JetPack 6.1's
    return r


def test_install_writes_config_credentials_and_unit(root: Path) -> None:
    out = run(root, "--systemd-version", "249", "--mqtt-host", "broker.lan", "--mqtt-username", "orin-nx-lab").stdout
    etc = root / "etc" / "edge-agent"
    assert mode(etc) == 0o755
    assert mode(etc / "credentials") == 0o700
    password = etc / "credentials" / "mqtt.pass"
    assert mode(password) == 0o600 and password.read_bytes() == b""
    assert mode(root / "var" / "lib" / "edge-agent") == 0o750
    assert mode(root / "var" / "cache" / "edge-agent") == 0o750
    unit = root / "etc" / "systemd" / "system" / "edge-agent.service"
    assert unit.read_bytes() == UNIT.read_bytes() and mode(unit) == 0o644
    assert not (root / "etc" / "systemd" / "system" / "edge-agent.service.d").exists()
    assert os.readlink(root / "usr" / "local" / "bin" / "edge-agent") == "/opt/edge-agent/venv/bin/edge-agent"

    config = load_config(etc / "config.yaml", environ={})
    assert isinstance(config, AgentConfig)
    assert config.device_id == "orin-nx-lab"  # from the staged /etc/hostname
    assert (config.cache_dir, config.state_dir, config.manifest) == (
        "/var/cache/edge-agent", "/var/lib/edge-agent", "manifest.yaml")
    assert (config.mqtt.host, config.mqtt.username) == ("broker.lan", "orin-nx-lab")
    # The bare name is the credential id in the unit's LoadCredential=.
    assert config.mqtt.password_file == "mqtt.pass"
    assert "LoadCredential=mqtt.pass:/etc/edge-agent/credentials/mqtt.pass" in UNIT.read_text()
    # The example manifest is schema-valid; only its model files are missing until the operator adds them.
    Manifest.model_validate(yaml.safe_load((etc / "manifest.yaml").read_text()))

    assert "JetPack 6.1/6.2" in out and "TensorRT 10.3" in out
    assert "would run: useradd --system --user-group --groups video" in out
    assert f"would run: {sys.executable} -m venv --system-site-packages /opt/edge-agent/venv" in out
    # No CPU paddlepaddle on a Jetson: it would shadow JetPack's GPU build.
    pip = next(line for line in out.splitlines() if "/opt/edge-agent/venv/bin/pip install" in line)
    assert pip.rstrip().endswith(str(REPO))
    for step in ("systemctl daemon-reload", "systemctl enable edge-agent.service",
                 "systemctl restart edge-agent.service", "systemctl status edge-agent",
                 "journalctl -u edge-agent -f", "edge-agent validate --config /etc/edge-agent/config.yaml"):
        assert step in out


def test_second_run_changes_nothing_and_keeps_edited_config(root: Path) -> None:
    run(root)
    first = snapshot(root)
    run(root)
    assert snapshot(root) == first
    config = root / "etc" / "edge-agent" / "config.yaml"
    manifest = root / "etc" / "edge-agent" / "manifest.yaml"
    config.write_text(config.read_text().replace("port: 1883", "port: 8883"))
    manifest.write_text("version: 7\nmodels: [{name: m, model: /m.json, params: /m.pdiparams}]\n")
    out = run(root, "--mqtt-port", "1884").stdout
    assert "port: 8883" in config.read_text() and "version: 7" in manifest.read_text()
    assert "kept /etc/edge-agent/config.yaml" in out and "kept /etc/edge-agent/manifest.yaml" in out


def test_password_file_is_copied_private_and_never_printed(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-Pa55\n")
    result = run(root, "--mqtt-username", "dev", "--mqtt-password-file", str(secret))
    password = root / "etc" / "edge-agent" / "credentials" / "mqtt.pass"
    assert password.read_text() == "s3cret-Pa55\n" and mode(password) == 0o600
    assert "s3cret" not in result.stdout + result.stderr
    # An existing password survives a re-run without the option.
    run(root)
    assert password.read_text() == "s3cret-Pa55\n"


def test_systemd_245_gets_the_credentials_fallback_and_249_removes_it(root: Path) -> None:
    dropin = root / "etc" / "systemd" / "system" / "edge-agent.service.d" / "50-credentials-fallback.conf"
    out = run(root, "--systemd-version", "245").stdout
    assert "Environment=CREDENTIALS_DIRECTORY=/etc/edge-agent/credentials" in dropin.read_text()
    # Without LoadCredential= the agent reads the file itself, so it must own it.
    assert "would run: chown edge-agent:edge-agent /etc/edge-agent/credentials/mqtt.pass" in out
    assert mode(root / "etc" / "edge-agent" / "credentials") == 0o750
    run(root, "--systemd-version", "249")
    assert not dropin.parent.exists()


def test_manifest_and_models_are_installed(root: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "my-manifest.yaml"
    manifest.write_text("version: 3\nmodels: [{name: det, model: /var/lib/edge-agent/models/det.onnx, "
                        "backend: tensorrt}]\n")
    models = tmp_path / "models"
    (models / "det").mkdir(parents=True)
    (models / "det.onnx").write_bytes(b"onnx-bytes")
    (models / "det" / "labels.txt").write_text("person\n")
    run(root, "--manifest", str(manifest), "--models", str(models))
    assert (root / "etc" / "edge-agent" / "manifest.yaml").read_text() == manifest.read_text()
    installed = root / "var" / "lib" / "edge-agent" / "models"
    assert (installed / "det.onnx").read_bytes() == b"onnx-bytes"
    assert (installed / "det" / "labels.txt").read_text() == "person\n"


def test_uninstall_keeps_the_engine_cache_and_purge_removes_it(root: Path) -> None:
    before = set(snapshot(root))
    run(root)
    engine = root / "var" / "cache" / "edge-agent" / "engines" / "det-fp16-abc" / "engine.plan"
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"plan")
    out = run(root, "--uninstall").stdout
    assert "would run: systemctl disable --now edge-agent.service" in out
    assert "would run: userdel edge-agent" in out
    left = set(snapshot(root)) - before
    # Only the engine is left, plus directories (the cache's and empty parents like etc/systemd/system).
    assert {p for p in left if not (root / p).is_dir()} == {str(engine.relative_to(root))}
    assert engine.read_bytes() == b"plan" and mode(engine.parents[2]) == 0o750
    run(root, "--uninstall", "--purge")
    assert not (root / "var" / "cache" / "edge-agent").exists()


def test_dry_run_changes_nothing(root: Path) -> None:
    before = snapshot(root)
    out = run(root, "--dry-run").stdout
    assert snapshot(root) == before
    assert "would write: " + str(root / "etc" / "edge-agent" / "config.yaml") in out
    run(root)
    installed = snapshot(root)
    run(root, "--dry-run", "--uninstall", "--purge")
    assert snapshot(root) == installed


@pytest.mark.parametrize(("release", "expected"), [
    ("# R35 (release), REVISION: 1.0, GCID: 1, BOARD: t186ref", "JetPack 5.0.2: Ubuntu 20.04, Python 3.8, CUDA 11.4, "
                                                              "TensorRT 8.4"),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref", "JetPack 5.1.x: Ubuntu 20.04, Python 3.8, "
                                                                      "CUDA 11.4, TensorRT 8.5"),
    ("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic", "JetPack 6.0: Ubuntu 22.04, Python 3.10, "
                                                                      "CUDA 12.2, TensorRT 8.6"),
    ("# R38 (release), REVISION: 2.0, GCID: 1, BOARD: generic", "DLA: none on\n  Jetson Thor"),
    (None, "not a Jetson (no /etc/nv_tegra_release)"),
])
def test_jetpack_detection(root: Path, release: Optional[str], expected: str) -> None:
    release_file = root / "etc" / "nv_tegra_release"
    if release is None:
        release_file.unlink()
    else:
        release_file.write_text(release + "\n")
    out = run(root, "--dry-run").stdout
    assert expected in out
    pip = next(line for line in out.splitlines() if "venv/bin/pip install" in line)
    # The CPU Paddle wheel only where JetPack does not provide Paddle's GPU build.
    assert pip.endswith("\\[paddle\\]") == (release is None)


def test_jetpack_4_is_refused_with_a_reason(root: Path) -> None:
    (root / "etc" / "nv_tegra_release").write_text("# R32 (release), REVISION: 7.4, GCID: 1, BOARD: t210ref\n")
    result = run(root, check=False)
    assert result.returncode != 0
    assert "JetPack 4" in result.stderr and "Python >= 3.8" in result.stderr
    assert not (root / "etc" / "edge-agent").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--device-id", "Bad_ID"], "device id 'Bad_ID'"),
    (["--mqtt-port", "70000"], "--mqtt-port must be 1-65535"),
    (["--mqtt-host", 'evil"host'], "broker host and username"),
    (["--purge"], "--purge only goes with --uninstall"),
    (["--manifest", "/nonexistent.yaml"], "--manifest: no such file"),
    (["--frobnicate"], "unknown option '--frobnicate'"),
])
def test_bad_options_are_refused_before_any_change(root: Path, args: list, message: str) -> None:
    result = run(root, *args, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert not (root / "etc" / "edge-agent" / "config.yaml").exists()


def test_root_must_be_absolute_and_not_slash(tmp_path: Path) -> None:
    for bad, message in (("relative/dir", "--root needs an absolute path"), ("/", "--root / is the real system")):
        result = subprocess.run(["bash", str(INSTALL), "--root", bad], capture_output=True, text=True, timeout=60,
                                cwd=tmp_path)
        assert result.returncode != 0 and message in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_shellcheck_is_clean() -> None:
    result = subprocess.run(["shellcheck", str(INSTALL), str(INSTALL.parent / "build-pycuda.sh")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_jetson_builds_pycuda_into_the_venv_before_the_agent(root: Path) -> None:
    out = run(root, "--dry-run").stdout
    assert "JetPack does not ship it and PyPI has no aarch64 wheel" in out
    assert f"would build pycuda>=2022.1 from source against CUDA 12.6 at {root}/usr/local/cuda" in out
    assert "the build takes minutes on a Jetson" in out
    lines = out.splitlines()
    build = next(i for i, line in enumerate(lines) if "build-pycuda.sh --install-build-deps" in line)
    assert lines[build].endswith("--python /opt/edge-agent/venv/bin/python --cuda /usr/local/cuda")
    pip = next(i for i, line in enumerate(lines) if "venv/bin/pip install" in line)
    venv = next(i for i, line in enumerate(lines) if "-m venv --system-site-packages" in line)
    assert venv < build < pip


def test_jetson_without_cuda_fails_before_any_change_with_the_fix(root: Path) -> None:
    shutil.rmtree(root / "usr")
    result = run(root, check=False)
    assert result.returncode != 0
    assert f"no CUDA toolkit at {root}/usr/local/cuda" in result.stderr
    assert "sudo apt-get install nvidia-jetpack" in result.stderr and "--pycuda skip" in result.stderr
    assert not (root / "etc" / "edge-agent").exists()
    # Without TensorRT models the operator can install anyway.
    out = run(root, "--pycuda", "skip").stdout
    assert "pycuda: skipped (--pycuda skip)" in out and "build-pycuda.sh" not in out.replace(
        "until deploy/build-pycuda.sh has run", "")


def test_a_working_pycuda_is_kept(root: Path, tmp_path: Path) -> None:
    shutil.rmtree(root / "usr")  # no toolkit needed when pycuda already imports
    site = fake_pycuda_package(tmp_path / "site", "2025.1.2", (12, 6, 0))
    env = dict(os.environ, PYTHONPATH=str(site))
    out = run(root, env=env).stdout
    assert "pycuda 2025.1.2, built for CUDA 12.6.0, already works" in out


def test_pycuda_elsewhere_only_when_asked(root: Path) -> None:
    (root / "etc" / "nv_tegra_release").unlink()
    out = run(root, "--dry-run").stdout
    assert "pycuda: not built (not a Jetson; --pycuda build builds it against /usr/local/cuda)" in out
    assert "build-pycuda.sh --install-build-deps" not in out
    out = run(root, "--dry-run", "--pycuda", "build").stdout
    assert "build-pycuda.sh --install-build-deps --python /opt/edge-agent/venv/bin/python" in out
    result = run(root, "--pycuda", "always", check=False)
    assert result.returncode != 0 and "--pycuda must be auto, build or skip" in result.stderr
