from __future__ import annotations

import hashlib
import math
import os
import textwrap
from pathlib import Path
from typing import Optional

import pytest

from agent.errors import ConfigError
from agent.manifest.problems import InvalidConfigError
from agent.manifest.yamlload import YamlDocument, YamlLimits, parse_yaml, read_yaml
from tests.manifest.helpers import PROBLEM_LINE


@pytest.fixture(params=[True, False], ids=["libyaml", "pure-python"])
def limits(request: pytest.FixtureRequest) -> YamlLimits:
    return YamlLimits(libyaml=request.param)


def parse(text: str, limits: Optional[YamlLimits] = None) -> YamlDocument:
    return parse_yaml(textwrap.dedent(text).encode(), "m.yaml", limits)


def only_problem(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    err = excinfo.value
    assert isinstance(err, InvalidConfigError)
    assert len(err.problems) == 1
    assert PROBLEM_LINE.match(str(err)), str(err)
    return str(err)


def test_lines_of_nested_keys_and_items(limits):
    doc = parse("""\
        version: 1
        models:
          - name: a
            tensorrt:
              workspace_size: 5
          - name: b

            precision: fp64
        """, limits)
    assert doc.data["models"][1]["precision"] == "fp64"
    assert doc.lines[("version",)] == 1
    assert doc.lines[("models", 0)] == 3
    assert doc.lines[("models", 0, "tensorrt", "workspace_size")] == 5
    assert doc.lines[("models", 1)] == 6
    assert doc.lines[("models", 1, "precision")] == 8
    # Missing keys fall back to the nearest parent that has a line.
    assert doc.line_of(("models", 1, "tensorrt", "max_batch_size")) == 6
    assert doc.line_of(("nothing",)) == 1


def test_merge_keys_own_keys_win_and_lines_point_at_the_definition(limits):
    doc = parse("""\
        x-base: &base
          a: 1
          b: 2
        x-more: &more
          b: 3
          c: 4
        m:
          <<: [*base, *more]
          a: 10
        """, limits)
    assert doc.data["m"] == {"a": 10, "b": 2, "c": 4}
    assert doc.lines[("m", "a")] == 9
    assert doc.lines[("m", "b")] == 3  # from the first merged mapping, where it is written
    assert doc.lines[("m", "c")] == 6


def test_core_schema_scalars(limits):
    doc = parse("""\
        words: [yes, no, on, off, y, n]
        time: 1:30
        date: 2024-01-01
        ints: [0x1F, 0o17, 017, -5, +3]
        floats: [1.5, 1e3, .5, -.inf, .NaN]
        nulls: [~, null, NULL]
        empty:
        bools: [true, False]
        quoted: ["1", '2']
        tagged: !!str 5
        """, limits)
    d = doc.data
    assert d["words"] == ["yes", "no", "on", "off", "y", "n"]
    assert d["time"] == "1:30"
    assert d["date"] == "2024-01-01"
    assert d["ints"] == [31, 15, 17, -5, 3]
    assert d["floats"][:4] == [1.5, 1000.0, 0.5, -math.inf] and math.isnan(d["floats"][4])
    assert d["nulls"] == [None, None, None]
    assert d["empty"] is None
    assert d["bools"] == [True, False]
    assert d["quoted"] == ["1", "2"]
    assert d["tagged"] == "5"


@pytest.mark.parametrize("value, tag", [
    ("!!binary aGVsbG8=", "!!binary"),
    ("!!python/object/apply:os.system ['true']", "!!python/object/apply:os.system"),
    ("!custom 3", "!custom"),
    ("!!set {a, b}", "!!set"),
    ("!!timestamp 2024-01-01", "!!timestamp"),
])
def test_non_standard_tags_are_refused_with_line(limits, value, tag):
    with pytest.raises(ConfigError) as excinfo:
        parse(f"a: 1\nb: {value}\n", limits)
    message = only_problem(excinfo)
    assert message.startswith("m.yaml:2: b: unsupported YAML tag")
    assert repr(tag) in message


def test_explicit_core_tag_with_wrong_value_is_refused(limits):
    with pytest.raises(ConfigError) as excinfo:
        parse("a: !!int abc\n", limits)
    assert only_problem(excinfo) == "m.yaml:1: a: 'abc' is not a valid !!int value"


def test_duplicate_keys_name_both_lines(limits):
    with pytest.raises(ConfigError) as excinfo:
        parse("""\
            models:
              - name: a
                precision: fp16
                model: m.onnx
                precision: int8
            """, limits)
    assert only_problem(excinfo) == (
        "m.yaml:5: models[0].precision: duplicate key 'precision' (first at line 3, again at line 5); keep one")


def _bomb(levels: int, fanout: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_stopped_by_the_node_cap(limits):
    text = _bomb(9, 10)  # a billion 'lol's from 9 lines
    assert len(text) < 600
    with pytest.raises(ConfigError) as excinfo:
        parse(text, limits)
    message = only_problem(excinfo)
    assert "expands to more than 100000 values" in message


def test_many_plain_nodes_are_stopped_while_composing(limits):
    text = "a: [" + ", ".join(["1"] * 1000) + "]\n"
    with pytest.raises(ConfigError) as excinfo:
        parse(text, YamlLimits(max_nodes=500, libyaml=limits.libyaml))
    assert "more than 500 values" in only_problem(excinfo)


def test_merge_lists_of_aliases_count_towards_the_cap(limits):
    big = ", ".join(f"k{i}: {i}" for i in range(200))
    text = f"x-a: &a {{{big}}}\nm:\n  <<: [{', '.join(['*a'] * 200)}]\n"
    with pytest.raises(ConfigError) as excinfo:
        parse(text, YamlLimits(max_nodes=10_000, libyaml=limits.libyaml))
    assert "more than 10000 values" in only_problem(excinfo)


def test_deep_nesting_is_refused(limits):
    with pytest.raises(ConfigError) as excinfo:
        parse("a: " + "[" * 100 + "]" * 100 + "\n", limits)
    assert "m.yaml:1: <document>: nested more than 64 levels deep" in only_problem(excinfo)
    block = "".join("  " * i + f"k{i}:\n" for i in range(80))
    with pytest.raises(ConfigError) as excinfo:
        parse(block, limits)
    assert only_problem(excinfo).startswith("m.yaml:64: <document>: nested more than 64 levels deep")


def test_huge_flow_nesting_does_not_overflow_any_stack(limits):
    with pytest.raises(ConfigError) as excinfo:
        parse_yaml(b"a: " + b"[" * 1_000_000 + b"]" * 1_000_000, "m.yaml", limits)
    assert "m.yaml:1: <document>:" in only_problem(excinfo)


def test_self_referencing_alias_is_refused(limits):
    with pytest.raises(ConfigError) as excinfo:
        parse("a: &a [1, *a]\n", limits)
    assert "an alias may refer to itself" in only_problem(excinfo)
    with pytest.raises(ConfigError) as excinfo:
        parse("a: &a {x: 1, <<: *a}\n", limits)
    assert "levels deep" in only_problem(excinfo)


def test_size_cap(tmp_path: Path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * (4 << 20) + b"\n")
    with pytest.raises(ConfigError) as excinfo:
        read_yaml(big)
    assert only_problem(excinfo) == (
        f"{big}:?: <document>: file is {(4 << 20) + 4} bytes, over the 4194304-byte limit; is this the right file?")
    with pytest.raises(ConfigError):
        parse_yaml(b"a: 12345\n", "m.yaml", YamlLimits(max_bytes=8))


def test_non_utf8_bytes_name_the_line(limits):
    with pytest.raises(ConfigError) as excinfo:
        parse_yaml(b"a: 1\nb: 2\nc: caf\xe9\n", "m.yaml", limits)
    assert only_problem(excinfo) == (
        "m.yaml:3: <document>: not valid UTF-8 (byte 0xe9 at offset 16); save the file as UTF-8")


def test_utf8_bom_and_non_ascii_text_are_fine(limits):
    doc = parse_yaml("\ufeffname: caméra ✓\n".encode(), "m.yaml", limits)
    assert doc.data == {"name": "caméra ✓"}


def test_control_characters_name_the_line(limits):
    with pytest.raises(ConfigError) as excinfo:
        parse_yaml(b"a: 1\nb: x\x00y\n", "m.yaml", limits)
    assert only_problem(excinfo).startswith("m.yaml:2: <document>: character U+0000 is not allowed")


def test_multiple_documents_are_refused(limits):
    with pytest.raises(ConfigError) as excinfo:
        parse("a: 1\n---\nb: 2\n", limits)
    assert only_problem(excinfo) == (
        "m.yaml:2: <document>: a second YAML document starts here ('---'); keep one document per file")


@pytest.mark.parametrize("text, got", [
    ("- a\n- b\n", "a list of 2 items"),
    ("just text\n", "'just text'"),
    ("42\n", "42"),
])
def test_top_level_must_be_a_mapping(limits, text, got):
    with pytest.raises(ConfigError) as excinfo:
        parse(text, limits)
    assert only_problem(excinfo) == f"m.yaml:1: <document>: the top level must be a mapping of keys (got {got})"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n...\n"])
def test_empty_documents_are_refused(limits, text):
    with pytest.raises(ConfigError) as excinfo:
        parse(text, limits)
    assert "a mapping of keys" in only_problem(excinfo)


def test_collection_keys_are_refused(limits):
    with pytest.raises(ConfigError) as excinfo:
        parse("a:\n  ? [1, 2]\n  : x\n", limits)
    assert only_problem(excinfo) == "m.yaml:2: a: mapping keys must be plain values, not lists or mappings"


def test_huge_integers_are_refused(limits):
    with pytest.raises(ConfigError) as excinfo:
        parse("a:\n  b: " + "9" * 5000 + "\n", limits)
    assert only_problem(excinfo) == "m.yaml:2: a.b: integer has more than 200 digits"


def test_syntax_errors_name_the_line(limits):
    with pytest.raises(ConfigError) as excinfo:
        parse("a: 1\nb: [1, 2\nc: 3\n", limits)
    message = only_problem(excinfo)
    assert message.startswith("m.yaml:") and "YAML syntax error" in message


def test_unreadable_paths(tmp_path: Path):
    with pytest.raises(ConfigError) as excinfo:
        read_yaml(tmp_path / "missing.yaml")
    assert only_problem(excinfo) == f"{tmp_path}/missing.yaml:?: <document>: file not found; check the path"
    with pytest.raises(ConfigError) as excinfo:
        read_yaml(tmp_path)
    assert "not a regular file" in only_problem(excinfo)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(ConfigError) as excinfo:
        read_yaml(fifo)
    assert "not a regular file" in only_problem(excinfo)


def test_document_records_text_and_hash(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"a: 1\n")
    doc = read_yaml(path)
    assert doc.text == "a: 1\n"
    assert doc.sha256 == hashlib.sha256(b"a: 1\n").hexdigest()
