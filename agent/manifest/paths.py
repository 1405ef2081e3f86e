"""Where the files named in config.yaml and the manifest are, and whether a fleet update may use them.

Relative paths resolve against the directory of the file that names them, never the
working directory, so the agent behaves the same under systemd and from a shell.
Paths are normalized lexically (``a/../b`` -> ``b``); confinement then checks the
resolved target (symlinks followed) of exactly the path the agent will open.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Literal, Mapping, Optional, Sequence, Union

from pydantic import BaseModel

from agent.manifest.config import AgentConfig
from agent.manifest.models import Manifest
from agent.manifest.yamlload import FieldPath

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_GLOB = re.compile(r"[*?[]")
DEVICE_DIR = "/dev"

RefKind = Literal["file", "images", "source"]


@dataclass(frozen=True)
class Reference:
    """A path the manifest names: ``file`` must be a regular file; ``images`` is a file,
    directory or glob; ``source`` is a pipeline source that is a local path."""

    path: FieldPath  # where in the manifest, e.g. ('models', 0, 'params')
    value: str
    kind: RefKind

    @property
    def file(self) -> str:
        """The filesystem path (a ``file://`` source without its scheme)."""
        if self.kind == "source":
            return source_file(self.value) or self.value
        return self.value


def absolute(value: str, base_dir: Union[str, Path]) -> str:
    """``value`` made absolute against ``base_dir`` and normalized; absolute values stay put."""
    return os.path.normpath(os.path.join(str(base_dir), value))


def is_pattern(value: str) -> bool:
    return _GLOB.search(value) is not None


def glob_root(path: str) -> str:
    """The directory part of a glob before its first wildcard: ``/a/b/*/c.jpg`` -> ``/a/b``."""
    if not is_pattern(path):
        return path
    parts = path.split(os.sep)
    fixed = []
    for part in parts:
        if is_pattern(part):
            break
        fixed.append(part)
    return os.sep.join(fixed) or (os.sep if path.startswith(os.sep) else ".")


def source_file(source: str) -> Optional[str]:
    """The local path of a pipeline source, or None for other URIs (rtsp://, csi://, v4l2://,
    http://, ...) and GStreamer pipeline strings (they contain '!')."""
    if "!" in source:
        return None
    match = _SCHEME.match(source)
    if match is None:
        return source
    return source[match.end():] if match.group(1).lower() == "file" else None


def absolute_source(source: str, base_dir: Union[str, Path]) -> str:
    """A file source made absolute, keeping a ``file://`` prefix when it had one."""
    path = source_file(source)
    if path is None:
        return source
    resolved = absolute(path, base_dir)
    return f"file://{resolved}" if _SCHEME.match(source) else resolved


def is_device(path: str) -> bool:
    """Camera device nodes (/dev/video0) are sources, not model files: never confined. Only a character
    device counts, or a name directly in /dev that does not exist yet (a camera plugged in later; only
    root can create it there): files, directories and globs under /dev (world-writable /dev/shm, /dev/mqueue)
    are confined like any other path."""
    if is_pattern(path):
        return False
    real = os.path.realpath(path)
    if not real.startswith(DEVICE_DIR + os.sep):
        return False
    try:
        return stat.S_ISCHR(os.stat(real).st_mode)
    except FileNotFoundError:
        return os.path.dirname(real) == DEVICE_DIR


def inside(path: str, allowed_dirs: Sequence[Union[str, Path]]) -> bool:
    """Whether ``path`` (for a glob: its fixed directory part), with symlinks and '..' resolved,
    lies inside one of ``allowed_dirs``."""
    target = os.path.realpath(glob_root(path))
    for root in allowed_dirs:
        real_root = os.path.realpath(root)
        if target == real_root or os.path.commonpath([target, real_root]) == real_root:
            return True
    return False


def manifest_references(manifest: Manifest) -> List[Reference]:
    """Every local path the manifest names, in document order."""
    refs: List[Reference] = []
    for i, m in enumerate(manifest.models):
        at: FieldPath = ("models", i)
        refs.append(Reference((*at, "model"), m.model, "file"))
        if m.params is not None:
            refs.append(Reference((*at, "params"), m.params, "file"))
        if m.calibration is not None:
            refs.append(Reference((*at, "calibration", "images"), m.calibration.images, "images"))
        if m.validation is not None:
            refs.append(Reference((*at, "validation", "inputs"), m.validation.inputs, "images"))
        if m.postprocess.labels_file is not None:
            refs.append(Reference((*at, "postprocess", "labels_file"), m.postprocess.labels_file, "file"))
    for j, p in enumerate(manifest.pipelines):
        if source_file(p.source) is not None:
            refs.append(Reference(("pipelines", j, "source"), p.source, "source"))
    return refs


def absolutize_manifest(manifest: Manifest, base_dir: Union[str, Path]) -> Manifest:
    """A copy of ``manifest`` whose every local path is absolute (see ``manifest_references``)."""
    out = manifest
    for ref in manifest_references(manifest):
        value = absolute_source(ref.value, base_dir) if ref.kind == "source" else absolute(ref.value, base_dir)
        out = _replace(out, ref.path, value)
    return out


def _replace(obj: Any, path: FieldPath, value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, BaseModel) and isinstance(head, str):
        return obj.model_copy(update={head: _replace(getattr(obj, head), rest, value)})
    if isinstance(obj, list) and isinstance(head, int):
        items = list(obj)
        items[head] = _replace(items[head], rest, value)
        return items
    raise TypeError(f"cannot follow {head!r} in {type(obj).__name__}")


def resolve_config_paths(
    config: AgentConfig, config_path: Union[str, Path], environ: Optional[Mapping[str, str]] = None
) -> AgentConfig:
    """A copy of ``config`` with manifest, cache_dir, state_dir, mqtt.password_file, mqtt.tls files,
    fleet.public_keys files, fleet.allowed_model_dirs and fleet.download.ca_file absolute, relative to
    config.yaml's directory.

    A bare ``password_file`` name (no '/') is looked up in ``$CREDENTIALS_DIRECTORY`` first
    (systemd ``LoadCredential=``); inline public keys (base64 or PEM text) stay as they are.
    """
    env = os.environ if environ is None else environ
    base = os.path.dirname(os.path.abspath(config_path))
    mqtt = config.mqtt
    mqtt_update: dict[str, Any] = {}
    if mqtt.password_file is not None:
        mqtt_update["password_file"] = _credential(mqtt.password_file, base, env)
    if mqtt.tls is not None:
        tls_files = {k: absolute(v, base) for k, v in (("ca_file", mqtt.tls.ca_file), ("cert_file", mqtt.tls.cert_file),
                                                        ("key_file", mqtt.tls.key_file)) if v is not None}
        mqtt_update["tls"] = mqtt.tls.model_copy(update=tls_files)
    fleet = config.fleet.model_copy(update={
        "public_keys": [k if is_inline_key(k) else absolute(k, base) for k in config.fleet.public_keys],
        "allowed_model_dirs": [absolute(d, base) for d in config.fleet.allowed_model_dirs],
        "download": config.fleet.download.model_copy(update={
            "ca_file": None if config.fleet.download.ca_file is None else absolute(config.fleet.download.ca_file, base),
        }),
    })
    return config.model_copy(update={
        "manifest": absolute(config.manifest, base),
        "cache_dir": absolute(config.cache_dir, base),
        "state_dir": absolute(config.state_dir, base),
        "mqtt": mqtt.model_copy(update=mqtt_update),
        "fleet": fleet,
    })


def fleet_allowed_dirs(config: AgentConfig) -> List[Path]:
    """Where fleet-pushed manifests may point: ``fleet.allowed_model_dirs``, else the manifest's
    directory. ``config`` must come from ``resolve_config_paths``."""
    dirs = config.fleet.allowed_model_dirs or [os.path.dirname(config.manifest)]
    return [Path(d) for d in dirs]


def is_inline_key(value: str) -> bool:
    """An Ed25519 public key given inline (PEM text or base64 of 32 raw bytes) rather than a file."""
    if "-----BEGIN" in value:
        return True
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _credential(name: str, base: str, env: Mapping[str, str]) -> str:
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and os.sep not in name:
        candidate = os.path.join(creds, name)
        if os.path.isfile(candidate):
            return candidate
    return absolute(name, base)
