from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import List

import pytest

from agent.errors import EX_CONFIG, ConfigError, ManifestError
from agent.manifest.load import (
    InvalidManifestError,
    LoadedManifest,
    Problem,
    ValidationReport,
    load_manifest,
    manifest_json_schema,
    parse_manifest,
)
from agent.manifest.models import Manifest
from tests.manifest.helpers import FILES, MANIFEST, PROBLEM_LINE, line_of, make_tree


def problems_of(path: Path, **kwargs) -> List[str]:
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(path, **kwargs)
    err = excinfo.value
    assert isinstance(err, InvalidManifestError) and isinstance(err, ConfigError)
    assert err.exit_code == EX_CONFIG
    lines = str(err).splitlines()
    assert lines == [str(p) for p in err.problems]
    assert all(PROBLEM_LINE.match(line) for line in lines), lines
    return lines


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_problem_is_one_line():
    assert str(Problem("m.yaml", 7, "models[1].precision", "expected one of fp32, fp16, int8 (got 'fp64')")) == (
        "m.yaml:7: models[1].precision: expected one of fp32, fp16, int8 (got 'fp64')")
    assert str(Problem("m.yaml", None, "<document>", "two\nlines")) == "m.yaml:?: <document>: two lines"
    report = ValidationReport([])
    assert report.ok and str(report) == ""
    assert not ValidationReport([Problem("m", 1, "a", "b")]).ok


def test_valid_manifest_paths_become_absolute(tmp_path: Path):
    path = make_tree(tmp_path)
    loaded = load_manifest(path)
    assert isinstance(loaded, LoadedManifest)
    assert loaded.path == path and loaded.base_dir == tmp_path
    assert loaded.text == MANIFEST
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    cls, det = loaded.manifest.models
    assert cls.model == f"{tmp_path}/models/cls.pdmodel"
    assert cls.params == f"{tmp_path}/models/cls.pdiparams"
    assert cls.postprocess.labels_file == f"{tmp_path}/models/labels.txt"
    assert cls.validation is not None and cls.validation.inputs == f"{tmp_path}/golden/*.jpg"
    assert det.calibration is not None and det.calibration.images == f"{tmp_path}/calib"
    # Merge keys and aliases: the shared TensorRT options, with the model's own key winning.
    assert (cls.tensorrt.workspace_size, cls.tensorrt.max_batch_size, cls.tensorrt.min_subgraph_size) == (
        268435456, 4, 5)
    assert (det.tensorrt.workspace_size, det.tensorrt.min_subgraph_size) == (268435456, 3)
    assert [p.source for p in loaded.manifest.pipelines] == [
        "rtsp://user:secret@camera.local/stream",
        f"{tmp_path}/videos/clip.mp4",
        f"file://{tmp_path}/frames/*.png",
        "/dev/video0",
        "videotestsrc ! videoconvert ! appsink",
    ]


def test_relative_paths_resolve_against_the_manifest_not_the_cwd(tmp_path: Path, monkeypatch):
    path = make_tree(tmp_path / "site")
    monkeypatch.chdir(tmp_path)
    loaded = load_manifest(Path("site/manifest.yaml"))
    assert loaded.path == tmp_path / "site/manifest.yaml"
    assert loaded.manifest.models[0].model == f"{tmp_path}/site/models/cls.pdmodel"
    assert path.exists()


def test_parse_manifest_from_bytes_with_another_base_dir(tmp_path: Path):
    make_tree(tmp_path / "models-root")
    staged = tmp_path / "state" / "staged.yaml"
    loaded = parse_manifest(MANIFEST.encode(), staged, base_dir=tmp_path / "models-root",
                            allowed_dirs=[tmp_path / "models-root"])
    assert loaded.path == staged and loaded.base_dir == tmp_path / "models-root"
    assert loaded.manifest.models[1].model == f"{tmp_path}/models-root/models/det.onnx"


