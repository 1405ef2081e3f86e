"""typings/tensorrt (what mypy checks the backend against) is a faithful subset of tensorrt-stubs.

The installed tensorrt-stubs cannot be used by mypy directly (no py.typed marker, and
its tensorrt.pyi has lines that do not parse), so the project keeps the subset it uses.
This test parses the installed stubs (skipping unparseable lines) and checks that every
class, member and parameter name in the subset exists there.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path
from typing import Dict, List, Union

import pytest

SUBSET = Path(__file__).resolve().parents[3] / "typings" / "tensorrt" / "__init__.pyi"
Member = Union[ast.FunctionDef, ast.AnnAssign]


def _installed(relative: str) -> str:
    try:
        dist = importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs is not installed")
    return Path(str(dist.locate_file(relative))).read_text(encoding="utf-8")


def _parse_leniently(text: str) -> ast.Module:
    # Parameters named `in` (a keyword) are renamed; any other bad signature loses its
    # name (its docstring stays the body), so one bad line does not hide the rest.
    lines = re.sub(r"([(,] ?)in: ", r"\1in_: ", text).splitlines()
    for _ in range(20):
        try:
            return ast.parse("\n".join(lines))
        except SyntaxError as err:
            assert err.lineno is not None
            bad = lines[err.lineno - 1]
            lines[err.lineno - 1] = bad[: len(bad) - len(bad.lstrip())] + "def _unparseable(self):"
    raise AssertionError("tensorrt-stubs has too many unparseable lines")


def _members(body: List[ast.stmt]) -> Dict[str, List[Member]]:
    found: Dict[str, List[Member]] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef):
            found.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found.setdefault(node.target.id, []).append(node)
    return found


def _classes(tree: ast.Module) -> Dict[str, ast.ClassDef]:
    classes: Dict[str, ast.ClassDef] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            classes.setdefault(node.name, node)
    return classes


def _params(node: Member) -> List[str]:
    if isinstance(node, ast.AnnAssign):
        return []
    return [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]


def test_subset_matches_tensorrt_stubs():
    theirs = _classes(_parse_leniently(_installed("tensorrt_bindings/tensorrt.pyi")))
    ours = _classes(ast.parse(SUBSET.read_text(encoding="utf-8")))
    problems = []
    for name, cls in ours.items():
        if name not in theirs:
            problems.append(f"class {name} is not in tensorrt-stubs")
            continue
        available = _members(theirs[name].body)
        for member, nodes in _members(cls.body).items():
            if member not in available:
                problems.append(f"{name}.{member} is not in tensorrt-stubs")
                continue
            options = [_params(n) for n in available[member]]
            for node in nodes:
                # Attributes may be properties there (or the reverse): only functions compare parameters.
                if isinstance(node, ast.FunctionDef) and not any(
                        isinstance(n, ast.AnnAssign) for n in available[member]) and _params(node) not in options:
                    problems.append(f"{name}.{member}{_params(node)} differs from tensorrt-stubs {options}")
    assert problems == []


def test_module_level_names_exist_in_tensorrt_stubs():
    top = _installed("tensorrt_bindings/__init__.pyi")
    assert "def nptype(trt_type)" in top and "__version__: str" in top
