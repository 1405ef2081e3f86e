"""Typed errors users see. Each carries the exit code the CLI returns for it.

Exit codes follow sysexits(3) where one fits, so systemd's
``RestartPreventExitStatus=78`` stops a crash loop on bad configuration.
"""

from __future__ import annotations

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_CONFIG = 78


class AgentError(Exception):
    """Base of every error the agent reports to a user. The message says what to do."""

    exit_code = EX_SOFTWARE


class ConfigError(AgentError):
    """config.yaml or a manifest is invalid; the message names file, line and field."""

    exit_code = EX_CONFIG


class ManifestError(ConfigError):
    """A manifest is invalid (schema, references, paths)."""


class BuildError(AgentError):
    """Preparing a model (predictor build, engine build, calibration) failed."""

    exit_code = EX_SOFTWARE


class CacheError(AgentError):
    """An engine cache entry is missing, corrupt or cannot be written."""

    exit_code = EX_IOERR


class PredictorError(AgentError):
    """A predictor could not be created or failed while running."""

    exit_code = EX_SOFTWARE


class CapabilityError(PredictorError):
    """The requested target/precision is not available on this machine and the manifest requires it."""

    exit_code = EX_UNAVAILABLE


class SourceError(AgentError):
    """A frame source could not be opened or stopped delivering frames."""

    exit_code = EX_NOINPUT


class PublishError(AgentError):
    """The MQTT link or the result spool failed; retrying later may succeed."""

    exit_code = EX_TEMPFAIL


class FleetError(AgentError):
    """A fleet update was rejected (signature, replay, validation, paths)."""

    exit_code = EX_DATAERR
