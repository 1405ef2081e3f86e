"""The last-good-manifest store survives restarts and keeps exactly one predecessor."""

from __future__ import annotations

from pathlib import Path

from agent.manifest.load import LoadedManifest
from agent.manifest.models import Manifest, ModelSpec
from agent.manifest.store import ManifestStore


def loaded(tmp_path: Path, version: int) -> LoadedManifest:
    text = f"version: {version}\nmodels: [{{name: m, model: m.json, params: m.pdiparams}}]\n"
    manifest = Manifest(version=version, models=[ModelSpec(name="m", model="m.json", params="m.pdiparams")])
    import hashlib

    return LoadedManifest(manifest=manifest, path=tmp_path / f"v{version}.yaml", base_dir=tmp_path,
                          sha256=hashlib.sha256(text.encode()).hexdigest(), text=text)


def test_current_and_previous_survive_a_new_store(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "state")
    assert store.current() is None and store.applied_version() == -1
    store.record_running(loaded(tmp_path, 1))
    store.record_running(loaded(tmp_path, 2))
    reopened = ManifestStore(tmp_path / "state")
    current, previous = reopened.current(), reopened.previous()
    assert current is not None and previous is not None
    assert (current.version, previous.version) == (2, 1)
    assert "version: 2" in current.path.read_text() and current.base_dir == tmp_path
    assert reopened.applied_version() == 2


def test_only_current_and_previous_bodies_are_kept(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "state")
    for v in (1, 2, 3, 4):
        store.record_running(loaded(tmp_path, v))
    assert len(list((tmp_path / "state" / "manifests").glob("manifest-*.yaml"))) == 2


def test_recording_the_same_manifest_twice_keeps_the_predecessor(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "state")
    store.record_running(loaded(tmp_path, 1))
    store.record_running(loaded(tmp_path, 2))
    store.record_running(loaded(tmp_path, 2))
    previous = store.previous()
    assert previous is not None and previous.version == 1


def test_a_corrupt_record_reads_as_absent(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path / "state")
    store.record_running(loaded(tmp_path, 1))
    (tmp_path / "state" / "manifests" / "current.json").write_text("{not json")
    assert store.current() is None
