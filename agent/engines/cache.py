"""The engine cache: build each fingerprint once, never load a bad entry.

Layout under ``root`` (docs/cache.md)::

    <key>/            one verified entry: backend files + meta.json (written last)
    .tmp/<key>.<pid>.<rand>/   a build in progress; renamed to <key>/ when complete
    .trash/           entries moved aside because they failed verification
    .locks/<key>.lock flock(2) per key: one build of a key at a time, across processes

An entry exists under its final name only once every file is written, hashed and
fsynced, so a crash (kill -9, power loss) leaves at most a stale ``.tmp`` directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Literal, Mapping, Optional, Set, Tuple, Union

from agent.errors import CacheError
from agent.fsutil import DIR_MODE, atomic_write, fsync_path, make_dirs, read_regular
from agent.hashing import sha256_file
from agent.logs import event

log = logging.getLogger(__name__)

CACHE_SCHEMA = 1
META = "meta.json"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_META_KEYS = ("key", "model", "precision", "backend", "created", "last_used", "fields", "files", "report", "schema",
              "meta_sha256")
# meta.json is read only from a regular file of at most this size (never a FIFO, a device or a link):
# a real one is a few KiB; anything else would hang or exhaust memory before it could be rejected.
MAX_META_BYTES = 1 << 20
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)

Builder = Callable[[Path], Dict[str, Any]]
ProblemKind = Literal[
    "absent", "meta-missing", "meta-invalid", "schema", "missing-file", "size", "checksum",
    "extra-file", "unknown-dir", "stale-tmp", "trash",
]
Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int


@dataclass(frozen=True)
class CacheEntry:
    """A verified entry. ``meta`` is its parsed meta.json; the properties read from it."""

    key: str
    path: Path
    meta: Dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.meta["model"])

    @property
    def precision(self) -> str:
        return str(self.meta["precision"])

    @property
    def backend(self) -> str:
        return str(self.meta["backend"])

    @property
    def created(self) -> float:
        return float(self.meta["created"])

    @property
    def last_used(self) -> float:
        return float(self.meta["last_used"])

    @property
    def fields(self) -> Dict[str, Any]:
        return dict(self.meta["fields"])

    @property
    def report(self) -> Dict[str, Any]:
        return dict(self.meta["report"])

    @property
    def files(self) -> Dict[str, FileRecord]:
        return {rel: FileRecord(str(rec["sha256"]), int(rec["size"])) for rel, rec in self.meta["files"].items()}

    @property
    def size(self) -> int:
        """Bytes of the entry's listed files (meta.json not counted)."""
        return sum(int(rec["size"]) for rec in self.meta["files"].values())


@dataclass(frozen=True)
class CacheProblem:
    """Why an entry was not used (error), or something worth knowing about the cache (warning, info)."""

    key: str
    kind: ProblemKind
    severity: Severity
    message: str
    path: Path


