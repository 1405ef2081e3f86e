"""What ``edge-agent validate`` checks beyond the files' schema and references, through the functions the
daemon refuses the same things with, so that ``valid`` means the daemon will accept them:

- every pipeline's ``source`` (``parse_uri``, the first step of ``open_source``);
- every model's ``preprocess`` against the model's inputs, read from its files without loading it
  (``Backend.declared_inputs``, then the ``Preprocessor`` the runtime builds);
- ``fleet.public_keys`` (``TrustPolicy.from_config``, as the fleet controller loads them);
- ``mqtt.tls`` (``tls_context``, as the MQTT link loads it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Mapping, Optional

from agent.backends.registry import make_backends
from agent.engines.contract import Backend
from agent.errors import AgentError
from agent.fleet.verify import TrustPolicy
from agent.manifest.config import AgentConfig
from agent.manifest.load import LoadedManifest, validate_files
from agent.manifest.problems import Problem, ValidationReport, format_path
from agent.manifest.yamlload import FieldPath, YamlDocument, YamlLimits, parse_yaml, read_yaml
from agent.mqtt.link import tls_context
from agent.processing.preprocess import Preprocessor, sample_feed
from agent.sources.uri import parse_uri


def validate_deployment(config_path: Optional[Path], manifest_path: Optional[Path]) -> ValidationReport:
    """``edge-agent validate``: the files' problems (``validate_files``), then ``deployment_problems``."""

    def more(config: Optional[AgentConfig], config_file: Optional[Path],
             loaded: Optional[LoadedManifest]) -> List[Problem]:
        cache_dir = Path(config.cache_dir) if config is not None else Path.cwd() / "cache"
        backends = make_backends(cache_dir, sample_feed) if loaded is not None else {}
        return deployment_problems(config, config_file, loaded, backends)

    return validate_files(config_path, manifest_path, more)


def deployment_problems(config: Optional[AgentConfig], config_file: Optional[Path],
                        loaded: Optional[LoadedManifest], backends: Mapping[str, Backend]) -> List[Problem]:
    """Problems with a schema-valid config (resolved paths; its file) and manifest; either may be None."""
    problems: List[Problem] = []
    if config is not None and config_file is not None:
        problems += _config_problems(config, config_file)
    if loaded is not None:
        problems += _manifest_problems(loaded, backends)
    return problems


def _config_problems(config: AgentConfig, config_file: Path) -> List[Problem]:
    doc = read_yaml(config_file)
    problems: List[Problem] = []

    def check(at: FieldPath, run: Callable[[], object]) -> None:
        try:
            run()
        except AgentError as exc:
            problems.append(_problem(doc, at, str(exc)))

    check(("fleet", "public_keys"), lambda: TrustPolicy.from_config(config.fleet))
    if config.mqtt.tls is not None:
        check(("mqtt", "tls"), lambda: tls_context(config.mqtt, config_file.parent))
    return problems


def _manifest_problems(loaded: LoadedManifest, backends: Mapping[str, Backend]) -> List[Problem]:
    doc = parse_yaml(loaded.text.encode("utf-8"), str(loaded.path), YamlLimits())
    problems: List[Problem] = []
    for j, pspec in enumerate(loaded.manifest.pipelines):
        try:
            parse_uri(pspec.source, loaded.base_dir)
        except AgentError as exc:
            problems.append(_problem(doc, ("pipelines", j, "source"), str(exc)))
    for i, mspec in enumerate(loaded.manifest.models):
        backend = backends.get(mspec.backend)
        inputs = backend.declared_inputs(mspec) if backend is not None else None
        if inputs is None:
            continue  # this backend cannot read the model's inputs without loading it: checked at start-up
        try:
            Preprocessor(mspec.preprocess, inputs)
        except AgentError as exc:
            problems.append(_problem(doc, ("models", i, "preprocess"), f"model '{mspec.name}': {exc}"))
    return problems


def _problem(doc: YamlDocument, at: FieldPath, message: str) -> Problem:
    return Problem(doc.file, doc.line_of(at), format_path(at), message)
