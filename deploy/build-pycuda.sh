#!/usr/bin/env bash
# Make pycuda importable for one Python: keep a working one, else build it from source against
# the CUDA toolkit (JetPack's /usr/local/cuda on a Jetson). pycuda has no aarch64 wheel on PyPI
# and JetPack does not ship it, so on a Jetson this is the only way to get it.
# deploy/install.sh runs this for the service's venv; the GPU tests' device run uses it too
# (docs/operations.md, "pycuda"). Run `deploy/build-pycuda.sh --help` for the options.
set -euo pipefail

PYTHON=python3
CUDA_DIR=/usr/local/cuda
FIND_LINKS=""
BUILD_ISOLATION=1
INSTALL_DEPS=0
CHECK_ONLY=0
CUDA_RELEASE=""
# Keep in step with the 'tensorrt' extra in pyproject.toml.
PYCUDA_SPEC="pycuda>=2022.1"
# Debian/Ubuntu (JetPack) packages that give the compiler and Python.h.
readonly BUILD_PACKAGES="python3-dev build-essential"

usage() {
    cat <<EOF
Usage: deploy/build-pycuda.sh [options]

Keeps a working pycuda, or builds '$PYCUDA_SPEC' from source for --python against the CUDA
toolkit in --cuda. The build compiles pycuda's C++ and its bundled Boost.Python, about 40
files one after another: it takes minutes, longer on small Jetsons.

  --python PATH           interpreter to install into (default: python3)
  --cuda DIR              CUDA toolkit with bin/nvcc and include/cuda.h (default: /usr/local/cuda)
  --find-links DIR        build offline from DIR (pip --no-index): pycuda's sdist, its runtime
                          requirements and, unless --no-build-isolation, its build requirements
  --no-build-isolation    build with the setuptools, wheel and numpy already in --python
  --install-build-deps    apt-get install $BUILD_PACKAGES when the compiler or Python.h is missing
  --check                 only say whether pycuda works or what would be built; build nothing
  -h, --help              this text
EOF
}

say() { printf 'build-pycuda: %s\n' "$*"; }
die() { printf 'build-pycuda: error: %s\n' "$*" >&2; exit 1; }

parse_args() {
    while (($#)); do
        case $1 in
            --python) PYTHON=${2:?--python needs a path}; shift ;;
            --cuda) CUDA_DIR=${2:?--cuda needs a directory}; shift ;;
            --find-links) FIND_LINKS=${2:?--find-links needs a directory}; shift ;;
            --no-build-isolation) BUILD_ISOLATION=0 ;;
            --install-build-deps) INSTALL_DEPS=1 ;;
            --check) CHECK_ONLY=1 ;;
            -h | --help) usage; exit 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
        shift
    done
    [[ -z $FIND_LINKS || -d $FIND_LINKS ]] || die "--find-links: no such directory: $FIND_LINKS"
    command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' found (--python)"
}

# "pycuda <version>, built for CUDA <x.y.z>" when pycuda imports, else nothing. Importing
# pycuda.driver loads the compiled module and libcuda, so a build left behind by a JetPack
# upgrade (a CUDA that is gone) counts as not working.
working_pycuda() {
    "$PYTHON" -c 'import pycuda, pycuda.driver as d; print("pycuda %s, built for CUDA %s" % (pycuda.VERSION_TEXT, ".".join(map(str, d.get_version()))))' 2>/dev/null
}

cuda_release() {
    "$CUDA_DIR/bin/nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p' | head -n 1
}

check_cuda() {
    if [[ ! -x $CUDA_DIR/bin/nvcc || ! -f $CUDA_DIR/include/cuda.h ]]; then
        die "no CUDA toolkit at $CUDA_DIR (needs bin/nvcc and include/cuda.h) to build pycuda against.
  On a Jetson: install JetPack's CUDA (sudo apt-get install nvidia-jetpack, or the cuda-toolkit
  package of your JetPack), then run this again. Elsewhere: pass --cuda DIR of a CUDA toolkit.
  Only models with 'backend: tensorrt' need pycuda: deploy/install.sh --pycuda skip installs without it."
    fi
    CUDA_RELEASE=$(cuda_release)
    [[ -n $CUDA_RELEASE ]] || die "$CUDA_DIR/bin/nvcc --version does not name a CUDA release: is the toolkit complete?"
}

# The build packages that are missing, by what the build needs from them.
missing_build_packages() {
    local missing=()
    command -v "${CXX:-c++}" >/dev/null 2>&1 || missing+=(build-essential)
    "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
        missing+=(python3-dev)
    printf '%s' "${missing[*]}"
}

check_build_packages() {
    local missing
    missing=$(missing_build_packages)
    [[ -n $missing ]] || return 0
    if ((!INSTALL_DEPS)); then
        die "building pycuda needs $missing (a C++ compiler and Python.h): sudo apt-get install $BUILD_PACKAGES"
    fi
    if ((CHECK_ONLY)); then
        say "would install the build packages: apt-get install -y $BUILD_PACKAGES (missing: $missing)"
        return 0
    fi
    say "installing the build packages ($missing missing): apt-get install -y $BUILD_PACKAGES"
    # shellcheck disable=SC2086 # a list of package names
    apt-get install -y $BUILD_PACKAGES ||
        die "could not install $BUILD_PACKAGES: run 'sudo apt-get update' first, or install them by hand"
}

build() {
    # No wheel cache: a wheel built for the CUDA before a JetPack upgrade would come back.
    local pip_args=(--disable-pip-version-check --no-binary pycuda --no-cache-dir)
    if "$PYTHON" -m pip show pycuda >/dev/null 2>&1; then
        say "an installed pycuda does not import (built for another CUDA?): rebuilding it"
        pip_args+=(--force-reinstall --no-deps)
    fi
    [[ -z $FIND_LINKS ]] || pip_args+=(--no-index --find-links "$FIND_LINKS")
    ((BUILD_ISOLATION)) || pip_args+=(--no-build-isolation)
    if ((CHECK_ONLY)); then
        say "would build $PYCUDA_SPEC from source against CUDA $CUDA_RELEASE at $CUDA_DIR for $PYTHON"
        return 0
    fi
    say "building $PYCUDA_SPEC from source against CUDA $CUDA_RELEASE at $CUDA_DIR for $PYTHON."
    say "This compiles pycuda's C++ and takes minutes (longer on small Jetsons); pip prints each step below."
    local started=$SECONDS
    # pycuda's setup finds the toolkit through the nvcc on PATH.
    PATH=$CUDA_DIR/bin:$PATH CUDA_ROOT=$CUDA_DIR \
        "$PYTHON" -m pip install "${pip_args[@]}" -v "$PYCUDA_SPEC" ||
        die "the pycuda build failed (its compiler output is above). Needs: CUDA at $CUDA_DIR, $BUILD_PACKAGES,
  and network access to PyPI (or --find-links DIR with pycuda's sdist and requirements)."
    local built
    built=$(working_pycuda) || die "pycuda was built but does not import in $PYTHON; see the output above"
    say "done in $((SECONDS - started)) s: $built"
    # The import loads libcuda, so the build links against this driver; a device answering is the last check.
    "$PYTHON" -c 'import pycuda.driver as d; d.init(); print("build-pycuda: CUDA devices: %d" % d.Device.count())' ||
        say "warning: pycuda imports, but no CUDA device answers here (no driver or GPU): backend: tensorrt cannot run"
}

main() {
    parse_args "$@"
    local found
    if found=$(working_pycuda); then
        say "$found, already works for $PYTHON: nothing to build"
        return 0
    fi
    check_cuda
    check_build_packages
    build
}

main "$@"
