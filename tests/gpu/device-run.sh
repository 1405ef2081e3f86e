#!/usr/bin/env bash
# The gpu tests on a borrowed NVIDIA machine with no network (docs/status.md records the runs):
# install the carried wheels, build pycuda from source with deploy/build-pycuda.sh (the same
# script the installer runs on a Jetson), run `pytest -m gpu tests/gpu`, keep the logs in $OUT.
#   usage: tests/gpu/device-run.sh CARRY_DIR   (CARRY_DIR: pycuda's sdist and the wheels below)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
CARRY=${1:?usage: tests/gpu/device-run.sh CARRY_DIR}
OUT=${OUT:-/tmp/gpu-run}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/device-run.log") 2>&1

section() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

section machine
date -u
uname -srm
nproc
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
nvidia-smi | head -n 4
"$PY" -VV

section toolkit
# JetPack puts the toolkit at /usr/local/cuda; elsewhere take the one whose nvcc is on PATH.
CUDA=/usr/local/cuda
[[ -x $CUDA/bin/nvcc ]] || CUDA=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
echo "CUDA toolkit: $CUDA"
"$CUDA/bin/nvcc" --version | tail -n 2
ls "$CUDA/include/cuda.h" "$CUDA/include/curand.h" 2>&1
ls "$CUDA"/lib64/libcurand.so* "$CUDA"/lib64/stubs/libcuda.so* 2>&1
ldconfig -p | grep -E 'libcuda\.so|libcurand\.so' || true

# pycuda links -lcuda, found in the toolkit's stubs or, failing that, the driver's own library;
# and cuRAND, which the agent does not use: left out where the toolkit lacks it. Jetsons have both.
if [[ ! -e $CUDA/lib64/libcuda.so && ! -e $CUDA/lib64/stubs/libcuda.so ]]; then
    mkdir -p /tmp/cuda-link
    ln -sf "$(ldconfig -p | awk '/libcuda\.so\.1 / { print $NF; exit }')" /tmp/cuda-link/libcuda.so
    echo "CUDADRV_LIB_DIR = ['$CUDA/lib64', '/tmp/cuda-link']" >>~/.aksetup-defaults.py
fi
if [[ ! -f $CUDA/include/curand.h ]] || ! ls "$CUDA"/lib64/libcurand.so >/dev/null 2>&1; then
    echo "CUDA_ENABLE_CURAND = False" >>~/.aksetup-defaults.py
fi
if [[ -f ~/.aksetup-defaults.py ]]; then
    echo "pycuda build settings (~/.aksetup-defaults.py):"
    cat ~/.aksetup-defaults.py
else
    echo "pycuda build settings: pycuda's own defaults, as on a Jetson"
fi

section "carried wheels"
"$PY" -m pip install -q --no-index --no-deps --disable-pip-version-check "$CARRY"/*.whl || exit 1
"$PY" -m pip list 2>/dev/null | grep -i -E '^(numpy|onnx|onnxruntime|pydantic|pytest|nvidia-ml-py|psutil|pyyaml|setuptools) '

SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [[ -f $CARRY/pycuda-built.tgz ]]; then
    # A rerun for the tests only: the pycuda an earlier run built here, from the same sdist.
    section "pycuda: built by an earlier run (pycuda-built.tgz), not rebuilt"
    tar xzf "$CARRY/pycuda-built.tgz" -C "$SITE"
    build=0
else
    section "pycuda: source build"
    deploy/build-pycuda.sh --python "$PY" --cuda "$CUDA" --find-links "$CARRY" --no-build-isolation 2>&1 |
        tee "$OUT/build-pycuda.log" | grep -v -E '^ *(gcc|g\+\+|x86_64-linux-gnu-g)' | tail -n 40
    build=${PIPESTATUS[0]}
    echo "build-pycuda.sh exit status: $build"
    ((build)) || (cd "$SITE" && tar czf "$OUT/pycuda-built.tgz" pycuda pycuda-*.dist-info)
fi
section "pycuda: detected on a second run"
deploy/build-pycuda.sh --python "$PY" --cuda "$CUDA" --check

section "pytest -m gpu tests/gpu"
PYTHONUNBUFFERED=1 "$PY" -m pytest -m gpu tests/gpu -v -s -rA -p no:cacheprovider \
    -o junit_family=xunit1 --junitxml="$OUT/gpu-junit.xml" 2>&1 | tee "$OUT/pytest-gpu.log"
tests=${PIPESTATUS[0]}
section finished
echo "build-pycuda: $build, pytest: $tests"
exit $((build || tests))
