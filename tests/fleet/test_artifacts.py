"""Artifact downloads against a real HTTP(S) server process (tests/support/artifact_server.py):
fetch, verify, resume after the server was killed, retries, limits, redirects, TLS with a test CA,
credential masking, bounded parallelism, and cleanup of artifacts no kept version lists."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from agent.errors import FleetError
from agent.fleet.artifacts import ArtifactFetcher, ArtifactRegistry, RateLimiter, mask_url, part_path
from agent.fleet.envelope import ModelFile
from agent.manifest.config import DownloadConfig
from tests.mqtt.helpers import wait_until, write_pki
from tests.support.artifact_server import ArtifactServer

FAST = {"retry_base_s": 0.05, "retry_max_s": 0.2, "timeout_s": 5.0, "reserve_bytes": 0}


def blob(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Site:
    def __init__(self, root: Path, **config: Any) -> None:
        self.models = root / "models"
        self.models.mkdir(parents=True)
        self.registry = ArtifactRegistry(root / "state" / "artifacts.json")
        self.fetcher = ArtifactFetcher(DownloadConfig(**{**FAST, **config}), self.registry)
        self.progress: List[Dict[str, Any]] = []

    def fetch(self, models: List[ModelFile], version: int = 2) -> int:
        return self.fetcher.fetch(models, version, self.models, [self.models], self.progress.append)


def publish(srv: ArtifactServer, name: str, data: bytes) -> ModelFile:
    path = srv.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return ModelFile(path=name, sha256=sha(data), url=srv.url(name))


def test_a_missing_file_is_fetched_verified_and_renamed_into_place(tmp_path: Path,
        artifact_server: ArtifactServer) -> None:
    server = artifact_server
    data = blob(300_000)
    site = Site(tmp_path)
    model = publish(server, "det/v2/model.onnx", data)
    assert site.fetch([model]) == 1
    target = site.models / "det/v2/model.onnx"
    assert target.read_bytes() == data
    assert not Path(part_path(str(target), model.sha256)).exists()
    assert site.progress[-1]["percent"] == 100.0 and site.progress[-1]["bytes"] == len(data)
    assert site.progress[-1]["files_done"] == 1
    # A file already there with the signed hash is not fetched again.
    assert site.fetch([model], version=3) == 0
    assert len(server.requests()) == 1


def test_a_file_with_another_hash_is_replaced(tmp_path: Path,
        artifact_server: ArtifactServer) -> None:
    server = artifact_server
    site = Site(tmp_path)
    model = publish(server, "m.bin", blob(5000, seed=1))
    (site.models / "m.bin").write_bytes(b"old content")
    assert site.fetch([model]) == 1
    assert sha((site.models / "m.bin").read_bytes()) == model.sha256


def test_killed_server_restarted_mid_download_resumes_with_range(tmp_path: Path) -> None:
    data = blob(2_000_000, seed=2)
    server = ArtifactServer(tmp_path / "www", tmp_path / "srv", rate=1_000_000).start()
    # Generous: restarting the server process can take seconds on a loaded CI machine.
    site = Site(tmp_path, retries=100, retry_max_s=0.5)
    model = publish(server, "big.bin", data)
    part = Path(part_path(str(site.models / "big.bin"), model.sha256))
    errors: List[BaseException] = []

    def run() -> None:
        try:
            site.fetch([model])
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert wait_until(lambda: part.exists() and part.stat().st_size > 200_000, 20)
        running = site.fetcher.progress()  # what health.fleet.download shows while it runs
        assert running is not None and running["bytes"] > 0 and running["total_bytes"] == len(data)
        server.kill()
        time.sleep(0.3)  # the fetcher sees the dead server and backs off at least once
        server.start()
        worker.join(60)
    finally:
        server.stop()
    assert not errors, errors
    assert site.fetcher.progress() is None
    assert (site.models / "big.bin").read_bytes() == data
    ranges = [r["range"] for r in server.requests()]
    assert ranges[0] is None and any(r and r != "bytes=0-" for r in ranges[1:]), ranges


def test_wrong_bytes_are_refused_and_nothing_is_left_behind(tmp_path: Path,
        artifact_server: ArtifactServer) -> None:
    server = artifact_server
    site = Site(tmp_path)
    good = ModelFile(path="m.bin", sha256=sha(b"the signed bytes"), url=server.url("m.bin"))
    (server.root / "m.bin").write_bytes(b"something else entirely")
    with pytest.raises(FleetError, match=r"models\[0\] m\.bin from http://127\.0\.0\.1:\d+/m\.bin: wrong bytes"):
        site.fetch([good])
    assert os.listdir(site.models) == []


def test_server_errors_are_retried_then_named_with_the_masked_url(tmp_path: Path,
        artifact_server: ArtifactServer) -> None:
    server = artifact_server
    site = Site(tmp_path, retries=2)
    model = ModelFile(path="m.bin", sha256="0" * 64, url=server.url("status/503/m.bin?X-Amz-Signature=abc",
                                                                    userinfo="op:hunter2"))
    with pytest.raises(FleetError) as info:
        site.fetch([model])
    reason = str(info.value)
    assert "hunter2" not in reason and "abc" not in reason
    assert "http://op:***@127.0.0.1" in reason and "X-Amz-Signature=***" in reason
    assert "HTTP 503" in reason and "gave up after 3 tries" in reason
    requests = server.requests()
    assert len(requests) == 3 and all(r["auth"] for r in requests)  # basic auth from the URL's userinfo


def test_client_errors_are_not_retried(tmp_path: Path,
        artifact_server: ArtifactServer) -> None:
    server = artifact_server
    site = Site(tmp_path, retries=5)
    with pytest.raises(FleetError, match="HTTP 404"):
        site.fetch([ModelFile(path="m.bin", sha256="0" * 64, url=server.url("nowhere.bin"))])
    assert len(server.requests()) == 1


def test_a_redirect_is_followed_and_a_loop_refused(tmp_path: Path,
        artifact_server: ArtifactServer) -> None:
    server = artifact_server
    site = Site(tmp_path)
    model = publish(server, "m.bin", blob(1000, seed=3))
    assert site.fetch([model.model_copy(update={"url": server.url("to/m.bin")})]) == 1
    looped = ModelFile(path="n.bin", sha256="0" * 64, url=server.url("loop/a"))
    with pytest.raises(FleetError, match=r"redirect loop: .*/loop/a -> .*/loop/b -> .*/loop/a"):
        site.fetch([looped])


def test_a_timeout_ends_with_a_reason(tmp_path: Path,
        artifact_server: ArtifactServer) -> None:
    server = artifact_server
    site = Site(tmp_path, retries=0, timeout_s=0.2)
    with pytest.raises(FleetError, match=r"n\.bin from .*claims/100/n\.bin: .*(Timeout|timed out)"):
        site.fetch([ModelFile(path="n.bin", sha256="0" * 64, url=server.url("claims/100/n.bin"))])
    assert os.listdir(site.models) == [] or all(p.endswith(".part") for p in os.listdir(site.models))


def test_too_little_disk_is_refused_before_any_request(tmp_path: Path,
        artifact_server: ArtifactServer) -> None:
    server = artifact_server
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    site = Site(tmp_path, max_file_bytes=free * 10)
    model = ModelFile(path="huge.bin", sha256="0" * 64, url=server.url("huge.bin"), size=free * 4)
    with pytest.raises(FleetError, match=r"not enough disk space: \d+ bytes to download .* needs \d+, but .* has "
                                         r"\d+ free; free \d+ bytes"):
        site.fetch([model])
    assert server.requests() == []


def test_a_size_announced_by_the_server_is_checked_before_the_body(tmp_path: Path,
        artifact_server: ArtifactServer) -> None:
    server = artifact_server
    site = Site(tmp_path, max_file_bytes=10_000)
    with pytest.raises(FleetError, match=r"10000000 bytes is more than fleet.download.max_file_bytes \(10000\)"):
        site.fetch([ModelFile(path="n.bin", sha256="0" * 64, url=server.url("claims/10000000/n.bin"))])
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    site = Site(tmp_path / "b", reserve_bytes=free)
    with pytest.raises(FleetError, match="not enough disk space"):
        site.fetch([ModelFile(path="n.bin", sha256="0" * 64, url=server.url("claims/1000/n.bin"))])


def test_https_with_the_test_ca(tmp_path: Path) -> None:
    pki = write_pki(tmp_path / "pki")
    server = ArtifactServer(tmp_path / "www", tmp_path / "srv", cert=pki["server.crt"], key=pki["server.key"]).start()
    try:
        model = publish(server, "m.bin", blob(50_000, seed=4))
        assert model.url is not None and model.url.startswith("https://")
        site = Site(tmp_path / "a", ca_file=str(pki["ca.crt"]))
        assert site.fetch([model]) == 1
        untrusting = Site(tmp_path / "b", retries=0)  # the system CAs do not know the test CA
        with pytest.raises(FleetError, match=r"m\.bin from https://.*(CERTIFICATE_VERIFY_FAILED|certificate)"):
            untrusting.fetch([model])
        assert not (tmp_path / "b" / "models" / "m.bin").exists()
    finally:
        server.stop()


def test_parallel_downloads_stay_bounded(tmp_path: Path) -> None:
    server = ArtifactServer(tmp_path / "www", tmp_path / "srv", rate=2_000_000).start()
    try:
        models = [publish(server, f"f{i}.bin", blob(200_000, seed=10 + i)) for i in range(6)]
        site = Site(tmp_path, parallel=2)
        assert site.fetch(models) == 6
    finally:
        server.stop()
    assert max(r["active"] for r in server.requests()) == 2
    assert all((site.models / m.path).read_bytes() == (server.root / m.path).read_bytes() for m in models)


def test_paths_outside_the_allowed_directory_are_never_written(tmp_path: Path,
        artifact_server: ArtifactServer) -> None:
    server = artifact_server
    site = Site(tmp_path)
    model = publish(server, "m.bin", b"x" * 10)
    escaping = model.model_copy(update={"path": "../outside.bin"})
    assert site.fetch([escaping]) == 0  # left to validation, which rejects it with the path
    assert not (tmp_path / "outside.bin").exists() and server.requests() == []


def test_cleanup_keeps_the_kept_versions_and_hand_copied_files(tmp_path: Path,
        artifact_server: ArtifactServer) -> None:
    server = artifact_server
    site = Site(tmp_path)
    for version in (2, 3, 4):
        site.fetch([publish(server, f"v{version}/m.bin", blob(100, seed=version))], version=version)
    (site.models / "manual.bin").write_bytes(b"copied by hand")
    removed = site.registry.prune([4, 3], newest=2)
    assert removed == [str(site.models / "v2/m.bin")]
    assert sorted(p.name for p in site.models.rglob("*.bin")) == ["m.bin", "m.bin", "manual.bin"]
    # The running version (2, after rollbacks of 3 and 4) is always kept, whatever newer versions came.
    site.fetch([publish(server, "v2/m.bin", blob(100, seed=2))], version=2)
    for version in (5, 6):
        site.fetch([publish(server, f"v{version}/m.bin", blob(100, seed=version))], version=version)
    site.registry.prune([2], newest=2)
    assert sorted(str(p.relative_to(site.models)) for p in site.models.rglob("m.bin")) == \
        ["v2/m.bin", "v5/m.bin", "v6/m.bin"]


def test_mask_url() -> None:
    assert mask_url("https://u:p@h/x?sig=1&a=2") == "https://u:***@h/x?sig=***&a=2"
    assert mask_url("https://h/x?X-Amz-Credential=k&X-Amz-Signature=s") == \
        "https://h/x?X-Amz-Credential=***&X-Amz-Signature=***"
    assert mask_url("http://u@h/x") == "http://u@h/x"


def test_rate_limiter_paces_all_transfers_together() -> None:
    now = [0.0]
    waits: List[float] = []

    def wait(s: float) -> None:
        waits.append(s)
        now[0] += s

    limiter = RateLimiter(1000, wait, lambda: now[0])
    for _ in range(5):
        limiter.take(500)
    assert now[0] == pytest.approx(2.0)  # 2500 bytes at 1000 B/s, less the first chunk's burst
