"""Turn pydantic validation errors into ``Problem`` lines a user can act on.

pydantic says "Input should be 'fp32', 'fp16' or 'int8'" at ``('models', 1, 'precision')``;
users need ``manifest.yaml:14: models[1].precision: expected one of fp32, fp16, int8 (got 'fp64')``.
The allowed values and key names come from the model classes themselves, so the
messages stay true when the schema changes.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Type, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from agent.manifest.config import DEVICE_ID_PATTERN, TOPIC_PREFIX_PATTERN
from agent.manifest.models import NAME_PATTERN
from agent.manifest.problems import Problem, describe, format_path
from agent.manifest.yamlload import FieldPath, YamlDocument

_PATTERN_RULES: Tuple[Tuple[str, str], ...] = (
    (NAME_PATTERN, "must start with a letter or digit and have at most 64 letters, digits, '_', '.' or '-'"),
    (DEVICE_ID_PATTERN, "must start with a lowercase letter or digit and have at most 63 lowercase letters, "
                        "digits or '-'"),
    (TOPIC_PREFIX_PATTERN, "must be topic levels of letters, digits, '_' or '-' separated by '/' "
                           "(no wildcards, no leading or trailing '/')"),
)
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*): (.+)$", re.S)
_KEY = "[key]"  # pydantic's loc marker for an error in a mapping key rather than its value
_BOUNDS = {"greater_than_equal": ("ge", ">="), "less_than_equal": ("le", "<="),
           "greater_than": ("gt", ">"), "less_than": ("lt", "<")}
_KINDS = {
    "int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
    "list": "a list", "tuple": "a list", "set": "a list", "dict": "a mapping of keys", "model": "a mapping of keys",
}


def validation_problems(error: ValidationError, model: Type[BaseModel], doc: YamlDocument) -> List[Problem]:
    """One ``Problem`` per pydantic error, located by the YAML line map (nearest parent with a line)."""
    problems = []
    for err in error.errors(include_url=False):
        loc, message = explain(err, model)
        problems.append(Problem(doc.file, doc.line_of(loc), format_path(loc), message))
    return problems


def explain(err: Mapping[str, Any], model: Type[BaseModel]) -> Tuple[FieldPath, str]:
    """The data path an error belongs to and an actionable message for it."""
    loc: FieldPath = tuple(err["loc"])
    kind: str = err["type"]
    ctx: Dict[str, Any] = err.get("ctx") or {}
    given = describe(err.get("input"))
    in_key = bool(loc) and loc[-1] == _KEY
    if in_key:
        loc = loc[:-1]

    if kind in ("value_error", "assertion_error"):
        return _attach_field(model, loc, str(ctx.get("error", err["msg"])))
    if kind == "invalid_key":
        return loc, f"keys must be strings (got {given}); put the key in quotes"
    if kind == "extra_forbidden" and loc:
        return loc, _unknown_key(loc[-1], _field_names(_annotation_at(model, loc[:-1])))
    if kind == "literal_error":
        allowed = _literal_values(_annotation_at(model, loc[:-1], key=True) if in_key else _annotation_at(model, loc))
        shown = ", ".join(str(v) for v in allowed) if allowed else str(ctx.get("expected", "?"))
        if in_key:
            return loc, f"unknown key {given} (allowed: {shown})"
        return loc, f"expected one of {shown} (got {given})"
    if kind == "missing":
        if loc and isinstance(loc[-1], int):
            return loc[:-1], _tuple_length(model, loc[:-1], err.get("input"))
        return loc, "required"
    if kind in ("too_short", "too_long"):
        if ctx.get("field_type") == "Tuple":
            return loc, _tuple_length(model, loc, err.get("input"))
        if kind == "too_short":
            n = ctx.get("min_length")
            return loc, f"needs at least {n} item{'s' if n != 1 else ''} (got {ctx.get('actual_length')})"
        return loc, f"allows at most {ctx.get('max_length')} items (got {ctx.get('actual_length')})"
    if kind == "string_too_short":
        n = ctx.get("min_length")
        return loc, "must not be empty" if n == 1 else f"must have at least {n} characters"
    if kind == "string_too_long":
        return loc, f"must have at most {ctx.get('max_length')} characters (got {given})"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        rule = next((text for p, text in _PATTERN_RULES if p == pattern), f"must match {pattern}")
        return loc, f"{rule} (got {given})"
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return loc, f"must be {sign} {ctx.get(key)} (got {given})"
    if kind == "finite_number":
        return loc, f"must be a finite number (got {given})"
    # 'int_type', 'int_parsing', 'int_from_float', 'model_attributes_type', ... -> 'int', 'model'
    base = kind.split("_", 1)[0]
    if base in _KINDS and kind.endswith(("_type", "_parsing", "_from_float", "_parsing_size")):
        return loc, f"expected {_KINDS[base]} (got {given}){_quote_hint(base, err.get('input'))}"
    return loc, f"{err['msg']} (got {given})"


def _quote_hint(expected: str, value: object) -> str:
    if expected == "string" and (value is None or isinstance(value, (bool, int, float))):
        return "; put the value in quotes if you meant the text"
    return ""


def _unknown_key(key: object, allowed: List[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1) if isinstance(key, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(allowed) if allowed else "none"
    return f"unknown key {describe(key)}{hint} (allowed: {listed})"


def _tuple_length(model: Type[BaseModel], loc: FieldPath, value: object) -> str:
    args = get_args(_annotation_at(model, loc))
    got = describe(value)
    if args and args[-1] is not Ellipsis:
        return f"expected exactly {len(args)} items (got {got})"
    return f"wrong number of items (got {got})"


def _attach_field(model: Type[BaseModel], loc: FieldPath, message: str) -> Tuple[FieldPath, str]:
    """Validators in models.py start cross-field messages with the field they blame
    (``"precision: DLA runs only fp16 or int8"``); point the problem at that field's line."""
    match = _FIELD_PREFIX.match(message)
    if not match:
        return loc, message
    parts = tuple(match.group(1).split("."))
    target = _annotation_at(model, loc)
    for part in parts:
        origin = get_origin(target)
        if _is_model(target) and part in target.model_fields:
            target = _strip_optional(target.model_fields[part].annotation)
        elif origin is dict:
            target = _strip_optional(get_args(target)[1])
        else:
            return loc, message
    return (*loc, *parts), match.group(2)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _field_names(annotation: Any) -> List[str]:
    return list(annotation.model_fields) if _is_model(annotation) else []


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) is Union:
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _annotation_at(model: Type[BaseModel], loc: FieldPath, key: bool = False) -> Any:
    """The type annotation at ``loc`` inside ``model`` (the key type of a mapping when ``key``)."""
    annotation: Any = model
    for part in loc:
        annotation = _strip_optional(annotation)
        origin, args = get_origin(annotation), get_args(annotation)
        if _is_model(annotation):
            info = annotation.model_fields.get(part) if isinstance(part, str) else None
            if info is None:
                return None
            annotation = info.annotation
        elif origin in (list, tuple) and isinstance(part, int) and args:
            fixed = origin is tuple and args[-1] is not Ellipsis
            annotation = (args[part] if 0 <= part < len(args) else None) if fixed else args[0]
        elif origin is dict and args:
            annotation = args[1]
        else:
            return None
    annotation = _strip_optional(annotation)
    if key:
        args = get_args(annotation)
        return args[0] if get_origin(annotation) is dict and args else None
    return annotation


def _literal_values(annotation: Any) -> Optional[Tuple[Any, ...]]:
    return get_args(annotation) if get_origin(annotation) is Literal else None
