"""Values that are schema-shaped but cannot mean anything: refused when loading, naming the field
(issue 10, defect 2). Before, NaN reached the fingerprint (ValueError) and a 65536^3 input shape reached
numpy (MemoryError) inside the daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ManifestError
from agent.manifest.load import load_manifest
from tests.manifest.helpers import MANIFEST, make_tree

SCALE = "      metric: top1\n"


@pytest.mark.parametrize("insert, field", [
    ("    preprocess: {scale: .nan}\n", "models[0].preprocess.scale"),
    ("    preprocess: {mean: [0.5, .inf, 0.5]}\n", "models[0].preprocess.mean[1]"),
    ("    preprocess: {std: [-.inf]}\n", "models[0].preprocess.std[0]"),
    ("      tolerance: {fp32: .nan}\n", "models[0].validation.tolerance.fp32"),
    ("    batching: {max_wait_ms: .nan}\n", "models[0].batching.max_wait_ms"),
])
def test_nan_and_infinity_are_refused_naming_the_field(tmp_path: Path, insert: str, field: str) -> None:
    assert SCALE in MANIFEST
    text = MANIFEST.replace(SCALE, SCALE + insert, 1)
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(make_tree(tmp_path, text))
    assert f"{field}: must be a finite number" in str(excinfo.value), str(excinfo.value)


@pytest.mark.parametrize("shape", ["shape: [65536, 65536, 65536, 3]", "shape: [1, 3, 32768, 32768]"])
def test_an_input_shape_whose_tensor_cannot_fit_in_memory_is_refused(tmp_path: Path, shape: str) -> None:
    text = MANIFEST.replace("shape: [1, 3, 640, 640]", shape)
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(make_tree(tmp_path, text))
    message = str(excinfo.value)
    assert "models[1].inputs[0]" in message and "GiB" in message and "at most 1 GiB fits" in message, message


def test_a_dynamic_range_is_sized_at_its_max(tmp_path: Path) -> None:
    text = MANIFEST.replace("max: [4, 3, 224, 224]", "max: [4096, 3, 4096, 4096]")
    with pytest.raises(ManifestError, match=r"'max' \[4096, 3, 4096, 4096\] of float32"):
        load_manifest(make_tree(tmp_path, text))


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm")
@pytest.mark.parametrize("kind", ["file", "directory", "glob"])
def test_fleet_confinement_exempts_only_character_devices_under_dev(tmp_path: Path, kind: str) -> None:
    """Defect 6: files, directories and globs in world-writable /dev/shm passed fleet confinement."""
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        (Path(shm) / "a.png").write_bytes(b"png")
        source = {"file": f"{shm}/a.png", "directory": shm, "glob": f"{shm}/*.png"}[kind]
        text = MANIFEST.replace("source: /dev/video0", f"source: {source}")
        path = make_tree(tmp_path / "site", text)
        with pytest.raises(ManifestError, match="escapes the allowed model directories"):
            load_manifest(path, allowed_dirs=[tmp_path / "site"])


@pytest.mark.parametrize("device", ["/dev/null", "/dev/video7"])
def test_a_character_device_or_a_camera_not_plugged_in_yet_stays_exempt(tmp_path: Path, device: str) -> None:
    text = MANIFEST.replace("source: /dev/video0", f"source: {device}")
    load_manifest(make_tree(tmp_path / "site", text), allowed_dirs=[tmp_path / "site"])