class EngineCache:
    """Entries keyed by fingerprint key; safe for concurrent use by threads and processes."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self._clock = clock
        self._tmp = self.root / ".tmp"
        self._trash = self.root / ".trash"
        self._locks = self.root / ".locks"
        self._problems: Dict[str, Optional[CacheProblem]] = {}
        self._problems_lock = threading.Lock()

    def entry_dir(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    # lookups -------------------------------------------------------------------------
    def lookup(self, key: str) -> Optional[CacheEntry]:
        """The verified entry for ``key`` (its ``last_used`` updated), or None.

        A corrupt entry is logged, quarantined and treated as a miss; :meth:`problem` says why.
        Every listed file is hashed: the cost is one read of the entry (docs/cache.md).
        """
        path = self.entry_dir(key)
        found = self._verified(key) if path.exists() else None
        self._record(key, found if isinstance(found, CacheProblem) else None)
        if isinstance(found, CacheProblem):
            try:
                # Another process may be replacing the entry right now: decide under its lock.
                with self._lock(key):
                    found = self._lookup_locked(key)
            except CacheError as exc:
                event(log, logging.WARNING, "cache.quarantine_failed", key=key, error=str(exc))
                found = None
        if found is None:
            event(log, logging.DEBUG, "cache.miss", key=key)
            return None
        event(log, logging.DEBUG, "cache.hit", key=key, model=found.model)
        return self._touch(found)

    def problem(self, key: str) -> Optional[CacheProblem]:
        """Why the last :meth:`lookup` or :meth:`build` of ``key`` could not use an existing entry."""
        with self._problems_lock:
            return self._problems.get(key)

    def entries(self) -> List[CacheEntry]:
        """Every entry whose meta.json parses, by key; files are not hashed (see :meth:`verify`)."""
        found: List[CacheEntry] = []
        for path in self._entry_dirs():
            parsed = self._parse(path.name)
            if isinstance(parsed, CacheEntry):
                found.append(parsed)
        return found

    def verify(self, keys: Optional[Iterable[str]] = None, quarantine: bool = False) -> List[CacheProblem]:
        """Hash-check ``keys`` (default: every entry) and report problems, worst first.

        Errors are entries a lookup would refuse; with ``quarantine`` they are removed now.
        Extra files, unknown directories, stale builds and trash are reported as info.
        """
        problems: List[CacheProblem] = []
        if keys is None:
            names = [p.name for p in self._entry_dirs()]
            problems += self._housekeeping_info()
        else:
            names = list(keys)
        for key in names:
            path = self.entry_dir(key)
            if not path.is_dir():
                problems.append(CacheProblem(key, "absent", "warning", f"no cache entry {key}: it is built on "
                                             "the next start or `edge-agent build`", path))
                continue
            found = self._verified(key)
            if isinstance(found, CacheProblem):
                problems.append(found)
                if quarantine:
                    with self._lock(key):
                        self._lookup_locked(key)
            else:
                problems += self._extra_files(found)
        order = {"error": 0, "warning": 1, "info": 2}
        return sorted(problems, key=lambda p: (order[p.severity], p.key, p.kind))

    # builds --------------------------------------------------------------------------
    def build(
        self, key: str, fields: Mapping[str, Any], model: str, backend: str, builder: Builder
    ) -> Tuple[CacheEntry, bool]:
        """The entry for ``key``: found (hit=True) or made by ``builder(tmpdir)`` (hit=False).

        Builds of one key are serialized across processes; a waiter finds the finished entry.
        ``builder`` writes its files into the directory it is given and returns the report
        stored in meta.json. Its exceptions propagate after the temporary directory is
        removed (a full or read-only disk becomes :class:`CacheError`).
        """
        # A valid entry is complete once its directory exists (renamed into place), so loading it needs no
        # lock: a read-only cache (an image baked at the factory, a ro mount) still loads its engines.
        found = self.lookup(key)
        if found is not None:
            return found, True
        self._ensure_layout()
        with self._lock(key, announce=True):
            existing = self._lookup_locked(key)
            if existing is not None:
                return self._touch(existing), True
            self._sweep_tmp(own_key=key)
            return self._build_locked(key, fields, model, backend, builder), False

    def remove(self, key: str) -> bool:
        """Delete the entry for ``key`` (e.g. a plan that no longer deserializes). True if one existed."""
        path = self.entry_dir(key)
        if not path.exists():
            return False
        with self._lock(key):
            if not path.exists():
                return False
            self._discard(key, path)
        event(log, logging.INFO, "cache.removed", key=key)
        return True

    def prune(self, referenced: Set[str], dry_run: bool = False, max_age_s: Optional[float] = None) -> List[str]:
        """Remove entries not in ``referenced`` (with ``max_age_s``: only those unused that long),
        plus trash, stale build directories and unused lock files. Entries busy in a build
        are skipped. Returns what was (or, with ``dry_run``, would be) removed, relative to root."""
        removed: List[str] = []
        now = self._clock()
        for path in self._entry_dirs():
            key = path.name
            if key in referenced:
                continue
            if max_age_s is not None and now - self._last_used(key) < max_age_s:
                continue
            if dry_run or self._with_free_lock(key, partial(self._discard, key, path)):
                removed.append(key)
        for path in _children(self._tmp):
            if self._with_free_lock(_tmp_key(path.name), None if dry_run else partial(_rmtree, path)):
                removed.append(f".tmp/{path.name}")
        for path in _children(self._trash):
            if not dry_run:
                _rmtree(path)
            removed.append(f".trash/{path.name}")
        for path in _children(self._locks):
            key = path.name[: -len(".lock")]
            valid = path.name.endswith(".lock") and _KEY.match(key)
            if valid and self._with_free_lock(key, None if dry_run else path.unlink):
                removed.append(f".locks/{path.name}")
        if removed:
            event(log, logging.INFO, "cache.pruned", root=str(self.root), count=len(removed), dry_run=dry_run)
        return removed

    # internals: verification -----------------------------------------------------------
    def _parse(self, key: str) -> Union[CacheEntry, CacheProblem]:
        """The entry as meta.json describes it, without looking at the files."""
        path = self.root / key
        meta_path = path / META
        try:
            text = _read_meta(meta_path)
        except FileNotFoundError:
            return CacheProblem(key, "meta-missing", "error", f"{meta_path} is missing", path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return CacheProblem(key, "meta-invalid", "error", f"{meta_path} cannot be read: {exc}", path)
        try:
            meta = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            return CacheProblem(key, "meta-invalid", "error", f"{meta_path} is not valid JSON: "
                                f"{str(exc)[:200]}", path)
        if not isinstance(meta, dict):
            return CacheProblem(key, "meta-invalid", "error", f"{meta_path} is not a JSON object", path)
        if meta.get("schema") != CACHE_SCHEMA:
            return CacheProblem(key, "schema", "error", f"{meta_path} has schema {meta.get('schema')!r}, this "
                                f"agent writes {CACHE_SCHEMA}: it comes from another agent version", path)
        reason = _meta_error(key, meta)
        if reason:
            return CacheProblem(key, "meta-invalid", "error", f"{meta_path}: {reason}", path)
        return CacheEntry(key, path, meta)

    def _verified(self, key: str) -> Union[CacheEntry, CacheProblem]:
        """The entry if meta.json parses and every listed file has its recorded size and sha256."""
        parsed = self._parse(key)
        if isinstance(parsed, CacheProblem):
            return parsed
        for rel, record in parsed.files.items():
            file = parsed.path / rel
            try:
                st = os.lstat(file)
            except FileNotFoundError:
                return CacheProblem(key, "missing-file", "error", f"{file} is listed in meta.json but missing", file)
            except OSError as exc:
                return CacheProblem(key, "missing-file", "error", f"{file} cannot be read: {exc}", file)
            if not _is_regular(st.st_mode):
                return CacheProblem(key, "missing-file", "error", f"{file} is not a regular file", file)
            if st.st_size != record.size:
                return CacheProblem(key, "size", "error", f"{file} has {st.st_size} bytes, meta.json records "
                                    f"{record.size} (truncated or overwritten)", file)
            try:
                actual = sha256_file(file)
            except OSError as exc:
                return CacheProblem(key, "missing-file", "error", f"{file} cannot be read: {exc}", file)
            if actual != record.sha256:
                return CacheProblem(key, "checksum", "error", f"{file} has sha256 {actual[:16]}…, meta.json "
                                    f"records {record.sha256[:16]}… (corrupted on disk)", file)
        return parsed

    def _extra_files(self, entry: CacheEntry) -> List[CacheProblem]:
        listed = set(entry.files) | {META}
        extras: List[CacheProblem] = []
        for rel in _walk_files(entry.path):
            if rel not in listed:
                extras.append(CacheProblem(entry.key, "extra-file", "info", f"{entry.path / rel} is not listed in "
                                           "meta.json (written after the build; not checked)", entry.path / rel))
        return extras

    def _housekeeping_info(self) -> List[CacheProblem]:
        info: List[CacheProblem] = []
        for path in _children(self.root):
            if path.is_dir() and not path.name.startswith(".") and not os.path.lexists(path / META):
                info.append(CacheProblem(path.name, "unknown-dir", "info", f"{path} has no meta.json: not a cache "
                                         "entry (a lookup of this key would discard it)", path))
        for path in _children(self._tmp):
            info.append(CacheProblem(_tmp_key(path.name), "stale-tmp", "info", f"{path} is a build in progress "
                                     "or left by a killed build (`edge-agent cache prune` removes it)", path))
        for path in _children(self._trash):
            info.append(CacheProblem(path.name, "trash", "info", f"{path} is a quarantined entry "
                                     "(`edge-agent cache prune` removes it)", path))
        return info

    def _lookup_locked(self, key: str) -> Optional[CacheEntry]:
        """Verify under the key's lock; a bad entry is quarantined (and remembered) here."""
        if not (self.root / key).exists():
            return None
        found = self._verified(key)
        if isinstance(found, CacheProblem):
            self._record(key, found)
            self._quarantine(found)
            return None
        self._record(key, None)
        return found

    def _quarantine(self, problem: CacheProblem) -> None:
        event(log, logging.WARNING, "cache.corrupt", key=problem.key, kind=problem.kind, detail=problem.message)
        self._discard(problem.key, self.root / problem.key)

    def _discard(self, key: str, path: Path) -> None:
        """Move the entry aside in one rename (the key is free at once), then delete it."""
        dest = self._trash / f"{key}.{int(self._clock())}.{secrets.token_hex(4)}"
        try:
            make_dirs(self._trash)
            os.rename(path, dest)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _write_error(exc, self.root, f"cannot remove cache entry {key}") from exc
        _rmtree(dest)

    def _last_used(self, key: str) -> float:
        parsed = self._parse(key)
        return parsed.last_used if isinstance(parsed, CacheEntry) else 0.0

    def _record(self, key: str, problem: Optional[CacheProblem]) -> None:
        with self._problems_lock:
            self._problems[key] = problem

    # internals: writing ----------------------------------------------------------------
    def _build_locked(
        self, key: str, fields: Mapping[str, Any], model: str, backend: str, builder: Builder
    ) -> CacheEntry:
        started = time.monotonic()
        tmp = self._tmp / f"{key}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            os.chmod(tmp, DIR_MODE)
        except OSError as exc:
            raise _write_error(exc, self._tmp, f"cannot start building {key}") from exc
        event(log, logging.INFO, "cache.build_start", key=key, model=model, backend=backend)
        try:
            try:
                report = builder(tmp)
            except OSError as exc:
                if exc.errno in _FULL_DISK + _NOT_WRITABLE:
                    raise _write_error(exc, self.root, f"cannot build {key}") from exc
                raise
            if not isinstance(report, dict):
                raise TypeError(f"the builder of {model} returned {type(report).__name__}, not a report dict")
            entry = self._seal(tmp, key, fields, model, backend, report)
        except BaseException:
            _rmtree(tmp)
            raise
        event(log, logging.INFO, "cache.built", key=key, model=model, bytes=entry.size,
              seconds=round(time.monotonic() - started, 3))
        return entry

    def _seal(
        self, tmp: Path, key: str, fields: Mapping[str, Any], model: str, backend: str, report: Dict[str, Any]
    ) -> CacheEntry:
        """Hash and fsync what the builder wrote, write meta.json last, rename into place."""
        final = self.root / key
        try:
            files: Dict[str, Dict[str, Any]] = {}
            for rel in _walk_files(tmp, refuse_links=True):
                path = tmp / rel
                files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
                fsync_path(path)
            now = self._clock()
            meta = {
                "schema": CACHE_SCHEMA, "key": key, "model": model, "precision": str(fields.get("precision", "")),
                "backend": backend, "created": now, "last_used": now, "fields": dict(fields),
                "files": files, "report": report,
            }
            # Round-trip through JSON so the returned entry equals what a later lookup reads.
            text = sealed_meta_text(json.loads(json.dumps(meta, default=str)))
            atomic_write(tmp / META, text.encode("utf-8"))
            for directory in sorted({(tmp / rel).parent for rel in files} | {tmp}, reverse=True):
                fsync_path(directory)
            if final.exists():
                raise CacheError(f"{final} appeared while {key} was being built, without being a valid entry: "
                                 "remove it and retry")
            os.rename(tmp, final)
            fsync_path(self.root)
        except OSError as exc:
            raise _write_error(exc, self.root, f"cannot store {key}") from exc
        return CacheEntry(key, final, json.loads(text))

    def _touch(self, entry: CacheEntry) -> CacheEntry:
        """Record the load in meta.json (atomic replace); a read-only cache still loads."""
        text = sealed_meta_text(dict(entry.meta, last_used=self._clock()))
        meta = json.loads(text)
        try:
            atomic_write(entry.path / META, text.encode("utf-8"))
        except OSError as exc:
            event(log, logging.INFO, "cache.touch_failed", key=entry.key, error=str(exc))
            return entry
        return CacheEntry(entry.key, entry.path, meta)

    def _ensure_layout(self) -> None:
        for directory in (self.root, self._tmp, self._trash, self._locks):
            try:
                make_dirs(directory)
            except OSError as exc:
                raise _write_error(exc, directory, "cannot create the engine cache") from exc

    def _sweep_tmp(self, own_key: str) -> None:
        """Remove build directories no live build owns: ours (we hold the lock) and unlocked ones."""
        for path in _children(self._tmp):
            key = _tmp_key(path.name)
            if key == own_key:
                event(log, logging.INFO, "cache.stale_tmp", path=str(path))
                _rmtree(path)
            elif self._with_free_lock(key, partial(_rmtree, path)):
                event(log, logging.INFO, "cache.stale_tmp", path=str(path))

    # internals: locking ----------------------------------------------------------------
    @contextmanager
    def _lock(self, key: str, announce: bool = False) -> Iterator[None]:
        lock_path = self._locks / f"{_check_key(key)}.lock"
        try:
            make_dirs(self._locks)
            fd = _acquire(lock_path, wait=False)
            if fd is None:
                if announce:
                    event(log, logging.INFO, "cache.waiting", key=key, lock=str(lock_path))
                fd = _acquire(lock_path, wait=True)
        except OSError as exc:
            raise _write_error(exc, self._locks, f"cannot lock {key}") from exc
        assert fd is not None
        try:
            yield
        finally:
            os.close(fd)

    def _with_free_lock(self, key: str, action: Optional[Callable[[], Any]]) -> bool:
        """Run ``action`` if nobody holds ``key``'s lock; True if it was free."""
        if not _KEY.match(key):
            if action is not None:
                action()
            return True
        try:
            fd = _acquire(self._locks / f"{key}.lock", wait=False)
        except OSError:
            return False
        if fd is None:
            return False
        try:
            if action is not None:
                action()
        finally:
            os.close(fd)
        return True

    def _entry_dirs(self) -> List[Path]:
        return [p for p in _children(self.root)
                if not p.name.startswith(".") and _KEY.match(p.name) and os.path.lexists(p / META)]


