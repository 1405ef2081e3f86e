"""One problem in a config or manifest file, and the errors that carry a list of them.

Every user-facing message about a bad file is a list of ``Problem`` lines of the form
``<file>:<line>: <path>: <message>`` so editors and CI can jump to the spot.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from agent.errors import ConfigError, ManifestError

DOCUMENT = "<document>"
"""The path of problems about the file as a whole (size, encoding, syntax, top level)."""

MAX_SHOWN = 50
"""Problems listed in an error message; a summary line counts the rest (all stay in ``.problems``)."""

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Problem:
    file: str
    line: Optional[int]  # 1-based; None when no line applies (e.g. the file is missing)
    path: str  # e.g. ``models[1].precision``; ``<document>`` for the file as a whole
    message: str  # says what is allowed, e.g. "expected one of fp32, fp16, int8 (got 'fp64')"

    def __str__(self) -> str:
        line = "?" if self.line is None else str(self.line)
        # One problem must stay one line even when a hostile value or file name holds newlines.
        return " ".join(f"{self.file}:{line}: {self.path}: {self.message}".splitlines())


@dataclass(frozen=True)
class ValidationReport:
    """What ``edge-agent validate`` prints: one line per problem, nothing when ``ok``."""

    problems: List[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def format_path(path: Sequence[object]) -> str:
    """``('models', 1, 'precision')`` -> ``models[1].precision``; odd keys are JSON-quoted."""
    if not path:
        return DOCUMENT
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part if isinstance(part, str) else str(part))}]"
    return out


def describe(value: object) -> str:
    """A short, one-line description of a parsed value for messages: never the whole value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 128 else "a very large integer"
    if isinstance(value, str) and len(value) > 60:
        return repr(value[:60]) + f"... ({len(value)} characters)"
    return repr(value)


def format_problems(problems: Sequence[Problem]) -> str:
    lines = [str(p) for p in problems[:MAX_SHOWN]]
    hidden = len(problems) - MAX_SHOWN
    if hidden > 0:
        last = problems[MAX_SHOWN]
        summary = Problem(last.file, None, DOCUMENT, f"{hidden} more problems not shown; fix the ones above first")
        lines.append(str(summary))
    return "\n".join(lines)


class InvalidConfigError(ConfigError):
    """A config (or manifest) file has problems; ``problems`` lists each with file, line and path."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: List[Problem] = list(problems)
        super().__init__(format_problems(self.problems))


class InvalidManifestError(ManifestError, InvalidConfigError):
    """A manifest file has problems (schema, references, files, confinement)."""
