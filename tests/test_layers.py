"""Data flows one way: a package imports only packages of lower layers (docs/architecture.md).

Every ``import agent.X`` is checked, also those inside functions, because a lazy import that goes up a
layer couples the packages just as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import agent

ROOT = Path(agent.__file__).parent

# Lowest first. Packages of one layer do not import each other either.
LAYERS: List[Tuple[str, ...]] = [
    ("errors", "logs", "fsutil", "progress", "platform", "hashing", "backoff"),
    ("manifest",),
    ("engines",),
    ("backends", "processing", "sources"),
    ("pipeline",),
    ("mqtt",),
    ("telemetry",),
    ("fleet",),
    ("service",),
    ("demo",),
    ("faults",),
    ("cli",),
]
RANK: Dict[str, int] = {name: i for i, layer in enumerate(LAYERS) for name in layer}
ENTRY_POINTS = {"__init__", "__main__"}  # the package root and ``python -m agent`` may import anything


def _package(path: Path) -> str:
    first = path.relative_to(ROOT).parts[0]
    return first[:-3] if first.endswith(".py") else first


def _agent_imports(path: Path) -> Iterator[Tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "bench":
                yield node.lineno, "bench"
            elif parts[0] == "agent" and len(parts) > 1:
                yield node.lineno, parts[1]


def violations() -> List[str]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        pkg = _package(path)
        if pkg in ENTRY_POINTS:
            continue
        assert pkg in RANK, f"{path}: package '{pkg}' has no layer in LAYERS; add it where it belongs"
        for line, target in _agent_imports(path):
            if target == pkg or target == "__version__":
                continue
            if target == "bench" or target not in RANK or RANK[target] >= RANK[pkg]:
                out.append(f"{path.relative_to(ROOT.parent)}:{line}: {pkg} imports {target}")
    return out


def test_no_import_goes_up_a_layer() -> None:
    assert violations() == []


def test_every_package_has_a_layer() -> None:
    packages = {_package(p) for p in ROOT.rglob("*.py")} - ENTRY_POINTS
    assert packages <= set(RANK), sorted(packages - set(RANK))


def test_docs_architecture_lists_the_same_layer_order() -> None:
    text = (ROOT.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", text, re.M)
    assert [tuple(re.findall(r"`(\w+)`", packages)) for _, packages in rows] == LAYERS
