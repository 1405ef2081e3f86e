#!/usr/bin/env bash
# Install jetson-edge-agent as a systemd service on a Jetson (JetPack 5/6/7) or Debian/Ubuntu.
# Run `deploy/install.sh --help` for the options; docs/operations.md explains the layout.
set -euo pipefail

readonly SERVICE=edge-agent
readonly SERVICE_USER=edge-agent
readonly PREFIX=/opt/edge-agent
readonly VENV=$PREFIX/venv
readonly CONF_DIR=/etc/edge-agent
readonly CRED_DIR=$CONF_DIR/credentials
readonly CRED_NAME=mqtt.pass
readonly STATE_DIR=/var/lib/edge-agent
readonly MODELS_DIR=$STATE_DIR/models
readonly CACHE_DIR=/var/cache/edge-agent
readonly UNIT_DIR=/etc/systemd/system
readonly UNIT_FILE=$UNIT_DIR/$SERVICE.service
readonly DROPIN_DIR=$UNIT_DIR/$SERVICE.service.d
readonly CRED_DROPIN=$DROPIN_DIR/50-credentials-fallback.conf
readonly CLI_LINK=/usr/local/bin/edge-agent
readonly BUILD_PYCUDA=build-pycuda.sh
# systemd gained LoadCredential= in 247; JetPack 5 ships 245.
readonly LOAD_CREDENTIAL_SINCE=247

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$SCRIPT_DIR")
readonly SCRIPT_DIR REPO_DIR

ACTION=install
PURGE=0
DRY_RUN=0
ROOT=""
START=1
PYTHON=python3
SOURCE=$REPO_DIR
EXTRAS=auto
PYCUDA=auto
CUDA_DIR=/usr/local/cuda
FIND_LINKS=""
DEVICE_ID=""
MQTT_HOST=127.0.0.1
MQTT_PORT=1883
MQTT_USERNAME=""
MQTT_PASSWORD_FILE=""
TOPIC_PREFIX=edge
MANIFEST_SRC=""
MODELS_SRC=""
SYSTEMD_VERSION=""
L4T_MAJOR=""
L4T_REVISION=""

