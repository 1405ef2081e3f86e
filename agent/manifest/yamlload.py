"""Safe YAML loading that remembers the line of every value and refuses hostile input.

Manifests arrive from fleet operators over MQTT, so the loader treats every file as
hostile: a size cap before parsing, strict UTF-8, one document only, a cap on nesting
depth (the composer and our converter recurse) and on the number of values after
alias expansion ("billion laughs"), no tags beyond plain data, no duplicate keys.

Scalars follow the YAML 1.2 core schema rather than PyYAML's YAML 1.1 default, so
``yes``/``no``/``on``/``off``, ``1:30`` and ``2024-01-01`` stay strings instead of
silently turning into booleans, sexagesimal numbers and dates. Merge keys
(``<<: *defaults``) are supported because they keep multi-model manifests short.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, NoReturn, Optional, Protocol, Sequence, Tuple, Union

import yaml
from yaml.composer import Composer
from yaml.events import StreamEndEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

try:
    from yaml._yaml import CParser as _CParser
except ImportError:  # PyYAML built without libyaml
    _CParser = None  # type: ignore[assignment,misc]

from agent.manifest.problems import InvalidConfigError, Problem, describe, format_path

FieldPath = Tuple[object, ...]

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
SEQ, MAP, MERGE = _TAG + "seq", _TAG + "map", _TAG + "merge"

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
# YAML's printable set: C0 controls (except tab, LF, CR), DEL, C1 (except NEL) and non-characters are out.
_UNPRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Converting a decimal string to int is quadratic before Python 3.11; no real setting needs more digits.
_MAX_INT_DIGITS = 200


@dataclass(frozen=True)
class YamlLimits:
    max_bytes: int = 4 << 20
    max_nodes: int = 100_000  # values after alias/merge expansion
    max_depth: int = 64
    libyaml: bool = True  # parse events with libyaml when PyYAML has it (same results, ~5x faster)


@dataclass(frozen=True)
class YamlDocument:
    file: str
    data: Dict[Any, Any]
    lines: Mapping[FieldPath, int]  # ('models', 1, 'precision') -> 1-based line of that key or item
    text: str
    sha256: str  # of the file's bytes

    def line_of(self, path: Sequence[object]) -> Optional[int]:
        """The line of ``path``, or of its nearest parent that has one (missing keys have none)."""
        p = tuple(path)
        while True:
            line = self.lines.get(p)
            if line is not None or not p:
                return line
            p = p[:-1]


def read_yaml(path: Union[str, Path], limits: Optional[YamlLimits] = None) -> YamlDocument:
    """Read and parse one YAML file whose top level is a mapping; ``InvalidConfigError`` otherwise."""
    limits = limits or YamlLimits()
    file = str(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            _fail(file, None, "not a regular file; give the path of a YAML file")
        if info.st_size > limits.max_bytes:
            _fail(file, None, _too_big(info.st_size, limits))
        with open(path, "rb") as f:
            data = f.read(limits.max_bytes + 1)
    except FileNotFoundError:
        _fail(file, None, "file not found; check the path")
    except (OSError, ValueError) as e:
        _fail(file, None, f"cannot read the file: {getattr(e, 'strerror', None) or e}")
    return parse_yaml(data, file, limits)


def parse_yaml(data: bytes, file: str, limits: Optional[YamlLimits] = None) -> YamlDocument:
    """Parse YAML bytes; ``file`` names the source in problems (a path, or e.g. an MQTT topic)."""
    limits = limits or YamlLimits()
    if len(data) > limits.max_bytes:
        _fail(file, None, _too_big(len(data), limits))
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        _fail(file, line, f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); save the file as UTF-8")
    root = _compose(text, file, limits)
    builder = _Builder(file, limits)
    value = builder.value(root, (), 1)
    if not isinstance(value, dict):
        _fail(file, _line(root), f"the top level must be a mapping of keys (got {describe(value)})")
    return YamlDocument(file=file, data=value, lines=builder.lines, text=text, sha256=digest)


def _too_big(size: int, limits: YamlLimits) -> str:
    return f"file is {size} bytes, over the {limits.max_bytes}-byte limit; is this the right file?"


def _fail(file: str, line: Optional[int], message: str, path: Sequence[object] = ()) -> NoReturn:
    raise InvalidConfigError([Problem(file, line, format_path(path), message)])


def _line(node: Node) -> Optional[int]:
    return node.start_mark.line + 1 if node.start_mark is not None else None


def _compose(text: str, file: str, limits: YamlLimits) -> Node:
    bad = _UNPRINTABLE.search(text)
    if bad is not None:
        _fail(file, text.count("\n", 0, bad.start()) + 1,
              f"character U+{ord(bad.group()):04X} is not allowed in YAML; remove it or write it as an escape")
    events: _EventSource = _CParser(text) if limits.libyaml and _CParser is not None else _PyParser(text)
    composer = _Composer(events, file, limits)
    try:
        return composer.single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = "; ".join(s for s in (e.context, e.problem) if s)
        _fail(file, mark.line + 1 if mark else None, f"YAML syntax error: {what}")
    except yaml.YAMLError as e:
        _fail(file, None, f"YAML error: {' '.join(str(e).split())}")
    finally:
        events.dispose()


class _EventSource(Protocol):
    def check_event(self, *choices: Any) -> bool: ...
    def peek_event(self) -> Any: ...
    def get_event(self) -> Any: ...
    def dispose(self) -> None: ...


class _PyParser(Reader, Scanner, Parser):
    """PyYAML's pure-Python event parser, used when PyYAML lacks libyaml (about 5x slower)."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)


