"""Model files an envelope lists with a ``url``: fetched before the manifest is validated.

A file is fetched when it is missing or has another hash than the signed ``sha256``. Bytes go
to ``.<name>.<sha12>.part`` beside the target (same filesystem, so the final rename is atomic),
are verified against the signed hash, fsynced and renamed into place; the manifest's path only
ever holds a complete, verified file. An interrupted transfer resumes from the part file with an
HTTP Range request. Network and server errors are retried with jittered exponential backoff;
wrong bytes, a client error (4xx), a redirect loop and every limit end the attempt at once.

``ArtifactRegistry`` remembers which files were downloaded for which envelope versions, so
``prune`` removes only downloaded files that no kept version references (never files an
operator copied by hand).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import HTTPError

from agent.backoff import Backoff
from agent.errors import FleetError
from agent.fleet.disk import load_json_entries, save_json_entries
from agent.fleet.envelope import ModelFile
from agent.fsutil import fsync_path
from agent.hashing import sha256_file
from agent.logs import event
from agent.manifest.config import DownloadConfig
from agent.manifest.paths import absolute, inside

log = logging.getLogger(__name__)

CHUNK = 256 << 10
# Progress reports at most this often per attempt (each is a retained MQTT message).
PROGRESS_INTERVAL_S = 1.0
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_SECRET_QUERY = re.compile(r"sig|signature|token|key|credential|password|secret|auth", re.IGNORECASE)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

ProgressListener = Callable[[Dict[str, Any]], None]


def mask_url(url: str) -> str:
    """``url`` fit for logs and reports: the password in ``user:pass@`` and secret-looking query values
    (presigned URLs: ``X-Amz-Signature``, ``token``, ``sig``...) become ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_QUERY.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def part_path(target: str, sha256: str) -> str:
    head, name = os.path.split(target)
    return os.path.join(head, f".{name}.{sha256[:12]}.part")


class _Retry(Exception):
    """Worth another try (network error, timeout, 5xx, a truncated body)."""


class _Refused(Exception):
    """Will not get better by trying again (4xx, wrong bytes, limits, redirect loop)."""


@dataclass
class _Job:
    index: int
    model: ModelFile
    path: str
    url: str
    done: int = 0
    total: Optional[int] = None
    finished: bool = False


class DownloadProgress:
    """Bytes and percent over every file of one attempt; ``snapshot`` is what reports and health carry."""

    def __init__(self, jobs: Sequence[_Job], listener: ProgressListener, clock: Callable[[], float]) -> None:
        self._jobs = list(jobs)
        self._listener = listener
        self._clock = clock
        self._lock = threading.Lock()
        self._emit = threading.Lock()
        self._last = 0.0
        self.started = clock()

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            done = sum(j.done for j in self._jobs)
            totals = [j.total for j in self._jobs]
            total = None if any(t is None for t in totals) else sum(t for t in totals if t is not None)
            active = [{"path": j.model.path, "bytes": j.done, "total": j.total}
                      for j in self._jobs if not j.finished and j.done]
            return {
                "files": len(self._jobs),
                "files_done": sum(1 for j in self._jobs if j.finished),
                "bytes": done,
                "total_bytes": total,
                "percent": None if not total else round(100.0 * done / total, 1),
                "elapsed_s": round(self._clock() - self.started, 1),
                "active": active,
            }

    def update(self, job: _Job, done: int, total: Optional[int], finished: bool = False) -> None:
        with self._lock:
            job.done, job.total, job.finished = done, total, finished
            now = self._clock()
            due = finished or now - self._last >= PROGRESS_INTERVAL_S
            if due:
                self._last = now
        if due:
            with self._emit:  # reports from parallel transfers go out one at a time
                self._listener(self.snapshot())


class RateLimiter:
    """All transfers together stay under ``rate`` bytes per second (one chunk of burst)."""

    def __init__(self, rate: Optional[int], wait: Callable[[float], Any], clock: Callable[[], float]) -> None:
        self.rate = rate
        self._wait = wait
        self._clock = clock
        self._lock = threading.Lock()
        self._paid_until = 0.0

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = self._clock()
            self._paid_until = max(self._paid_until, now) + n / self.rate
            delay = self._paid_until - now - n / self.rate
        if delay > 0:
            self._wait(delay)


def free_bytes(path: str) -> int:
    return shutil.disk_usage(_existing_dir(path)).free


def _existing_dir(path: str) -> str:
    head = os.path.dirname(path)
    while head and not os.path.isdir(head):
        head = os.path.dirname(head)
    return head or "."


