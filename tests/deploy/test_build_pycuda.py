"""deploy/build-pycuda.sh's decisions, with FAKE toolkits (tests/support/fake_toolkits.py).

Only ``--check`` runs here: this machine has no complete CUDA toolkit, so the real source
build is run on the GPU machine by tests/gpu/device-run.sh (docs/status.md has the result).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from tests.support.fake_toolkits import fake_cuda_toolkit, fake_pycuda_package, hidden_pycuda

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "build-pycuda.sh"


@pytest.fixture(autouse=True)
def no_real_pycuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "Would build" must not depend on whether the machine running the tests has pycuda.
    monkeypatch.setenv("PYTHONPATH", str(hidden_pycuda(tmp_path / "hidden")))


def check(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    cmd = ["bash", str(SCRIPT), "--check", "--python", sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=dict(os.environ, **(env or {})))


@pytest.fixture
def cuda(tmp_path: Path) -> Path:
    return fake_cuda_toolkit(tmp_path / "cuda-11.4", "11.4")


def test_builds_against_the_toolkit_it_is_given(cuda: Path) -> None:
    result = check("--cuda", str(cuda), "--install-build-deps")
    assert result.returncode == 0, result.stderr
    assert f"would build pycuda>=2022.1 from source against CUDA 11.4 at {cuda} for {sys.executable}" in result.stdout


def test_missing_toolkit_names_the_jetpack_fix(tmp_path: Path) -> None:
    result = check("--cuda", str(tmp_path / "nowhere"))
    assert result.returncode != 0
    assert f"no CUDA toolkit at {tmp_path / 'nowhere'} (needs bin/nvcc and include/cuda.h)" in result.stderr
    assert "sudo apt-get install nvidia-jetpack" in result.stderr


def test_missing_compiler_is_named_or_installed(cuda: Path) -> None:
    no_compiler = {"CXX": "/nonexistent/c++"}
    result = check("--cuda", str(cuda), env=no_compiler)
    assert result.returncode != 0
    assert "building pycuda needs build-essential" in result.stderr
    assert "sudo apt-get install python3-dev build-essential" in result.stderr
    result = check("--cuda", str(cuda), "--install-build-deps", env=no_compiler)
    assert result.returncode == 0, result.stderr
    assert "would install the build packages: apt-get install -y python3-dev build-essential" in result.stdout


def test_a_working_pycuda_needs_no_toolkit(tmp_path: Path) -> None:
    site = fake_pycuda_package(tmp_path / "site", "2026.1", (13, 0, 0))
    result = check("--cuda", str(tmp_path / "nowhere"), env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    assert f"pycuda 2026.1, built for CUDA 13.0.0, already works for {sys.executable}: nothing to build" \
        in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--find-links", "/nonexistent"], "--find-links: no such directory"),
    (["--frobnicate"], "unknown option '--frobnicate'"),
])
def test_bad_options(args: list, message: str) -> None:
    result = check(*args)
    assert result.returncode != 0 and message in result.stderr