class _Composer(Composer, BaseResolver):
    """PyYAML's composer over either event parser, with depth and node caps and core-schema tags.

    Composition stays in Python (libyaml only parses events) because it is the part that
    recurses once per nesting level and creates nodes: both must stop at the caps. The
    event parsers themselves keep explicit stacks, so deep input cannot overflow them.
    """

    def __init__(self, events: _EventSource, file: str, limits: YamlLimits) -> None:
        Composer.__init__(self)
        BaseResolver.__init__(self)
        self._events = events
        self._file = file
        self._limits = limits
        self._depth = 0
        self._nodes = 0

    def check_event(self, *choices: Any) -> bool:
        return self._events.check_event(*choices)

    def peek_event(self) -> Any:
        return self._events.peek_event()

    def get_event(self) -> Any:
        return self._events.get_event()

    def single_node(self) -> Node:
        self.get_event()  # stream start
        root = None if self.check_event(StreamEndEvent) else self.compose_document()
        if root is None:
            _fail(self._file, None, "the file holds no YAML document; expected a mapping of keys")
        if not self.check_event(StreamEndEvent):
            line = self.peek_event().start_mark.line + 1
            _fail(self._file, line, "a second YAML document starts here ('---'); keep one document per file")
        return root

    def compose_node(self, parent: Optional[Node], index: int) -> Optional[Node]:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > self._limits.max_depth:
                _fail(self._file, self.peek_event().start_mark.line + 1,
                      f"nested more than {self._limits.max_depth} levels deep; flatten the document")
            if self._nodes > self._limits.max_nodes:
                _fail(self._file, self.peek_event().start_mark.line + 1,
                      f"the document has more than {self._limits.max_nodes} values; is this the right file?")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is ScalarNode and implicit[0]:
            return _core_tag(value)
        return str(super().resolve(kind, value, implicit))


def _core_tag(value: str) -> str:
    if value == "<<":
        return MERGE
    if _NULL.match(value):
        return NULL
    if _BOOL.match(value):
        return BOOL
    if _INT.match(value):
        return INT
    if _FLOAT.match(value):
        return FLOAT
    return STR


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


