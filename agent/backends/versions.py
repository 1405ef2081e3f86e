"""Installed package versions, for backends' cache identities."""

from __future__ import annotations

import importlib.metadata


def package_version(package: str) -> str:
    """The installed distribution's version, or "absent"."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"