def test_nested_error_has_the_right_line(tmp_path: Path):
    text = edit(MANIFEST, "      count: 2", "      count: 0")
    path = make_tree(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:{line_of(text, 'count: 0')}: models[1].calibration.count: must be >= 1 (got 0)"]


def test_literal_error_lists_allowed_values(tmp_path: Path):
    text = edit(MANIFEST, "precision: fp16", "precision: fp64")
    path = make_tree(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:9: models[0].precision: expected one of fp32, fp16, int8 (got 'fp64')"]


def test_unknown_keys_list_the_allowed_ones(tmp_path: Path):
    text = edit(MANIFEST, "      metric: top1", "      metric: top1\n      tolerence: {fp16: 0.1}")
    text = edit(text, "    options: {loop: true}", "    options: {loop: true, fsp: 5}")
    path = make_tree(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:{line_of(text, 'tolerence')}: models[0].validation.tolerence: unknown key 'tolerence'; "
        "did you mean 'tolerance'? (allowed: inputs, metric, tolerance, count)",
        f"{path}:{line_of(text, 'fsp')}: pipelines[1].options.fsp: unknown key 'fsp'; did you mean 'fps'? "
        "(allowed: fps, loop, width, height, capture_fps, pixel_format, flip, rotate, latency_ms, transport, "
        "decoder, max_pixels, stall_timeout_s, reconnect_min_s, reconnect_max_s)",
    ]


def test_unknown_mapping_key_of_a_literal_type(tmp_path: Path):
    text = edit(MANIFEST, "      metric: top1", "      metric: top1\n      tolerance: {fp64: 0.1}")
    path = make_tree(tmp_path, text)
    assert problems_of(path) == [f"{path}:{line_of(text, 'fp64')}: models[0].validation.tolerance.fp64: "
                                 "unknown key 'fp64' (allowed: fp32, fp16, int8)"]


def test_missing_required_key_points_at_its_parent(tmp_path: Path):
    text = edit(MANIFEST, "    model: models/det.onnx\n", "")
    path = make_tree(tmp_path, text)
    assert problems_of(path) == [f"{path}:{line_of(text, 'name: detector')}: models[1].model: required"]


def test_dla_with_fp32_blames_precision(tmp_path: Path):
    text = edit(MANIFEST, "    precision: int8", "    precision: fp32")
    text = edit(text, "    calibration:\n      images: calib/\n      count: 2\n", "")
    path = make_tree(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:{line_of(text, 'precision: fp32')}: models[1].precision: DLA runs only fp16 or int8; "
        "use precision: fp16 or target: gpu"]


@pytest.mark.parametrize("shape, message", [
    ("min: [1, 3], opt: [2, 3], max: [1, 3]", "need min <= opt <= max in every dimension (got [1, 3], [2, 3], [1, 3])"),
    ("min: [1, 3], opt: [1, 3], max: [1, 3, 4]", "'min', 'opt' and 'max' must have the same rank"),
    ("shape: [1, 3], min: [1, 3]", "give either 'shape' or 'min'/'opt'/'max', not both"),
    ("min: [1, 3]", "give a fixed 'shape', or all three of 'min', 'opt' and 'max'"),
    ("shape: [0, 3]", "'shape' dimensions must be between 1 and 65536 (got [0, 3])"),
])
def test_dynamic_shape_errors(tmp_path: Path, shape: str, message: str):
    text = edit(MANIFEST, "      - name: images\n        shape: [1, 3, 640, 640]", f"      - {{name: images, {shape}}}")
    path = make_tree(tmp_path, text)
    assert problems_of(path) == [f"{path}:{line_of(text, 'name: images')}: models[1].inputs[0]: {message}"]


def test_wrong_types_and_quote_hint(tmp_path: Path):
    text = edit(MANIFEST, "labels: [person, car]", "labels: [person, yes, 3]")
    text = edit(text, "max_batch_size: 4", "max_batch_size: four")
    path = make_tree(tmp_path, text)
    lines = problems_of(path)
    # The anchored options are merged into both models: the error is reported for each, at the anchor's line.
    assert lines == [
        f"{path}:4: models[0].tensorrt.max_batch_size: expected an integer (got 'four')",
        f"{path}:4: models[1].tensorrt.max_batch_size: expected an integer (got 'four')",
        f"{path}:{line_of(text, 'labels:')}: models[1].postprocess.labels[2]: expected a string (got 3); "
        "put the value in quotes if you meant the text",
    ]


def test_every_problem_is_listed_in_line_order(tmp_path: Path):
    text = edit(MANIFEST, "version: 3", "version: -1")
    text = edit(text, "- name: classifier", "- name: 'bad name'")
    text = edit(text, "    model: detector\n  - name: clips",
                "    model: detector\n    publish: {qos: 5}\n  - name: clips")
    path = make_tree(tmp_path, text)
    lines = problems_of(path)
    assert lines == [
        f"{path}:1: version: must be >= 0 (got -1)",
        f"{path}:6: models[0].name: must start with a letter or digit and have at most 64 letters, digits, "
        "'_', '.' or '-' (got 'bad name')",
        f"{path}:{line_of(text, 'qos')}: pipelines[0].publish.qos: expected one of 0, 1, 2 (got 5)",
    ]


def test_too_many_problems_are_summarized(tmp_path: Path):
    text = "models:\n" + "".join(f"  - {{name: m{i}, model: m.onnx, backend: tensorrt, bogus: 1}}\n" for i in range(60))
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(path)
    assert isinstance(excinfo.value, InvalidManifestError)
    assert len(excinfo.value.problems) == 60
    lines = str(excinfo.value).splitlines()
    assert len(lines) == 51
    assert lines[-1] == f"{path}:?: <document>: 10 more problems not shown; fix the ones above first"


def test_missing_files_say_where_relative_paths_resolve(tmp_path: Path):
    path = make_tree(tmp_path)
    (tmp_path / "models/cls.pdiparams").unlink()
    (tmp_path / "golden/a.jpg").unlink()
    (tmp_path / "videos/clip.mp4").unlink()
    hint = f"check the path, relative paths resolve against {tmp_path}"
    assert problems_of(path) == [
        f"{path}:{line_of(MANIFEST, 'params:')}: models[0].params: file not found: {tmp_path}/models/cls.pdiparams"
        f" — {hint}",
        f"{path}:{line_of(MANIFEST, 'golden')}: models[0].validation.inputs: no files match {tmp_path}/golden/*.jpg"
        f" — {hint}",
        f"{path}:{line_of(MANIFEST, 'videos/clip.mp4')}: pipelines[1].source: not found: {tmp_path}/videos/clip.mp4"
        f" — {hint}",
    ]


def test_a_directory_is_not_a_model_file(tmp_path: Path):
    path = make_tree(tmp_path, edit(MANIFEST, "labels_file: models/labels.txt", "labels_file: models"))
    assert problems_of(path) == [f"{path}:{line_of(MANIFEST, 'labels_file')}: models[0].postprocess.labels_file: "
                                 f"not a regular file: {tmp_path}/models; give the path of a file"]


def test_unknown_model_reference(tmp_path: Path):
    text = edit(MANIFEST, "    model: detector\n  - name: clips", "    model: detektor\n  - name: clips")
    path = make_tree(tmp_path, text)
    assert problems_of(path) == [f"{path}:{line_of(text, 'detektor')}: pipelines[0].model: unknown model "
                                 "'detektor' (defined: classifier, detector)"]


def _with_hashes(model: str, params: str) -> str:
    hashes = f"    sha256: {{model: '{model}', params: '{params}'}}"
    return edit(MANIFEST, "    precision: fp16", f"    precision: fp16\n{hashes}")


def test_sha256_match_and_mismatch(tmp_path: Path):
    good_model = hashlib.sha256(FILES["models/cls.pdmodel"]).hexdigest()
    good_params = hashlib.sha256(FILES["models/cls.pdiparams"]).hexdigest()
    path = make_tree(tmp_path, _with_hashes(good_model.upper(), good_params))
    assert load_manifest(path).manifest.models[0].sha256 == {"model": good_model, "params": good_params}

    wrong = "0" * 64
    text = _with_hashes(good_model, wrong)
    path = make_tree(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:{line_of(text, 'sha256')}: models[0].sha256.params: sha256 mismatch for "
        f"{tmp_path}/models/cls.pdiparams: the manifest expects {wrong}, the file has {good_params}; "
        "the file changed or the manifest is out of date"]


def test_sha256_values_and_keys_are_checked(tmp_path: Path):
    text = _with_hashes("abc", "0" * 64)
    path = make_tree(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:{line_of(text, 'sha256')}: models[0].sha256.model: expected 64 hex digits (got 'abc')"]
    text = edit(MANIFEST, "    precision: fp16", "    precision: fp16\n    sha256: {weights: abc}")
    path = make_tree(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:{line_of(text, 'sha256')}: models[0].sha256: unknown file key 'weights' (allowed: model, params)"]


@pytest.mark.parametrize("field, value", [
    ("params: models/cls.pdiparams", "params: ../outside/secret.pdiparams"),
    ("params: models/cls.pdiparams", "params: /etc/hostname"),
    ("labels_file: models/labels.txt", "labels_file: models/../../outside/secret.pdiparams"),
    ("inputs: golden/*.jpg", "inputs: ../outside/*.pdiparams"),
])
def test_confinement_refuses_paths_that_escape(tmp_path: Path, field: str, value: str):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pdiparams").write_bytes(b"not yours")
    text = edit(MANIFEST, field, value)
    path = make_tree(tmp_path / "site", text)
    lines = problems_of(path, allowed_dirs=[tmp_path / "site"])
    assert len(lines) == 1
    assert f"{path}:{line_of(text, value)}: " in lines[0]
    assert "path escapes the allowed model directories" in lines[0]
    assert f"(allowed: {tmp_path}/site)" in lines[0]
    # Without confinement (a local manifest the operator wrote) the same file is fine.
    if "hostname" not in value or os.path.isfile("/etc/hostname"):
        load_manifest(path)


def test_confinement_follows_symlinks(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pdiparams").write_bytes(b"not yours")
    path = make_tree(tmp_path / "site")
    params = tmp_path / "site/models/cls.pdiparams"
    params.unlink()
    params.symlink_to(outside / "secret.pdiparams")
    lines = problems_of(path, allowed_dirs=[tmp_path / "site"])
    assert lines == [f"{path}:{line_of(MANIFEST, 'params:')}: models[0].params: path escapes the allowed model "
                     f"directories: {params} (resolves to {outside}/secret.pdiparams) (allowed: {tmp_path}/site); "
                     "keep the files inside them or add the directory to fleet.allowed_model_dirs"]
    # A symlinked allowed directory is compared by its target.
    (tmp_path / "link").symlink_to(tmp_path / "site")
    params.unlink()
    params.write_bytes(b"mine")
    load_manifest(tmp_path / "link/manifest.yaml", allowed_dirs=[tmp_path / "site"])


def test_confinement_skips_devices_and_stream_uris_but_not_file_sources(tmp_path: Path):
    path = make_tree(tmp_path / "site")
    load_manifest(path, allowed_dirs=[tmp_path / "site"])  # rtsp://, /dev/video0, GStreamer are not files
    text = edit(MANIFEST, "source: videos/clip.mp4", "source: file:///etc/passwd")
    path = make_tree(tmp_path / "site", text)
    lines = problems_of(path, allowed_dirs=[tmp_path / "site"])
    assert len(lines) == 1 and "pipelines[1].source: path escapes the allowed model directories" in lines[0]


def test_several_allowed_dirs(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "labels.txt").write_text("a\n")
    text = edit(MANIFEST, "labels_file: models/labels.txt", f"labels_file: {shared}/labels.txt")
    path = make_tree(tmp_path / "site", text)
    load_manifest(path, allowed_dirs=[tmp_path / "site", shared])
    assert len(problems_of(path, allowed_dirs=[tmp_path / "site"])) == 1


def test_json_schema_export():
    schema = manifest_json_schema()
    assert schema == Manifest.model_json_schema()
    assert set(schema["properties"]) == {"version", "models", "pipelines"}
    assert "ModelSpec" in schema["$defs"]
    json.dumps(schema)


@pytest.mark.parametrize("old, new, path, message", [
    ("      labels: [person, car]", "      labels: [person, car]\n      labels_file: models/labels.txt",
     "models[1].postprocess.labels_file", "give either 'labels' or 'labels_file', not both"),
    ("    options: {loop: true}", "    options: {reconnect_min_s: 90}", "pipelines[1].options.reconnect_min_s",
     "must not exceed reconnect_max_s (90.0 > 60.0)"),
    ("      labels: [person, car]", "      labels: [person, car]\n    preprocess: {mean: [0.5, 0.5], std: [0.5]}",
     "models[1].preprocess.mean", "give 1 value, or 3 (one per channel) (got 2)"),
    ("      labels: [person, car]", "      labels: [person, car]\n    preprocess: {std: [1, 0, 1]}",
     "models[1].preprocess.std", "values must not be 0, the input is divided by them (got [1.0, 0.0, 1.0])"),
])
def test_cross_field_checks(tmp_path: Path, old: str, new: str, path: str, message: str):
    text = edit(MANIFEST, old, new)
    manifest = make_tree(tmp_path, text)
    lines = problems_of(manifest)
    assert len(lines) == 1
    assert lines[0].split(": ", 2)[1:] == [path, message]


def test_yaml_problems_are_manifest_errors(tmp_path: Path):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"models: [\n")
    assert problems_of(path)[0].startswith(f"{path}:")
    with pytest.raises(InvalidManifestError):
        parse_manifest(b"\xff", tmp_path / "fleet.yaml")