class _Builder:
    """Turns the composed node graph into plain data, recording lines and enforcing limits."""

    def __init__(self, file: str, limits: YamlLimits) -> None:
        self.file = file
        self.limits = limits
        self.nodes = 0
        self.lines: Dict[FieldPath, int] = {}

    def _check(self, node: Node, path: FieldPath, depth: int) -> None:
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            _fail(self.file, _line(node),
                  f"the document expands to more than {self.limits.max_nodes} values; "
                  "anchors/aliases ('&x'/'*x') may be multiplying it", path)
        if depth > self.limits.max_depth:
            _fail(self.file, _line(node),
                  f"nested more than {self.limits.max_depth} levels deep (after expanding aliases); "
                  "an alias may refer to itself", path)

    def value(self, node: Node, path: FieldPath, depth: int) -> Any:
        self._check(node, path, depth)
        line = _line(node)
        if line is not None:
            self.lines.setdefault(path, line)
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, SequenceNode):
            self._expect_tag(node, SEQ, path)
            return [self.value(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        if isinstance(node, MappingNode):
            self._expect_tag(node, MAP, path)
            out: Dict[Any, Any] = {}
            for key, key_line, child in self._pairs(node, path, depth):
                at = (*path, key)
                self.lines[at] = key_line
                out[key] = self.value(child, at, depth + 1)
            return out
        _fail(self.file, line, f"unsupported YAML node {type(node).__name__}", path)

    def _expect_tag(self, node: Node, tag: str, path: FieldPath) -> None:
        if node.tag != tag:
            _fail(self.file, _line(node),
                  f"unsupported YAML tag {_short_tag(node.tag)!r}; only plain values, lists and mappings are allowed",
                  path)

    def _pairs(self, node: MappingNode, path: FieldPath, depth: int) -> List[Tuple[Any, int, Node]]:
        """Key/value pairs with merge keys applied: own keys win, then earlier merged mappings."""
        own: Dict[Any, Tuple[int, Node]] = {}
        merged: Dict[Any, Tuple[int, Node]] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == MERGE:
                for source in self._merge_sources(value_node, path, depth):
                    for key, key_line, child in self._pairs(source, path, depth + 1):
                        # Counted: a merge list of many aliases re-walks big mappings without new nodes.
                        self._check(child, path, depth + 1)
                        merged.setdefault(key, (key_line, child))
                continue
            key = self._key(key_node, path)
            key_line = _line(key_node) or 0
            if key in own:
                _fail(self.file, key_line,
                      f"duplicate key {describe(key)} (first at line {own[key][0]}, "
                      f"again at line {key_line}); keep one",
                      (*path, key))
            own[key] = (key_line, value_node)
        merged.update(own)
        return [(key, key_line, child) for key, (key_line, child) in merged.items()]

    def _merge_sources(self, node: Node, path: FieldPath, depth: int) -> List[MappingNode]:
        self._check(node, path, depth + 1)
        sources = node.value if isinstance(node, SequenceNode) else [node]
        if not all(isinstance(s, MappingNode) and s.tag == MAP for s in sources):
            _fail(self.file, _line(node), "'<<' (merge) needs a mapping or a list of mappings, e.g. '<<: *defaults'",
                  path)
        for source in sources:
            self._check(source, path, depth + 1)
        return list(sources)

    def _key(self, node: Node, path: FieldPath) -> Any:
        if not isinstance(node, ScalarNode):
            _fail(self.file, _line(node), "mapping keys must be plain values, not lists or mappings", path)
        return self._scalar(node, path)

    def _scalar(self, node: ScalarNode, path: FieldPath) -> Any:
        text: str = node.value
        tag = node.tag
        if tag in (STR, MERGE):
            return text
        if tag == NULL and _NULL.match(text):
            return None
        if tag == BOOL and _BOOL.match(text):
            return text.lower() == "true"
        if tag == INT and _INT.match(text):
            if len(text) > _MAX_INT_DIGITS:
                _fail(self.file, _line(node), f"integer has more than {_MAX_INT_DIGITS} digits", path)
            if text.startswith(("0o", "0x")):
                return int(text[2:], 8 if text[1] == "o" else 16)
            return int(text)
        if tag == FLOAT and _FLOAT.match(text):
            return float(text.lower().replace(".inf", "inf").replace(".nan", "nan"))
        if tag in (NULL, BOOL, INT, FLOAT):
            _fail(self.file, _line(node), f"{describe(text)} is not a valid {_short_tag(tag)} value", path)
        _fail(self.file, _line(node),
              f"unsupported YAML tag {_short_tag(tag)!r}; only plain values, lists and mappings are allowed", path)