usage() {
    cat <<EOF
Usage: deploy/install.sh [options]

Installs jetson-edge-agent as the systemd service '$SERVICE': a system user '$SERVICE_USER'
(group video), a virtual environment in $VENV (with the system site packages, so JetPack's
TensorRT, the Jetson Paddle wheel and GStreamer OpenCV are visible), pycuda built into it from
source on a Jetson (JetPack does not ship it and PyPI has no aarch64 wheel: deploy/$BUILD_PYCUDA,
minutes), config in $CONF_DIR (never overwritten), the unit in $UNIT_FILE, enabled and started.
Safe to run again to upgrade.

Install:
  --source PATH            repository directory or wheel to pip-install (default: $REPO_DIR)
  --extras LIST            pip extras, e.g. paddle,onnx (default: none on a Jetson, where Paddle
                           and TensorRT come from JetPack; 'paddle' elsewhere)
  --find-links DIR         install offline from the wheels in DIR (pip --no-index); on a Jetson
                           DIR also needs pycuda's sdist and its build requirements
  --pycuda MODE            auto: build pycuda on a Jetson (default); build: build it here too (a
                           discrete GPU with CUDA and TensorRT); skip: never (backend: tensorrt
                           models then fail with a clear error until deploy/$BUILD_PYCUDA is run)
  --cuda DIR               CUDA toolkit to build pycuda against (default: $CUDA_DIR, JetPack's)
  --python PATH            interpreter for the venv (default: python3)
  --device-id ID           device id for a new config.yaml (default: from the hostname)
  --mqtt-host HOST         broker for a new config.yaml (default: 127.0.0.1)
  --mqtt-port PORT         (default: 1883)
  --mqtt-username NAME     broker user for a new config.yaml; the password is read by systemd
                           from $CRED_DIR/$CRED_NAME
  --mqtt-password-file F   copy F to $CRED_DIR/$CRED_NAME (mode 0600); never pass a password on
                           the command line
  --topic-prefix PREFIX    (default: edge)
  --manifest FILE          install FILE as $CONF_DIR/manifest.yaml if none exists yet
  --models DIR             copy the contents of DIR to $MODELS_DIR
  --no-start               enable the service but do not (re)start it
  --systemd-version N      assume this systemd version (default: systemctl --version)

Remove:
  --uninstall              stop and remove the service, venv, config, credentials, state and user;
                           keeps the engine cache $CACHE_DIR
  --purge                  with --uninstall: remove the engine cache too

Staging and checks:
  --root DIR               write the files into DIR instead of / (every path prefixed); only
                           print what would be done to users, ownership, the venv and systemd
  --dry-run                change nothing; print every action
  -h, --help               this text
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

show() {
    local text
    printf -v text '%q ' "$@"
    printf '%s\n' "${text% }"
}

# A change to files under $ROOT: done unless --dry-run.
on_fs() {
    if ((DRY_RUN)); then
        printf '  would: '
        show "$@"
    else
        "$@"
    fi
}

# A change to the running system (users, ownership, the venv, systemd): only in a real install,
# because a staged root has neither the user nor a systemd that could use it.
on_system() {
    if ((DRY_RUN)) || [[ -n $ROOT ]]; then
        printf '  would run: '
        show "$@"
    else
        printf '  + '
        show "$@"
        "$@"
    fi
}

# Like on_system for steps that may legitimately fail (removing what is already gone).
on_system_try() {
    on_system "$@" || warn "'$*' failed; continuing"
}

# Write stdin to a file atomically with the given mode. mktemp creates the file 0600, so a
# secret is never readable by others, not even for a moment.
write_file() {
    local mode=$1 dest=$2 tmp
    if ((DRY_RUN)); then
        say "  would write: $dest (mode $mode)"
        cat >/dev/null
        return
    fi
    tmp=$(mktemp "$dest.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
    say "  wrote $dest (mode $mode)"
}

make_dir() {
    local mode=$1 dir=$2
    on_fs mkdir -p "$dir"
    on_fs chmod "$mode" "$dir"
}

parse_args() {
    while (($#)); do
        case $1 in
            --uninstall) ACTION=uninstall ;;
            --purge) PURGE=1 ;;
            --dry-run) DRY_RUN=1 ;;
            --no-start) START=0 ;;
            --root) ROOT=${2:?--root needs a directory}; shift ;;
            --source) SOURCE=${2:?--source needs a path}; shift ;;
            --extras) EXTRAS=${2?--extras needs a list}; shift ;;
            --find-links) FIND_LINKS=${2:?--find-links needs a directory}; shift ;;
            --pycuda) PYCUDA=${2:?--pycuda needs auto, build or skip}; shift ;;
            --cuda) CUDA_DIR=${2:?--cuda needs a directory}; shift ;;
            --python) PYTHON=${2:?--python needs a path}; shift ;;
            --device-id) DEVICE_ID=${2:?--device-id needs a value}; shift ;;
            --mqtt-host) MQTT_HOST=${2:?--mqtt-host needs a value}; shift ;;
            --mqtt-port) MQTT_PORT=${2:?--mqtt-port needs a value}; shift ;;
            --mqtt-username) MQTT_USERNAME=${2:?--mqtt-username needs a value}; shift ;;
            --mqtt-password-file) MQTT_PASSWORD_FILE=${2:?--mqtt-password-file needs a file}; shift ;;
            --topic-prefix) TOPIC_PREFIX=${2:?--topic-prefix needs a value}; shift ;;
            --manifest) MANIFEST_SRC=${2:?--manifest needs a file}; shift ;;
            --models) MODELS_SRC=${2:?--models needs a directory}; shift ;;
            --systemd-version) SYSTEMD_VERSION=${2:?--systemd-version needs a number}; shift ;;
            -h | --help) usage; exit 0 ;;
            *) die "unknown option '$1' (see --help)" ;;
        esac
        shift
    done
    if ((PURGE)) && [[ $ACTION != uninstall ]]; then
        die "--purge only goes with --uninstall"
    fi
    if [[ -n $ROOT ]]; then
        [[ $ROOT == /* ]] || die "--root needs an absolute path (got '$ROOT')"
        ROOT=${ROOT%/}
        [[ -n $ROOT ]] || die "--root / is the real system: leave --root out for a real install"
        ((DRY_RUN)) || mkdir -p "$ROOT"
    fi
    if ! [[ $MQTT_PORT =~ ^[0-9]{1,5}$ ]] || ((MQTT_PORT < 1 || MQTT_PORT > 65535)); then
        die "--mqtt-port must be 1-65535 (got '$MQTT_PORT')"
    fi
    [[ -z $SYSTEMD_VERSION || $SYSTEMD_VERSION =~ ^[0-9]+$ ]] ||
        die "--systemd-version must be a number like 249 (got '$SYSTEMD_VERSION')"
    # These end up in YAML strings: refuse what would need escaping rather than escape it.
    local value
    for value in "$MQTT_HOST" "$MQTT_USERNAME"; do
        [[ $value =~ ^[A-Za-z0-9._@:-]*$ ]] ||
            die "'$value': broker host and username may contain only letters, digits and . _ @ : -"
    done
    [[ $TOPIC_PREFIX =~ ^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$ ]] ||
        die "--topic-prefix: letters, digits, _ and - in /-separated levels, no wildcards (got '$TOPIC_PREFIX')"
    [[ -z $MANIFEST_SRC || -f $MANIFEST_SRC ]] || die "--manifest: no such file: $MANIFEST_SRC"
    [[ -z $MODELS_SRC || -d $MODELS_SRC ]] || die "--models: no such directory: $MODELS_SRC"
    [[ -z $MQTT_PASSWORD_FILE || -r $MQTT_PASSWORD_FILE ]] ||
        die "--mqtt-password-file: cannot read $MQTT_PASSWORD_FILE"
    [[ -z $FIND_LINKS || -d $FIND_LINKS ]] || die "--find-links: no such directory: $FIND_LINKS"
    [[ $PYCUDA =~ ^(auto|build|skip)$ ]] || die "--pycuda must be auto, build or skip (got '$PYCUDA')"
    [[ $CUDA_DIR == /* ]] || die "--cuda needs an absolute path (got '$CUDA_DIR')"
    if [[ -z $ROOT ]] && ((!DRY_RUN)); then
        ((EUID == 0)) || die "a real install needs root: run it with sudo (or stage it with --root DIR)"
        [[ -d /run/systemd/system ]] || die "systemd is not running here: stage the files with --root DIR instead"
    fi
}

# /etc/nv_tegra_release's first line: "# R35 (release), REVISION: 4.1, GCID: ..., BOARD: ...".
detect_l4t() {
    local file=$ROOT/etc/nv_tegra_release line
    [[ -f $file ]] || return 0
    line=$(head -n 1 "$file")
    if [[ $line =~ R([0-9]+)[[:space:]]*\(release\),[[:space:]]*REVISION:[[:space:]]*([0-9.]+) ]]; then
        L4T_MAJOR=${BASH_REMATCH[1]}
        L4T_REVISION=${BASH_REMATCH[2]}
    else
        warn "cannot read the L4T release from $file ('$line'); treating this as a generic Linux machine"
    fi
}

# Which JetPack this L4T is and which TensorRT/Paddle builds fit it (NVIDIA's release notes and
# Paddle's install docs; the device's own `dpkg -l | grep nvinfer` is the final word).
platform_advice() {
    if [[ -z $L4T_MAJOR ]]; then
        say "platform: not a Jetson (no /etc/nv_tegra_release)."
        say "  Paddle: the CPU wheel (extra 'paddle') or paddlepaddle-gpu for this machine's CUDA."
        say "  TensorRT: only with a discrete NVIDIA GPU and NVIDIA's tensorrt wheel; otherwise models run on the CPU."
        return
    fi
    local minor=${L4T_REVISION%%.*}
    say "platform: Jetson, L4T R$L4T_MAJOR.$L4T_REVISION"
    case $L4T_MAJOR in
        32)
            die "L4T R32 is JetPack 4 (Ubuntu 18.04, Python 3.6); the agent needs Python >= 3.8: upgrade to JetPack 5 or 6"
            ;;
        35)
            if [[ $minor == 1 ]]; then
                say "  JetPack 5.0.2: Ubuntu 20.04, Python 3.8, CUDA 11.4, TensorRT 8.4, systemd 245."
            else
                say "  JetPack 5.1.x: Ubuntu 20.04, Python 3.8, CUDA 11.4, TensorRT 8.5, systemd 245."
            fi
            say "  Paddle: Paddle's Jetson wheels for JetPack 5 (paddlepaddle-gpu 2.x, 3.0: JetPack 5.1.2,"
            say "  CUDA 11.4, TensorRT 8.5.2, cp38 only); install one into the system Python (sudo pip3"
            say "  install <wheel>) and the venv sees it. Use .pdmodel models for DLA (PIR-TRT has no DLA)."
            say "  DLA: on Xavier NX/AGX and Orin NX/AGX, not on Orin Nano."
            ;;
        36)
            if [[ $minor -le 3 ]]; then
                say "  JetPack 6.0: Ubuntu 22.04, Python 3.10, CUDA 12.2, TensorRT 8.6, systemd 249."
            else
                say "  JetPack 6.1/6.2: Ubuntu 22.04, Python 3.10, CUDA 12.6, TensorRT 10.3, systemd 249."
            fi
            say "  Paddle: Paddle 3.0 lists no Jetson wheel for JetPack 6; use backend: tensorrt with ONNX"
            say "  models (paddle2onnx on a workstation), or a Paddle built from source for this JetPack."
            say "  DLA: on Orin NX/AGX, not on Orin Nano."
            ;;
        38 | 39)
            say "  JetPack 7: Ubuntu 24.04, TensorRT 10.x/11.x. TensorRT 11 dropped the FP16/INT8 builder"
            say "  flags and the INT8 calibrator (the agent's version adapter handles it); DLA: none on"
            say "  Jetson Thor, and under TensorRT 11 only from 11.4.1 on AGX Orin with JetPack >= 7.2.2."
            say "  Paddle: no Jetson wheel; use backend: tensorrt with ONNX models."
            ;;
        *)
            warn "L4T R$L4T_MAJOR is newer or older than this installer knows; check TensorRT and Paddle by hand"
            ;;
    esac
}

detect_systemd_version() {
    if [[ -z $SYSTEMD_VERSION ]] && command -v systemctl >/dev/null 2>&1; then
        SYSTEMD_VERSION=$(systemctl --version | awk 'NR == 1 { print $2 }')
        [[ $SYSTEMD_VERSION =~ ^[0-9]+$ ]] || SYSTEMD_VERSION=""
    fi
    say "systemd: ${SYSTEMD_VERSION:-unknown version}"
}

credentials_fallback() {
    [[ -n $SYSTEMD_VERSION ]] && ((SYSTEMD_VERSION < LOAD_CREDENTIAL_SINCE))
}

check_python() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' found: install python3 (apt-get install python3 python3-venv)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 8))' ||
        die "$("$PYTHON" -V 2>&1) is too old: the agent needs Python >= 3.8"
    say "python: $("$PYTHON" -V 2>&1) ($(command -v "$PYTHON"))"
}

default_device_id() {
    local name
    if [[ -f $ROOT/etc/hostname ]]; then
        name=$(head -n 1 "$ROOT/etc/hostname")
    else
        name=$(uname -n)
    fi
    name=$(printf '%s' "$name" | LC_ALL=C tr '[:upper:]' '[:lower:]' | LC_ALL=C tr -c 'a-z0-9-' '-' | sed 's/^[^a-z0-9]*//' | cut -c1-63)
    printf '%s' "${name:-edge-device}"
}

ensure_user() {
    local groups=()
    if getent group video >/dev/null 2>&1; then
        groups=(--groups video)
    else
        warn "no 'video' group here: the GPU and camera device nodes may be unreachable for $SERVICE_USER"
    fi
    if [[ -z $ROOT ]] && id -u "$SERVICE_USER" >/dev/null 2>&1; then
        ((${#groups[@]} == 0)) || on_system usermod --append "${groups[@]}" "$SERVICE_USER"
    else
        on_system useradd --system --user-group "${groups[@]}" --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "jetson-edge-agent" "$SERVICE_USER"
    fi
}

ensure_dirs() {
    make_dir 0755 "$ROOT$CONF_DIR"
    make_dir 0700 "$ROOT$CRED_DIR"
    make_dir 0750 "$ROOT$STATE_DIR"
    make_dir 0755 "$ROOT$MODELS_DIR"
    make_dir 0750 "$ROOT$CACHE_DIR"
    on_system chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR" "$CACHE_DIR"
}

# pycuda for backend: tensorrt. Decided and checked before any change, so a Jetson without
# CUDA fails with the fix in hand instead of half-installed.
wants_pycuda() {
    [[ $PYCUDA == build || ($PYCUDA == auto && -n $L4T_MAJOR) ]]
}

check_pycuda() {
    if ! wants_pycuda; then
        if [[ $PYCUDA == skip ]]; then
            say "pycuda: skipped (--pycuda skip): backend: tensorrt models fail until deploy/$BUILD_PYCUDA has run"
        else
            say "pycuda: not built (not a Jetson; --pycuda build builds it against $CUDA_DIR)"
        fi
        return 0
    fi
    say "pycuda: needed by backend: tensorrt; JetPack does not ship it and PyPI has no aarch64 wheel"
    # The system Python stands in for the venv (same interpreter, system site packages); a staged
    # install looks for the toolkit inside --root.
    local args=(--check --install-build-deps --python "$PYTHON" --cuda "$ROOT$CUDA_DIR")
    [[ -z $FIND_LINKS ]] || args+=(--find-links "$FIND_LINKS")
    "$SCRIPT_DIR/$BUILD_PYCUDA" "${args[@]}" ||
        die "pycuda cannot be built here (above); fix that, or install without it: --pycuda skip"
}

build_pycuda() {
    wants_pycuda || return 0
    local args=(--install-build-deps --python "$VENV/bin/python" --cuda "$CUDA_DIR")
    [[ -z $FIND_LINKS ]] || args+=(--find-links "$FIND_LINKS")
    say "  pycuda: built from source unless a working one is found; the build takes minutes on a Jetson"
    on_system "$SCRIPT_DIR/$BUILD_PYCUDA" "${args[@]}"
}

ensure_venv() {
    local want
    want=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [[ -z $ROOT && -x $VENV/bin/python ]] &&
        grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg" &&
        [[ $("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) == "$want" ]]; then
        say "  venv $VENV: kept (Python $want, system site packages)"
    else
        # A venv whose Python changed (a JetPack upgrade) cannot be repaired in place.
        on_system rm -rf "$VENV"
        if ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
            on_system apt-get install -y python3-venv ||
                die "cannot install python3-venv: run 'apt-get update' first, or install it by hand"
        fi
        on_system "$PYTHON" -m venv --system-site-packages "$VENV"
    fi
    # Before the agent itself: a 'tensorrt' extra then finds pycuda installed instead of
    # compiling it without CUDA on PATH.
    build_pycuda
    local extras=$EXTRAS spec=$SOURCE pip_args=(--disable-pip-version-check --upgrade)
    if [[ $extras == auto ]]; then
        # On a Jetson a pip-installed CPU paddlepaddle would shadow JetPack's GPU build.
        if [[ -n $L4T_MAJOR ]]; then extras=""; else extras=paddle; fi
    fi
    [[ -z $extras ]] || spec="${SOURCE}[${extras}]"
    [[ -z $FIND_LINKS ]] || pip_args+=(--no-index --find-links "$FIND_LINKS")
    on_system "$VENV/bin/pip" install "${pip_args[@]}" "$spec"
    on_fs mkdir -p "$ROOT$(dirname "$CLI_LINK")"
    on_fs ln -sfn "$VENV/bin/edge-agent" "$ROOT$CLI_LINK"
}

# What the venv can actually use: the honest answer to "will TensorRT work?".
report_runtimes() {
    [[ -z $ROOT ]] && ((!DRY_RUN)) || return 0
    say "runtimes visible to the agent:"
    "$VENV/bin/python" - <<'EOF' || warn "could not inspect the venv's runtimes"
import importlib

def show(name, version):
    print(f"  {name}: {version}")

try:
    trt = importlib.import_module("tensorrt")
    show("TensorRT", trt.__version__ if hasattr(trt, "Builder") else "not installed (stub package only)")
except ImportError:
    show("TensorRT", "not importable: the pure TensorRT backend is unavailable")
try:
    pycuda = importlib.import_module("pycuda")
    driver = importlib.import_module("pycuda.driver")
    show("pycuda", f"{pycuda.VERSION_TEXT} (built for CUDA {'.'.join(map(str, driver.get_version()))})")
except ImportError:
    show("pycuda", "not importable: backend: tensorrt is unavailable (deploy/build-pycuda.sh builds it)")
try:
    paddle = importlib.import_module("paddle")
    inference = importlib.import_module("paddle.inference")
    trt_version = ".".join(map(str, inference.get_trt_compile_version()))
    cuda = "CUDA" if paddle.is_compiled_with_cuda() else "CPU only"
    show("Paddle", f"{paddle.__version__} ({cuda}, TensorRT compile version {trt_version})")
except ImportError:
    show("Paddle", "not importable: the paddle backend is unavailable")
EOF
}

config_yaml() {
    cat <<EOF
# Written by deploy/install.sh; re-running the installer never overwrites this file.
# Every key: docs/config.md. Check: edge-agent validate --config $CONF_DIR/config.yaml
# Apply changes: systemctl reload $SERVICE (manifest) or systemctl restart $SERVICE (this file).
device_id: $DEVICE_ID
manifest: manifest.yaml
cache_dir: $CACHE_DIR
state_dir: $STATE_DIR
mqtt:
  host: "$MQTT_HOST"
  port: $MQTT_PORT
  topic_prefix: $TOPIC_PREFIX
EOF
    if [[ -n $MQTT_USERNAME ]]; then
        cat <<EOF
  username: "$MQTT_USERNAME"
  # A bare name is read from \$CREDENTIALS_DIRECTORY: systemd's private copy of
  # $CRED_DIR/$CRED_NAME (LoadCredential= in the unit).
  password_file: $CRED_NAME
EOF
    else
        cat <<EOF
  # For a broker with passwords: set username, write the password to
  # $CRED_DIR/$CRED_NAME and add: password_file: $CRED_NAME
EOF
    fi
}

example_manifest_yaml() {
    cat <<EOF
# Example written by deploy/install.sh because no --manifest was given; re-running the
# installer never overwrites this file. Replace the model with yours (files under
# $MODELS_DIR/), then: edge-agent validate --config $CONF_DIR/config.yaml
# and: systemctl restart $SERVICE. Every key: docs/manifest.md.
version: 1
models:
  - name: classifier
    model: $MODELS_DIR/classifier/inference.json
    params: $MODELS_DIR/classifier/inference.pdiparams
    target: gpu
    precision: fp16
    inputs:
      - name: x
        shape: [1, 3, 224, 224]
    preprocess:
      resize: [224, 224]
      color: rgb
      layout: nchw
    postprocess:
      type: classification
      top_k: 5
pipelines:
  - name: camera
    source: csi://0
    model: classifier
EOF
}

write_config() {
    local config=$ROOT$CONF_DIR/config.yaml manifest=$ROOT$CONF_DIR/manifest.yaml
    local password=$ROOT$CRED_DIR/$CRED_NAME
    if [[ -e $config ]]; then
        say "  kept $CONF_DIR/config.yaml"
    else
        [[ -n $DEVICE_ID ]] || DEVICE_ID=$(default_device_id)
        [[ $DEVICE_ID =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] ||
            die "device id '$DEVICE_ID': 1-63 of a-z, 0-9 and -, starting with a letter or digit (--device-id)"
        config_yaml | write_file 0644 "$config"
    fi
    if [[ -e $manifest ]]; then
        say "  kept $CONF_DIR/manifest.yaml"
    elif [[ -n $MANIFEST_SRC ]]; then
        write_file 0644 "$manifest" <"$MANIFEST_SRC"
    else
        example_manifest_yaml | write_file 0644 "$manifest"
    fi
    if [[ -n $MQTT_PASSWORD_FILE ]]; then
        write_file 0600 "$password" <"$MQTT_PASSWORD_FILE"
    elif [[ -e $password ]]; then
        say "  kept $CRED_DIR/$CRED_NAME"
    else
        # LoadCredential= fails the unit when its source is missing, so an empty file stands in
        # until the broker needs a password.
        write_file 0600 "$password" </dev/null
    fi
    if [[ -n $MODELS_SRC ]]; then
        on_fs cp -R "$MODELS_SRC/." "$ROOT$MODELS_DIR/"
    fi
}

write_unit() {
    on_fs mkdir -p "$ROOT$UNIT_DIR"
    write_file 0644 "$ROOT$UNIT_FILE" <"$REPO_DIR/systemd/$SERVICE.service"
    if credentials_fallback; then
        # No LoadCredential= here: the agent reads the file itself, so it must own it.
        make_dir 0755 "$ROOT$DROPIN_DIR"
        write_file 0644 "$ROOT$CRED_DROPIN" <<EOF
# Written by deploy/install.sh: systemd $SYSTEMD_VERSION has no LoadCredential= (needs $LOAD_CREDENTIAL_SINCE),
# so the agent reads the password file directly, as its owner.
[Service]
Environment=CREDENTIALS_DIRECTORY=$CRED_DIR
EOF
        on_system chown "root:$SERVICE_USER" "$CRED_DIR"
        on_fs chmod 0750 "$ROOT$CRED_DIR"
        on_system chown "$SERVICE_USER:$SERVICE_USER" "$CRED_DIR/$CRED_NAME"
    else
        if [[ -e $ROOT$CRED_DROPIN ]]; then
            on_fs rm -f "$ROOT$CRED_DROPIN"
            on_fs rmdir --ignore-fail-on-non-empty "$ROOT$DROPIN_DIR"
        fi
        on_system chown root:root "$CRED_DIR" "$CRED_DIR/$CRED_NAME"
    fi
}

start_service() {
    on_system systemctl daemon-reload
    on_system systemctl enable "$SERVICE.service"
    if ((!START)); then
        say "  not started (--no-start): systemctl start $SERVICE"
        return
    fi
    if [[ -n $ROOT ]] || ((DRY_RUN)); then
        on_system "$VENV/bin/edge-agent" validate --config "$CONF_DIR/config.yaml"
        on_system systemctl restart "$SERVICE.service"
    elif "$VENV/bin/edge-agent" validate --config "$CONF_DIR/config.yaml"; then
        on_system systemctl restart "$SERVICE.service"
    else
        warn "not started: fix the problems above, then: systemctl start $SERVICE"
    fi
}

install_agent() {
    say "== jetson-edge-agent: install${ROOT:+ into $ROOT}$( ((DRY_RUN)) && printf ' (dry run)')"
    detect_l4t
    platform_advice
    detect_systemd_version
    check_python
    check_pycuda
    say "== user, directories, venv"
    ensure_user
    ensure_dirs
    ensure_venv
    report_runtimes
    say "== configuration"
    write_config
    say "== service"
    write_unit
    start_service
    cat <<EOF
== done. Check it with:
  systemctl status $SERVICE            (Status: line shows the phase, e.g. building engines)
  journalctl -u $SERVICE -f
  edge-agent validate --config $CONF_DIR/config.yaml
The first start builds the engines (minutes on a Jetson); later starts load them from $CACHE_DIR.
EOF
}

uninstall_agent() {
    say "== jetson-edge-agent: uninstall${ROOT:+ from $ROOT}$( ((DRY_RUN)) && printf ' (dry run)')"
    say "  removes the service, $PREFIX, $CONF_DIR (config, credentials), $STATE_DIR (unsent results)"
    on_system_try systemctl disable --now "$SERVICE.service"
    on_fs rm -f "$ROOT$UNIT_FILE"
    on_fs rm -rf "$ROOT$DROPIN_DIR"
    on_system_try systemctl daemon-reload
    if [[ -L $ROOT$CLI_LINK ]]; then
        on_fs rm -f "$ROOT$CLI_LINK"
    fi
    on_fs rm -rf "$ROOT$PREFIX" "$ROOT$CONF_DIR" "$ROOT$STATE_DIR"
    if [[ -z $ROOT ]] && ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        say "  user $SERVICE_USER: already gone"
    else
        on_system_try userdel "$SERVICE_USER"
    fi
    if ((PURGE)); then
        on_fs rm -rf "$ROOT$CACHE_DIR"
        say "== removed, including the engine cache"
    else
        say "== removed; kept the engine cache $CACHE_DIR (reused by a reinstall; --purge removes it)"
    fi
}

main() {
    parse_args "$@"
    umask 022
    if [[ $ACTION == uninstall ]]; then
        uninstall_agent
    else
        install_agent
    fi
}

main "$@"