def _acquire(path: Path, wait: bool) -> Optional[int]:
    """An fd holding ``flock(LOCK_EX)`` on ``path``; None if busy and not ``wait``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # prune unlinks free lock files; a lock on an unlinked file would guard nothing.
        with contextlib.suppress(FileNotFoundError):
            current = os.stat(path)
            held = os.fstat(fd)
            if (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                return fd
        os.close(fd)


def _meta_error(key: str, meta: Mapping[str, Any]) -> str:
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        return f"missing {', '.join(missing)}"
    if meta["key"] != key:
        return f"describes key {meta['key']!r}, not the directory's {key!r}"
    if not isinstance(meta["fields"], dict) or not isinstance(meta["report"], dict):
        return "fields and report must be objects"
    if not all(isinstance(meta[k], (int, float)) and not isinstance(meta[k], bool) and math.isfinite(meta[k])
               for k in ("created", "last_used")):
        return "created and last_used must be finite numbers"
    if meta["meta_sha256"] != _meta_digest(meta):
        return ("its recorded fields changed after it was written (meta_sha256 does not match): "
                "edited or corrupted on disk")
    files = meta["files"]
    if not isinstance(files, dict):
        return "files must be an object"
    for rel, record in files.items():
        parts = rel.split("/")
        if rel.startswith("/") or ".." in parts or rel == META or "" in parts:
            return f"file name {rel!r} is not a plain relative path"
        if not (isinstance(record, dict) and isinstance(record.get("sha256"), str)
                and isinstance(record.get("size"), int)):
            return f"files[{rel!r}] needs sha256 and size"
    return ""


def _meta_digest(meta: Mapping[str, Any]) -> str:
    """sha256 over every field of meta.json but itself, in a canonical form."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def sealed_meta_text(meta: Mapping[str, Any]) -> str:
    """meta.json's text for ``meta``, with the digest that covers every other field."""
    return json.dumps(dict(meta, meta_sha256=_meta_digest(meta)), indent=1, sort_keys=True)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number meta.json may hold")


