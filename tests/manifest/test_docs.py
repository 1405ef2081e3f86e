"""docs/manifest.md and docs/config.md are hand-written from the models: keep them complete."""

from __future__ import annotations

from pathlib import Path
from typing import Set, Type

import pytest
from pydantic import BaseModel

from agent.manifest.config import AgentConfig
from agent.manifest.models import Manifest
from agent.manifest.problems import Problem

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _all_fields(model: Type[BaseModel], seen: Set[type]) -> Set[str]:
    names: Set[str] = set()
    if model in seen:
        return names
    seen.add(model)
    for name, info in model.model_fields.items():
        names.add(name)
        for sub in _models_in(info.annotation):
            names |= _all_fields(sub, seen)
    return names


def _models_in(annotation: object) -> Set[Type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    found: Set[Type[BaseModel]] = set()
    for arg in getattr(annotation, "__args__", ()):
        found |= _models_in(arg)
    return found


@pytest.mark.parametrize("model, doc", [(Manifest, "manifest.md"), (AgentConfig, "config.md")])
def test_every_key_has_a_row(model: Type[BaseModel], doc: str) -> None:
    text = (DOCS / doc).read_text()
    missing = sorted(f for f in _all_fields(model, set()) if f"| `{f}` |" not in text)
    assert not missing, f"{doc} lacks rows for: {missing}"


def test_problem_example_format_matches_the_docs() -> None:
    text = (DOCS / "manifest.md").read_text()
    example = str(Problem("manifest.yaml", 14, "models[1].precision", "expected one of fp32, fp16, int8 (got 'fp64')"))
    assert example in text
