"""Every manifest and config.yaml field is read somewhere outside the schema: a documented key that no
code reads is a promise the agent does not keep (``publish.include_empty`` was one).

The check is by name: some module outside agent/manifest/models.py and agent/manifest/config.py must
read ``.<field>`` (or pass the name to ``getattr``). A name shared by two models counts for both, so
this catches a field nobody reads under any owner, not a wrong owner; what it cannot see is listed in
``GENERIC`` with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple, Type, get_args

from pydantic import BaseModel

import agent
from agent.manifest.config import AgentConfig
from agent.manifest.models import Manifest

ROOT = Path(agent.__file__).parent
SCHEMA = {ROOT / "manifest" / "models.py", ROOT / "manifest" / "config.py"}

# Fields read as a whole model rather than by attribute, with where.
GENERIC: Dict[Tuple[str, str], str] = {
    ("TensorRTOptions", "use_calib_mode"): "read through ModelSpec.calib_mode (the effective value, derived in the "
                                           "schema), which the backends and the fingerprint read",
}


def schema_models() -> Iterator[Type[BaseModel]]:
    seen: Set[Type[BaseModel]] = set()
    todo: List[Type[BaseModel]] = [Manifest, AgentConfig]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        yield model
        for info in model.model_fields.values():
            stack: List[Any] = [info.annotation]
            while stack:
                tp = stack.pop()
                if isinstance(tp, type) and issubclass(tp, BaseModel):
                    todo.append(tp)
                stack.extend(get_args(tp))


def names_read() -> Set[str]:
    out: Set[str] = set()
    for path in ROOT.rglob("*.py"):
        if path in SCHEMA:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                out.add(node.attr)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)):
                out.add(str(node.args[1].value))
    return out


def test_every_manifest_and_config_field_is_read_outside_the_schema() -> None:
    read = names_read()
    unread = sorted(f"{model.__name__}.{name}" for model in schema_models() for name in model.model_fields
                    if name not in read and (model.__name__, name) not in GENERIC)
    assert not unread, f"fields no code reads (implement them, or remove them from the schema and docs): {unread}"


def test_the_exemptions_are_still_needed() -> None:
    read = names_read()
    fields = {(model.__name__, name) for model in schema_models() for name in model.model_fields}
    assert set(GENERIC) <= fields, sorted(set(GENERIC) - fields)
    assert not [key for key in GENERIC if key[1] in read], "an exempted field is now read by name: drop it"
