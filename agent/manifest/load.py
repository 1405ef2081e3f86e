"""Load config.yaml and manifests: YAML with lines -> schema -> paths -> references.

Every failure is an ``InvalidConfigError`` (config) or ``InvalidManifestError`` (manifest)
whose message has one ``<file>:<line>: <path>: <message>`` line per problem and whose
``problems`` attribute lists them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Type, TypeVar, Union

from pydantic import BaseModel, ValidationError

from agent.logs import event
from agent.manifest.config import AgentConfig
from agent.manifest.explain import validation_problems
from agent.manifest.models import Manifest
from agent.manifest.paths import absolutize_manifest, fleet_allowed_dirs, is_inline_key, resolve_config_paths
from agent.manifest.problems import (
    InvalidConfigError,
    InvalidManifestError,
    Problem,
    ValidationReport,
    format_path,
)
from agent.manifest.references import check_references
from agent.manifest.yamlload import FieldPath, YamlDocument, YamlLimits, parse_yaml, read_yaml

__all__ = [
    "InvalidConfigError",
    "InvalidManifestError",
    "LoadedManifest",
    "Problem",
    "ValidationReport",
    "config_json_schema",
    "fleet_allowed_dirs",
    "load_config",
    "load_manifest",
    "manifest_json_schema",
    "parse_manifest",
    "resolve_config_paths",
    "validate_files",
]

log = logging.getLogger(__name__)
EXTENSION_PREFIX = "x-"
_M = TypeVar("_M", bound=BaseModel)
PathLike = Union[str, Path]


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest  # every local path absolute (model, params, images, labels, file sources)
    path: Path  # the manifest file, absolute
    base_dir: Path  # what relative paths resolved against
    sha256: str  # of the file's bytes
    text: str  # the file's text, e.g. to keep a copy for rollback


def load_config(path: PathLike, environ: Optional[Mapping[str, str]] = None) -> AgentConfig:
    """Read and validate config.yaml. Paths stay as written; ``resolve_config_paths`` makes them absolute.

    Files the config names (TLS files, public key files, a password file given as a path)
    must exist; ``environ`` supplies ``$CREDENTIALS_DIRECTORY`` (default: ``os.environ``).
    """
    doc = read_yaml(path)
    config = _validate(AgentConfig, doc, InvalidConfigError)
    problems = _config_file_problems(config, doc, path, environ)
    if problems:
        raise InvalidConfigError(problems)
    event(log, logging.DEBUG, "config.loaded", path=str(path), device_id=config.device_id)
    return config


def load_manifest(
    path: PathLike, allowed_dirs: Optional[Sequence[Path]] = None, base_dir: Optional[Path] = None
) -> LoadedManifest:
    """Read, validate and check a manifest file.

    ``allowed_dirs`` (fleet updates): every referenced path must resolve inside one of them.
    ``base_dir``: what relative paths resolve against (default: the manifest's directory).
    """
    try:
        doc = read_yaml(path)
    except InvalidConfigError as e:
        raise InvalidManifestError(e.problems) from None
    return _manifest(doc, Path(path), allowed_dirs, base_dir)


def parse_manifest(
    data: bytes, path: PathLike, allowed_dirs: Optional[Sequence[Path]] = None, base_dir: Optional[Path] = None,
) -> LoadedManifest:
    """Like ``load_manifest`` for bytes that arrived another way (a fleet update);
    ``path`` names it in problems and is where it will be stored."""
    try:
        doc = parse_yaml(data, str(path), YamlLimits())
    except InvalidConfigError as e:
        raise InvalidManifestError(e.problems) from None
    return _manifest(doc, Path(path), allowed_dirs, base_dir)


# The checks beyond these files that ``validate`` adds (agent/service/checks.py): given the resolved
# config (None when invalid or not given), its file, and the loaded manifest (None when invalid).
MoreChecks = Callable[[Optional[AgentConfig], Optional[Path], Optional[LoadedManifest]], List[Problem]]


def validate_files(config_path: Optional[Path], manifest_path: Optional[Path],
                   more: Optional[MoreChecks] = None) -> ValidationReport:
    """Every problem in a config and/or manifest, for ``edge-agent validate``.

    With only a config, the manifest is the one its ``manifest`` key names.
    """
    if config_path is None and manifest_path is None:
        raise ValueError("validate_files needs a config path, a manifest path or both")
    problems: List[Problem] = []
    config: Optional[AgentConfig] = None
    loaded: Optional[LoadedManifest] = None
    if config_path is not None:
        try:
            config = resolve_config_paths(load_config(config_path), config_path)
            manifest_path = manifest_path or Path(config.manifest)
        except InvalidConfigError as e:
            problems += e.problems
            manifest_path = manifest_path or _manifest_named_by(config_path)
    if manifest_path is not None:
        try:
            loaded = load_manifest(manifest_path)
        except InvalidConfigError as e:
            problems += e.problems
    if more is not None:
        problems += more(config, config_path, loaded)
    return ValidationReport(problems)


def manifest_json_schema() -> Dict[str, Any]:
    """The manifest's JSON Schema (pydantic's export), for docs and editors."""
    return Manifest.model_json_schema()


def config_json_schema() -> Dict[str, Any]:
    return AgentConfig.model_json_schema()


def _manifest(
    doc: YamlDocument, path: Path, allowed_dirs: Optional[Sequence[Path]], base_dir: Optional[Path]
) -> LoadedManifest:
    file = Path(os.path.abspath(path))
    base = Path(os.path.abspath(base_dir)) if base_dir is not None else file.parent
    manifest = absolutize_manifest(_validate(Manifest, doc, InvalidManifestError), base)
    problems = check_references(manifest, doc, base, allowed_dirs)
    if problems:
        raise InvalidManifestError(_ordered(problems))
    event(log, logging.DEBUG, "manifest.loaded", path=str(file), version=manifest.version,
          models=len(manifest.models), pipelines=len(manifest.pipelines), sha256=doc.sha256)
    return LoadedManifest(manifest=manifest, path=file, base_dir=base, sha256=doc.sha256, text=doc.text)


def _validate(model: Type[_M], doc: YamlDocument, error: Type[InvalidConfigError]) -> _M:
    # Top-level 'x-' keys are for YAML anchors ('x-defaults: &trt {...}'), as in Compose files.
    data = {k: v for k, v in doc.data.items() if not (isinstance(k, str) and k.startswith(EXTENSION_PREFIX))}
    try:
        # Strict, as JSON: a number is never taken from a string or a boolean (`version: '1'`, `port: true`),
        # while YAML's lists still fill tuple fields. NaN stays NaN here, for the schema to refuse by name.
        return model.model_validate_json(json.dumps(data, allow_nan=True), strict=True)
    except ValidationError as e:
        raise error(_ordered(validation_problems(e, model, doc))) from None


def _ordered(problems: List[Problem]) -> List[Problem]:
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))


def _config_file_problems(
    config: AgentConfig, doc: YamlDocument, config_path: PathLike, environ: Optional[Mapping[str, str]]
) -> List[Problem]:
    resolved = resolve_config_paths(config, config_path, environ)
    files: List[tuple[FieldPath, Optional[str]]] = []
    # A bare password_file name may exist only under systemd's credentials directory: checked at start.
    if config.mqtt.password_file is not None and os.sep in config.mqtt.password_file:
        files.append((("mqtt", "password_file"), resolved.mqtt.password_file))
    if resolved.mqtt.tls is not None:
        tls = resolved.mqtt.tls
        files += [(("mqtt", "tls", "ca_file"), tls.ca_file), (("mqtt", "tls", "cert_file"), tls.cert_file),
                  (("mqtt", "tls", "key_file"), tls.key_file)]
    for i, key in enumerate(resolved.fleet.public_keys):
        if not is_inline_key(key):
            files.append((("fleet", "public_keys", i), key))
    problems = [Problem(doc.file, doc.line_of((key,)), key, f"{path} exists and is not a directory: point {key} at "
                        "a directory (it is created when missing)")
                for key, path in (("state_dir", resolved.state_dir), ("cache_dir", resolved.cache_dir))
                if os.path.exists(path) and not os.path.isdir(path)]
    for at, file in files:
        if file is not None and not os.path.isfile(file):
            problems.append(Problem(doc.file, doc.line_of(at), format_path(at),
                                    f"file not found: {file} — check the path, relative paths resolve against "
                                    f"{os.path.dirname(os.path.abspath(config_path))}"))
    return problems


def _manifest_named_by(config_path: Path) -> Optional[Path]:
    """The manifest an invalid config names, so ``validate`` still reports the manifest's problems."""
    try:
        value = read_yaml(config_path).data.get("manifest")
    except InvalidConfigError:
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        return None
    return Path(os.path.dirname(os.path.abspath(config_path)), value)
