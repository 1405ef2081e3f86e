"""The backend table is the one list of backends: the manifest accepts exactly its keys, and the
composition root builds one backend per row."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from agent.backends.registry import BACKENDS, make_backends
from agent.manifest.models import Backend, ModelSpec
from agent.processing.preprocess import sample_feed


def test_the_manifest_accepts_exactly_the_registered_backends() -> None:
    assert set(get_args(Backend)) == set(BACKENDS)
    assert ModelSpec.model_fields["backend"].default in BACKENDS


def test_an_unregistered_backend_is_refused_by_the_manifest(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="backend"):
        ModelSpec.model_validate({"name": "m", "model": str(tmp_path / "m.json"), "backend": "openvino"})


def test_make_backends_builds_one_backend_per_row_under_its_key(tmp_path: Path) -> None:
    backends = make_backends(tmp_path, sample_feed)
    assert list(backends) == list(BACKENDS)
    assert all(backend.name == key for key, backend in backends.items())