def _read_meta(path: Path) -> str:
    return read_regular(path, MAX_META_BYTES).decode("utf-8")


def _write_error(exc: OSError, directory: Path, what: str) -> CacheError:
    if exc.errno in _FULL_DISK:
        hint = (f"the disk holding {directory} is full: free space (`edge-agent cache prune` removes engines "
                "no manifest uses) or point cache_dir in config.yaml at a larger disk")
    elif exc.errno in _NOT_WRITABLE:
        hint = (f"{directory} is not writable by this user: fix its ownership/permissions or point "
                "cache_dir in config.yaml at a writable directory")
    else:
        hint = f"check the disk holding {directory}"
    where = f" ({exc.filename})" if exc.filename else ""
    return CacheError(f"{what}: {exc.strerror or exc}{where}; {hint}")


def _walk_files(top: Path, refuse_links: bool = False) -> List[str]:
    """Regular files under ``top`` as sorted posix relative paths."""
    found: List[str] = []
    for dirpath, dirnames, filenames in os.walk(top):
        base = Path(dirpath)
        for name in dirnames + filenames:
            path = base / name
            if refuse_links and path.is_symlink():
                raise CacheError(f"the build left a symbolic link {path}; cache entries must hold regular files "
                                 "(copy the target instead)")
        found += [(base / name).relative_to(top).as_posix() for name in filenames
                  if _is_regular(os.lstat(base / name).st_mode)]
    return sorted(found)


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _children(directory: Path) -> List[Path]:
    try:
        return sorted(directory.iterdir())
    except OSError:
        return []


def _tmp_key(name: str) -> str:
    """``<key>.<pid>.<rand>`` -> ``<key>`` (keys may contain dots, pid and rand do not)."""
    return name.rsplit(".", 2)[0]


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _check_key(key: str) -> str:
    if not _KEY.match(key):
        raise CacheError(f"{key!r} is not a cache key: keys are 1-200 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit (see `edge-agent cache list`)")
    return key
