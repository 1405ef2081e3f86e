"""config.yaml: who this device is, where its broker, manifest and directories are."""

from __future__ import annotations

import re
from typing import List, Literal, Optional

from pydantic import Field, field_validator, model_validator

from agent.manifest.models import StrictModel

# Device ids become MQTT topic levels and ACL usernames: no wildcards, no slashes
# (older Mosquitto let a client named '#' bypass pattern ACLs).
DEVICE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"


class TlsConfig(StrictModel):
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    insecure: bool = Field(False, description="skip hostname verification (testing only)")

    @model_validator(mode="after")
    def _client_pair(self) -> TlsConfig:
        # cert_file alone is fine: the PEM may hold the key too (ssl.load_cert_chain).
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("cert_file: 'key_file' is set, so give the client certificate 'cert_file' too")
        return self


class MqttConfig(StrictModel):
    host: str = Field("127.0.0.1", min_length=1, max_length=253)
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = Field("edge", pattern=TOPIC_PREFIX_PATTERN)
    client_id: Optional[str] = Field(None, max_length=128, description="default: edge-agent-<device_id>")
    username: Optional[str] = Field(None, max_length=256)
    password_file: Optional[str] = Field(
        None, description="file with the password; a bare name is looked up in $CREDENTIALS_DIRECTORY first"
    )
    tls: Optional[TlsConfig] = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: int = Field(30, ge=5, le=3600)
    reconnect_min_s: float = Field(1.0, gt=0, le=3600)
    reconnect_max_s: float = Field(60.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.password_file is not None and self.username is None:
            raise ValueError("username: 'password_file' is set, so give the 'username' it belongs to")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s: must not exceed reconnect_max_s ({self.reconnect_min_s} > {self.reconnect_max_s})"
            )
        return self


class SpoolConfig(StrictModel):
    # NORMAL survives a crash of the agent; FULL also survives power loss, at ~6x the write cost.
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    max_bytes: int = Field(256 << 20, ge=1 << 16, description="cap on the on-disk result spool")
    max_messages: int = Field(1_000_000, ge=10)


class DownloadConfig(StrictModel):
    """How a device fetches the model files a fleet envelope lists with a ``url`` (agent/fleet/artifacts.py)."""

    ca_file: Optional[str] = Field(None, description="extra CA bundle (PEM) for https artifact URLs")
    max_file_bytes: int = Field(8 << 30, ge=1, description="refuse a single artifact larger than this")
    reserve_bytes: int = Field(256 << 20, ge=0, description="free space that must remain after downloading")
    parallel: int = Field(2, ge=1, le=16, description="files fetched at once")
    rate_limit_bytes_s: Optional[int] = Field(None, ge=1024, description="cap on all downloads together")
    retries: int = Field(5, ge=0, le=100, description="retries per file after a network or server error")
    retry_base_s: float = Field(1.0, gt=0, le=600)
    retry_max_s: float = Field(60.0, gt=0, le=3600)
    timeout_s: float = Field(30.0, gt=0, le=3600, description="connect and per-read timeout")
    max_redirects: int = Field(5, ge=0, le=20)
    keep_versions: int = Field(2, ge=1, le=100,
                               description="downloaded artifacts of this many newest versions stay on disk")


class FleetConfig(StrictModel):
    public_keys: List[str] = Field(default_factory=list, description="Ed25519 public keys: PEM files or base64")
    require_signature: bool = True
    allowed_model_dirs: List[str] = Field(default_factory=list, description="default: the manifest's directory")
    grace_period_s: float = Field(30.0, ge=0, le=3600, description="new pipelines must stay healthy this long")
    allow_gstreamer: bool = Field(False, description="accept raw GStreamer pipeline sources in fleet updates "
                                                     "(never elements that read or write files or sockets)")
    download: DownloadConfig = Field(default_factory=DownloadConfig)


class PrometheusConfig(StrictModel):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=1, le=65535)


class TelemetryConfig(StrictModel):
    # Where the binary exists (L4T only) it adds EMC load and engine clocks that sysfs does not give
    # unprivileged; it is a subprocess, so a device can switch it off.
    tegrastats: bool = Field(True, description="run tegrastats when it is installed on a Jetson")
    tegrastats_interval_s: float = Field(1.0, ge=0.1, le=3600)


class AgentConfig(StrictModel):
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    manifest: str = Field(min_length=1, description="path, relative to config.yaml")
    cache_dir: str = "var/cache"
    state_dir: str = "var/state"
    groups: List[str] = Field(default_factory=list, max_length=64,
                              description="fleet groups: also receive <topic_prefix>/group/<group>/manifest/desired")
    health_interval: float = Field(10.0, ge=0.1, le=86400)
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    log_format: Literal["kv", "json"] = "kv"
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    @field_validator("device_id")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        # <prefix>/group/... carries fleet-wide desired state; a device named "group" would get
        # write access to it through the per-device ACL pattern (edge/%u/#).
        if v == "group":
            raise ValueError("'group' is reserved for fleet group topics; choose another device_id")
        return v

    @field_validator("groups")
    @classmethod
    def _group_names(cls, v: List[str]) -> List[str]:
        # Group names become a topic level of a subscription: '+' or '#' would subscribe to other groups.
        for group in v:
            if not re.match(DEVICE_ID_PATTERN, group):
                raise ValueError(f"group {group[:80]!r} must start with a lowercase letter or digit and have at most "
                                 "63 lowercase letters, digits or '-'")
        return v
