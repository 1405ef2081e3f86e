"""Hostile-input property fuzzing of the manifest/config loaders.

Property: loading either succeeds or raises ``ConfigError`` whose every message line is
``<file>:<line-or-?>: <path>: <message>``; never another exception, never a hang (the
hypothesis deadline bounds every example). With ``allowed_dirs`` a manifest that loads
refers only to files inside them.
"""

from __future__ import annotations

import copy
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.manifest.load import InvalidConfigError, LoadedManifest, load_config, parse_manifest
from agent.manifest.paths import glob_root, manifest_references
from tests.manifest.helpers import MANIFEST, make_tree

FUZZ = settings(
    database=None,  # keep the tree clean; failures print a reproduction blob instead
    deadline=timedelta(seconds=3),  # a hang detector, not a speed target
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

BASE = yaml.safe_load(MANIFEST)
FIELD_WORDS = ["models", "pipelines", "version", "name", "model", "params", "backend", "target", "precision",
               "inputs", "shape", "min", "opt", "max", "tensorrt", "calibration", "images", "validation",
               "preprocess", "postprocess", "labels_file", "source", "options", "queue", "publish", "sha256"]
VALUE_WORDS = ["fp32", "fp16", "int8", "fp64", "dla:0", "dla:all", "dla:9", "gpu", "cpu", "paddle", "tensorrt",
               "classifier", "detector", "m.onnx", "m.pdmodel", "rtsp://h/s", "a ! appsink", "", "<<", "~"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid model tree, plus an outside directory reachable by '..' and by a symlink."""
    root = tmp_path_factory.mktemp("fuzz")
    site = root / "site"
    make_tree(site)
    outside = root / "outside"
    outside.mkdir()
    for name in ("x.pdmodel", "x.pdiparams", "passwd", "a.jpg"):
        (outside / name).write_bytes(b"not for fleet updates")
    (site / "escape").symlink_to(outside)
    (site / "models" / "loop").symlink_to(site / "models" / "loop")
    return site


def check(load: Callable[[], Any], tree: Path) -> None:
    """The property: success (confined to ``tree``) or a ConfigError made only of problem lines."""
    try:
        result = load()
    except ConfigError as e:
        assert isinstance(e, InvalidConfigError)
        assert e.problems
        line_re = re.compile(rf"^{re.escape(str(tree))}/[^:]+:(\d+|\?): (<document>|[A-Za-z_\[]\S*|\S.*?): .+$")
        for line in str(e).splitlines():
            assert line_re.match(line), line
        return
    if isinstance(result, LoadedManifest):
        real_tree = os.path.realpath(tree)
        for ref in manifest_references(result.manifest):
            if ref.file.startswith("/dev/"):
                continue
            real = os.path.realpath(glob_root(ref.file))
            assert real == real_tree or real.startswith(real_tree + os.sep), (ref, real)


def load_bytes(tree: Path, data: bytes) -> Callable[[], Any]:
    return lambda: parse_manifest(data, tree / "fuzz.yaml", allowed_dirs=[tree])


def dump(doc: Any) -> bytes:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's emitter: most of an example's time otherwise
    return yaml.dump(doc, Dumper=dumper, allow_unicode=True).encode("utf-8")


# --- strategies --------------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.sampled_from([0, -1, 1 << 31, 1 << 63, 10 ** 40, -(10 ** 40)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(VALUE_WORDS + FIELD_WORDS),
)
keys = st.one_of(st.sampled_from(FIELD_WORDS), st.text(max_size=12), st.integers(-3, 3), st.booleans())


def _nested(depth: int, as_dict: bool) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


traversal = st.builds(
    lambda lead, parts, suffix: lead + "/".join(parts) + suffix,
    st.sampled_from(["", "/", "./", "../", "file://", "~/"]),
    st.lists(st.sampled_from(["..", ".", "models", "escape", "outside", "etc", "passwd", "*", "loop", "",
                              "cls.pdmodel", "x.pdmodel", "a.jpg", "site"]), min_size=1, max_size=8),
    st.sampled_from(["", ".pdmodel", ".pdiparams", "/*.jpg", "/", "\x00.pdmodel"]),
)

hostile = st.one_of(
    scalars,
    traversal,
    st.builds(lambda n: "x" * n, st.integers(1000, 100_000)),
    st.builds(_nested, st.integers(1, 90), st.booleans()),
    st.lists(scalars, max_size=6),
    st.dictionaries(keys, scalars, max_size=4),
)

trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                     max_leaves=25)


def _paths(node: Any, at: Tuple[Any, ...] = ()) -> Iterator[Tuple[Any, ...]]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


def _parent(doc: Any, path: Tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


# --- properties --------------------------------------------------------------------------------------------

@settings(FUZZ, max_examples=700)
@given(data=st.data())
def test_mutated_valid_manifests(tree: Path, data: st.DataObject) -> None:
    doc = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from([p for p in _paths(doc) if p]), label="path")
        parent = _parent(doc, path)
        action = data.draw(st.sampled_from(["replace", "replace", "delete", "unknown_key"]), label="action")
        if action == "replace":
            parent[path[-1]] = data.draw(hostile, label="value")
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(keys, label="key")] = data.draw(scalars, label="value")
    check(load_bytes(tree, dump(doc)), tree)


PATH_FIELDS: List[Tuple[Any, ...]] = [
    ("models", 0, "model"), ("models", 0, "params"), ("models", 0, "postprocess", "labels_file"),
    ("models", 0, "validation", "inputs"), ("models", 1, "calibration", "images"), ("models", 1, "model"),
    ("pipelines", 1, "source"), ("pipelines", 2, "source"),
]


@settings(FUZZ, max_examples=600)
@given(field=st.sampled_from(PATH_FIELDS), value=traversal)
def test_path_traversal_is_confined(tree: Path, field: Tuple[Any, ...], value: str) -> None:
    doc = copy.deepcopy(BASE)
    if field[-1] == "model" and not value.endswith((".pdmodel", ".onnx")):
        value += ".pdmodel" if field[1] == 0 else ".onnx"  # get past the suffix check to the path checks
    _parent(doc, field)[field[-1]] = value
    check(load_bytes(tree, dump(doc)), tree)


@settings(FUZZ, max_examples=400)
@given(doc=trees)
def test_random_yaml_trees(tree: Path, doc: Any) -> None:
    check(load_bytes(tree, dump(doc)), tree)


YAML_ALPHABET = st.sampled_from([*"ab:-[]{}&*!|>'\"#%@`,? \n\t09.<~", "\n  ", "- ", ": ", "&a ", "*a", "<<: "])


@settings(FUZZ, max_examples=700)
@given(pieces=st.lists(YAML_ALPHABET, max_size=60))
def test_random_yaml_text(tree: Path, pieces: List[str]) -> None:
    check(load_bytes(tree, "".join(pieces).encode()), tree)


@settings(FUZZ, max_examples=400)
@given(edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 8), st.binary(max_size=4)), min_size=1, max_size=4))
def test_byte_level_edits(tree: Path, edits: List[Tuple[float, int, bytes]]) -> None:
    """Splices random bytes (invalid UTF-8, control characters, '---', stray quotes) into a valid manifest."""
    data = bytearray(MANIFEST.encode())
    for where, cut, insert in edits:
        i = int(where * len(data))
        data[i:i + cut] = insert
    check(load_bytes(tree, bytes(data)), tree)


@settings(FUZZ, max_examples=200)
@given(data=st.binary(max_size=300))
def test_random_bytes(tree: Path, data: bytes) -> None:
    check(load_bytes(tree, data), tree)


@settings(FUZZ, max_examples=60)
@given(levels=st.integers(2, 12), fanout=st.integers(2, 12), merge=st.booleans(),
       place=st.sampled_from(["x-bomb", "models", "labels"]))
def test_alias_and_merge_bombs(tree: Path, levels: int, fanout: int, merge: bool, place: str) -> None:
    if merge:
        lines = [f"x-l0: &l0 {{{', '.join(f'k{i}: v' for i in range(fanout))}}}"]
        lines += [f"x-l{n}: &l{n} {{<<: [{', '.join([f'*l{n - 1}'] * fanout)}], k{n}x: 1}}" for n in range(1, levels)]
    else:
        lines = [f"x-l0: &l0 [{', '.join(['lol'] * fanout)}]"]
        lines += [f"x-l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * fanout)}]" for n in range(1, levels)]
    top = f"*l{levels - 1}"
    text = "\n".join(lines) + "\n" + MANIFEST
    if place == "x-bomb":
        text += f"x-bomb: {top}\n"
    elif place == "models":
        text = text.replace("models:\n", f"models: {top}\nx-old:\n", 1)
    else:
        text = text.replace("labels: [person, car]", f"labels: {top}")
    check(load_bytes(tree, text.encode()), tree)


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_mutated_configs(tree: Path, data: st.DataObject) -> None:
    doc: Any = {"device_id": "jetson-01", "manifest": "manifest.yaml",
                "mqtt": {"host": "h", "port": 1883, "tls": {"ca_file": "models/labels.txt"}},
                "fleet": {"public_keys": ["models/labels.txt"], "allowed_model_dirs": ["models"]}}
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from([p for p in _paths(doc) if p]), label="path")
        _parent(doc, path)[path[-1]] = data.draw(hostile, label="value")
    config = tree / "fuzz-config.yaml"
    config.write_bytes(dump(doc))
    check(lambda: load_config(config, environ={}), tree)