class ArtifactRegistry:
    """``<state_dir>/fleet/artifacts.json``: every downloaded file, its hash, and the versions that listed it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        loaded = load_json_entries(path, "starting empty: files downloaded before are no longer cleaned up")
        self._entries = {k: v for k, v in loaded.items()
                         if isinstance(v.get("sha256"), str) and isinstance(v.get("versions"), list)}

    def record(self, path: str, sha256: str, version: int) -> None:
        with self._lock:
            entry = self._entries.get(path)
            if entry is None or entry.get("sha256") != sha256:
                entry = {"sha256": sha256, "versions": []}
                self._entries[path] = entry
            if version not in entry["versions"]:
                entry["versions"] = sorted([*entry["versions"], version])
            self._save()

    def known(self, path: str) -> bool:
        with self._lock:
            return path in self._entries

    def prune(self, keep_versions: Iterable[int], newest: int) -> List[str]:
        """Delete downloaded files (and their part files) that none of ``keep_versions`` nor the ``newest``
        recorded versions lists; the paths removed."""
        with self._lock:
            seen = sorted({v for e in self._entries.values() for v in e["versions"]}, reverse=True)
            keep: Set[int] = set(keep_versions) | set(seen[:newest])
            drop = [p for p, e in self._entries.items() if not keep.intersection(e["versions"])]
            removed = []
            for path in drop:
                entry = self._entries.pop(path)
                for victim in (path, part_path(path, entry["sha256"])):
                    try:
                        os.unlink(victim)
                        removed.append(victim)
                    except FileNotFoundError:
                        continue  # already gone: nothing to remove
                    except OSError as exc:
                        event(log, logging.WARNING, "fleet.artifact_prune_failed", path=victim, error=str(exc))
            if drop:
                self._save()
            return removed

    def _save(self) -> None:
        save_json_entries(self.path, self._entries, "a downloaded file that cleanup does not know about")


@dataclass
class ArtifactFetcher:
    """Fetches the ``url`` entries of one envelope's ``models`` (see the module docstring)."""

    config: DownloadConfig
    registry: ArtifactRegistry
    clock: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = random.random
    disk_free: Callable[[str], int] = free_bytes
    _abort: threading.Event = field(default_factory=threading.Event)
    _pool: Optional[urllib3.PoolManager] = None
    _progress: Optional[DownloadProgress] = None

    def close(self) -> None:
        """Abort transfers in flight (they end with an error naming the file); used at shutdown."""
        self._abort.set()

    def progress(self) -> Optional[Dict[str, Any]]:
        """The running download's progress, or None when nothing is downloading."""
        current = self._progress
        return None if current is None else current.snapshot()

    def fetch(self, models: Sequence[ModelFile], version: int, base_dir: Path, allowed_dirs: Sequence[Path],
              on_progress: ProgressListener) -> int:
        """Download every listed file with a ``url`` that is missing or differs from its ``sha256``; the number
        fetched. ``FleetError`` names every file that failed, with its URL (credentials masked). Paths outside
        ``allowed_dirs`` are left to validation, which rejects them; nothing is ever written there."""
        jobs = []
        for i, model in enumerate(models):
            if not model.url or "\x00" in model.path:
                continue
            path = absolute(model.path, base_dir)
            if not inside(path, allowed_dirs):
                continue
            if os.path.isfile(path) and _sha_or_none(path) == model.sha256:
                if self.registry.known(path):
                    self.registry.record(path, model.sha256, version)
                continue
            jobs.append(_Job(i, model, path, model.url))
        if not jobs:
            return 0
        self._check_space_up_front(jobs)
        progress = DownloadProgress(jobs, on_progress, self.clock)
        limiter = RateLimiter(self.config.rate_limit_bytes_s, self._abort.wait, self.clock)
        self._progress = progress
        try:
            with ThreadPoolExecutor(max_workers=self.config.parallel, thread_name_prefix="fleet-download") as pool:
                outcomes = list(pool.map(lambda j: self._one(j, version, progress, limiter), jobs))
        finally:
            self._progress = None
        problems = [p for p in outcomes if p is not None]
        if problems:
            raise FleetError("\n".join(problems))
        event(log, logging.INFO, "fleet.downloaded", version=version, files=len(jobs),
              bytes=progress.snapshot()["bytes"])
        return len(jobs)

    # one file ----------------------------------------------------------------------------------------------------
    def _one(self, job: _Job, version: int, progress: DownloadProgress, limiter: RateLimiter) -> Optional[str]:
        where = f"models[{job.index}] {job.model.path} from {mask_url(job.url)}"
        self.registry.record(job.path, job.model.sha256, version)
        part = part_path(job.path, job.model.sha256)
        try:
            os.makedirs(os.path.dirname(job.path), exist_ok=True)
        except OSError as exc:
            return f"{where}: cannot create {os.path.dirname(job.path)}: {exc.strerror or exc}"
        tries = 0
        backoff = Backoff(self.config.retry_base_s, max(self.config.retry_base_s, self.config.retry_max_s), self.rng)
        fresh_retry_done = False
        while True:
            if self._abort.is_set():
                return f"{where}: download stopped (the agent is shutting down); publish again"
            try:
                resumed_from = _size(part)
                self._transfer(job, part, progress, limiter)
                actual = sha256_file(part)
                if actual != job.model.sha256:
                    if resumed_from and not fresh_retry_done:
                        # The server's file may have changed between resumes: one clean try from byte 0.
                        fresh_retry_done = True
                        os.unlink(part)
                        continue
                    _unlink(part)
                    raise _Refused(f"wrong bytes: sha256 {actual}, the envelope expects {job.model.sha256}; "
                                   "check the file at the URL or sign the envelope again")
                self._install(part, job.path)
                progress.update(job, job.done, job.total, finished=True)
                event(log, logging.INFO, "fleet.artifact_installed", path=job.path, bytes=job.done,
                      url=mask_url(job.url))
                return None
            except _Refused as exc:
                event(log, logging.WARNING, "fleet.download_refused", path=job.path, url=mask_url(job.url),
                      error=str(exc))
                return f"{where}: {exc}"
            except (_Retry, HTTPError, OSError) as exc:
                reason = _describe(exc)
                if tries >= self.config.retries:
                    return (f"{where}: {reason} (gave up after {tries + 1} tries; the part already fetched "
                            "is kept and resumed when the update is published again)")
                delay = backoff.next_delay()
                tries += 1
                event(log, logging.INFO, "fleet.download_retry", path=job.path, url=mask_url(job.url),
                      error=reason, attempt=tries, delay_s=round(delay, 2))
                self._abort.wait(delay)

    def _transfer(self, job: _Job, part: str, progress: DownloadProgress, limiter: RateLimiter) -> None:
        offset = _size(part)
        declared = job.model.size
        if offset and declared is not None and offset > declared:
            os.unlink(part)
            offset = 0
        response = self._get(job.url, offset)
        try:
            status = response.status
            if status == 416 and offset:
                total = _range_total(response.headers.get("Content-Range", ""))
                if total == offset:
                    job.total = job.done = offset
                    return  # the part file already holds every byte
                os.unlink(part)
                raise _Retry(f"the server refused to resume at byte {offset}")
            if status in _RETRY_STATUS or status >= 500:
                raise _Retry(f"HTTP {status} {response.reason or ''}".rstrip())
            if status not in (200, 206):
                raise _Refused(f"HTTP {status} {response.reason or ''}".rstrip() + "; check the URL")
            if status == 206:
                start, total = _content_range(response.headers.get("Content-Range", ""))
                if start != offset:
                    os.unlink(part)
                    raise _Retry(f"the server resumed at byte {start}, not {offset}")
            else:
                offset = 0  # the server ignored the Range header: start over
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            self._check_size(job, total, offset, part)
            job.done, job.total = offset, total
            progress.update(job, offset, total)
            with open(part, "r+b" if offset else "wb") as fh:
                fh.seek(offset)
                fh.truncate()
                for chunk in response.stream(CHUNK):
                    if self._abort.is_set():
                        raise _Retry("stopped")
                    fh.write(chunk)
                    offset += len(chunk)
                    if offset > self.config.max_file_bytes:
                        fh.close()
                        _unlink(part)
                        raise _Refused(f"larger than fleet.download.max_file_bytes ({self.config.max_file_bytes})")
                    limiter.take(len(chunk))
                    progress.update(job, offset, total)
                fh.flush()
                os.fsync(fh.fileno())
            if total is not None and offset < total:
                raise _Retry(f"the connection closed after {offset} of {total} bytes")
            job.total = offset if total is None else total
        finally:
            response.release_conn()

    def _check_size(self, job: _Job, total: Optional[int], offset: int, part: str) -> None:
        if total is None:
            return
        if total > self.config.max_file_bytes:
            raise _Refused(f"{total} bytes is more than fleet.download.max_file_bytes "
                           f"({self.config.max_file_bytes}); raise the limit in config.yaml or ship a smaller file")
        if job.model.size is not None and total != job.model.size:
            _unlink(part)
            raise _Refused(f"the server sends {total} bytes, the envelope says {job.model.size}")
        free = self.disk_free(job.path)
        needed = total - offset + self.config.reserve_bytes
        if needed > free:
            raise _Refused(_space_reason(job.path, total - offset, free, self.config.reserve_bytes))

    def _check_space_up_front(self, jobs: Sequence[_Job]) -> None:
        """With sizes in the envelope, refuse before the first request when they cannot fit."""
        by_dir: Dict[str, Tuple[int, List[_Job]]] = {}
        for job in jobs:
            if job.model.size is None:
                continue
            if job.model.size > self.config.max_file_bytes:
                raise FleetError(f"models[{job.index}] {job.model.path} from {mask_url(job.url)}: {job.model.size} "
                                 f"bytes is more than fleet.download.max_file_bytes ({self.config.max_file_bytes}); "
                                 "raise the limit in config.yaml or ship a smaller file")
            key = _existing_dir(job.path)
            dev = os.stat(key).st_dev
            need, members = by_dir.get(str(dev), (0, []))
            by_dir[str(dev)] = (need + job.model.size - _size(part_path(job.path, job.model.sha256)), [*members, job])
        for need, members in by_dir.values():
            free = self.disk_free(members[0].path)
            if need + self.config.reserve_bytes > free:
                names = ", ".join(f"{j.model.path} from {mask_url(j.url)}" for j in members)
                raise FleetError(f"{names}: {_space_reason(members[0].path, need, free, self.config.reserve_bytes)}")

    def _install(self, part: str, target: str) -> None:
        os.replace(part, target)
        fsync_path(Path(os.path.dirname(target)))

    # HTTP -------------------------------------------------------------------------------------------------------
    def _get(self, url: str, offset: int) -> Any:
        """GET ``url`` from byte ``offset``, following redirects ourselves (to name a loop and keep Range)."""
        pool = self._pool_manager()
        seen: List[str] = []
        auth_host: Optional[str] = None
        headers_base: Dict[str, str] = {"User-Agent": "edge-agent-fleet"}
        if offset:
            headers_base["Range"] = f"bytes={offset}-"
        current = url
        while True:
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https"):
                raise _Refused(f"unsupported URL scheme {parts.scheme!r} (use http or https)")
            headers = dict(headers_base)
            plain, userinfo = _strip_userinfo(current)
            if userinfo is not None:
                auth_host = parts.hostname
                headers.update(urllib3.make_headers(basic_auth=userinfo))
            elif auth_host is not None and parts.hostname == auth_host:
                headers.update(urllib3.make_headers(basic_auth=_strip_userinfo(url)[1]))
            seen.append(plain)
            timeout = urllib3.Timeout(connect=self.config.timeout_s, read=self.config.timeout_s)
            response = pool.urlopen("GET", plain, headers=headers, redirect=False, retries=False,
                                    preload_content=False, timeout=timeout)
            if response.status not in _REDIRECT_STATUS:
                return response
            location = response.headers.get("Location")
            response.drain_conn()
            response.release_conn()
            if not location:
                raise _Refused(f"HTTP {response.status} without a Location header")
            nxt = urljoin(plain, location)
            if _strip_userinfo(nxt)[0] in seen:
                chain = " -> ".join(mask_url(u) for u in [*seen, nxt])
                raise _Refused(f"redirect loop: {chain}")
            if len(seen) > self.config.max_redirects:
                raise _Refused(f"more than fleet.download.max_redirects ({self.config.max_redirects}) redirects")
            current = nxt

    def _pool_manager(self) -> urllib3.PoolManager:
        if self._pool is None:
            self._pool = urllib3.PoolManager(num_pools=8, maxsize=self.config.parallel, cert_reqs="CERT_REQUIRED",
                                             ca_certs=self.config.ca_file)
        return self._pool


def _strip_userinfo(url: str) -> Tuple[str, Optional[str]]:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), userinfo


def _content_range(value: str) -> Tuple[int, Optional[int]]:
    match = _CONTENT_RANGE.match(value.strip())
    if match is None:
        raise _Retry(f"unreadable Content-Range {value[:80]!r}")
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _range_total(value: str) -> Optional[int]:
    match = re.match(r"^bytes \*/(\d+)$", value.strip())
    return int(match.group(1)) if match else None


def _space_reason(path: str, need: int, free: int, reserve: int) -> str:
    return (f"not enough disk space: {need} bytes to download plus fleet.download.reserve_bytes ({reserve}) "
            f"needs {need + reserve}, but {_existing_dir(path)} has {free} free; free {need + reserve - free} "
            "bytes or lower reserve_bytes")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Retry):
        return str(exc)
    if isinstance(exc, OSError) and not isinstance(exc, HTTPError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    # urllib3's messages can embed the connection's repr; the type and first line suffice.
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _sha_or_none(path: str) -> Optional[str]:
    try:
        return sha256_file(path)
    except OSError:
        return None
