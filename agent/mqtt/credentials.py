"""The MQTT password: read from a file or a systemd credential, never from the manifest, never logged."""

from __future__ import annotations

from pathlib import Path
from typing import List, Mapping, Optional

from agent.errors import ConfigError


def credentials_dir_from_env(environ: Mapping[str, str]) -> Optional[Path]:
    """``$CREDENTIALS_DIRECTORY``, which systemd sets for units with ``LoadCredential=``."""
    value = environ.get("CREDENTIALS_DIRECTORY", "")
    return Path(value) if value else None


def password_file_candidates(name: str, credentials_dir: Optional[Path], base_dir: Path) -> List[Path]:
    """Where ``mqtt.password_file`` may be: a bare name in the credentials directory first, then the path itself
    (relative paths are relative to ``base_dir``, the directory of config.yaml)."""
    candidates: List[Path] = []
    if credentials_dir is not None and Path(name).name == name:
        candidates.append(credentials_dir / name)
    path = Path(name)
    candidates.append(path if path.is_absolute() else base_dir / path)
    return candidates


def read_password(name: str, credentials_dir: Optional[Path], base_dir: Path) -> str:
    """The password, without its trailing newline. Errors name the file, never its content."""
    candidates = password_file_candidates(name, credentials_dir, base_dir)
    for path in candidates:
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"mqtt.password_file: cannot read {path} ({type(exc).__name__}): make it readable "
                              "by the agent's user, UTF-8 text") from None
        password = text.rstrip("\r\n")
        if not password:
            raise ConfigError(f"mqtt.password_file: {path} is empty: write the broker password into it")
        return password
    where = ", ".join(str(p) for p in candidates)
    hint = "" if credentials_dir is not None else " ($CREDENTIALS_DIRECTORY is not set)"
    raise ConfigError(f"mqtt.password_file: {name!r} not found (looked at {where}){hint}: create the file, "
                      "or pass it with LoadCredential= in the systemd unit")
