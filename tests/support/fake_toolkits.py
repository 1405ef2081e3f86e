"""FAKE installs for the installer tests: a CUDA toolkit that is only an ``nvcc --version`` and a
``pycuda`` package that only answers the installer's "does it work" question. Neither builds nor
runs anything; the real source build runs on the GPU machine (tests/gpu/device-run.sh)."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple


def fake_cuda_toolkit(root: Path, release: str) -> Path:
    """``root/bin/nvcc`` printing ``release`` the way nvcc does, and an empty ``include/cuda.h``."""
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\n"
                    "echo 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
                    f"echo 'Cuda compilation tools, release {release}, V{release}.68'\n")
    nvcc.chmod(0o755)
    (root / "include" / "cuda.h").write_text("/* FAKE */\n")
    return root


def fake_pycuda_package(site: Path, version: str, cuda: Tuple[int, int, int]) -> Path:
    """A directory for PYTHONPATH whose ``pycuda`` imports and reports ``version`` and ``cuda``."""
    package = site / "pycuda"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"VERSION_TEXT = {version!r}  # FAKE pycuda\n")
    (package / "driver.py").write_text(f"def get_version():\n    return {cuda!r}\n")
    return site


def hidden_pycuda(site: Path) -> Path:
    """A directory for PYTHONPATH whose ``pycuda`` fails to import, hiding a real one (on a Jetson)."""
    package = site / "pycuda"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('pycuda hidden by the test')\n")
    return site
