"""A disk spool for results: SQLite in WAL mode, ordered by a sequence that survives restarts.

Durability: every ``append`` (and every ``append_many``: one transaction for the whole batch)
is committed before it returns. With
``synchronous=NORMAL`` (the default) a committed append survives the agent
being killed (kill -9, OOM, crash): the WAL file is written before the call
returns and the OS keeps it. It can be lost, together with the appends after
the last WAL sync, on a power cut or kernel crash; the database is never
corrupted either way. ``synchronous="FULL"`` fsyncs the WAL on every commit and
also survives power loss, at the price of one fsync per result.

Size cap: when an append would exceed ``max_messages`` or ``max_bytes`` (topic +
payload bytes), the OLDEST messages are deleted until it fits. Each deleted
message increments the persisted ``dropped`` counter. A single message larger
than ``max_bytes`` is not stored and is counted as dropped as well.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Literal, Optional, Sequence, Tuple, Union

from agent.errors import PublishError
from agent.fsutil import make_dirs
from agent.logs import event

log = logging.getLogger(__name__)

Payload = Union[bytes, Callable[[int], bytes]]

# what max_bytes counts: topic bytes + payload bytes
_SIZE_SQL = "LENGTH(CAST(topic AS BLOB)) + LENGTH(payload)"
_INSERT = "INSERT INTO messages (seq, topic, payload, qos, retain, created) VALUES (?,?,?,?,?,?)"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS messages ("
    " seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,"
    " qos INTEGER NOT NULL, retain INTEGER NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', 1), ('dropped', 0)",
)


@dataclass(frozen=True)
class SpooledMessage:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float  # wall clock when spooled

    @property
    def size(self) -> int:
        return _size(self.topic, self.payload)


def _size(topic: str, payload: bytes) -> int:
    return len(topic.encode("utf-8")) + len(payload)


class Spool:
    """Thread-safe: one connection, one lock. One process per spool file (enforced with a lock file)."""

    def __init__(self, path: Path, max_bytes: int, max_messages: int,
                 synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> None:
        if max_bytes < 1 or max_messages < 1:
            raise PublishError(f"spool limits must be positive (max_bytes={max_bytes}, max_messages={max_messages})")
        self.path = path
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self._lock = threading.Lock()
        make_dirs(path.parent)
        self._lockfile = _exclusive(path)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            # Checkpoint every 64 pages (~256 KiB) instead of SQLite's 1000 (~4 MiB), and truncate the WAL
            # back to 1 MiB after each: the spool must keep working on a nearly full disk, where a
            # 4 MiB WAL alone would refuse results long before max_bytes is reached.
            self._db.execute("PRAGMA wal_autocheckpoint=64")
            self._db.execute("PRAGMA journal_size_limit=1048576")
            with self._transaction():
                for statement in _SCHEMA:
                    self._db.execute(statement)
            count, total, last = self._db.execute(
                f"SELECT COUNT(*), COALESCE(SUM({_SIZE_SQL}), 0), COALESCE(MAX(seq), 0) FROM messages"
            ).fetchone()
            # appends do not write next_seq (one statement per result); deletes do, so the sequence never
            # goes back even when every message was delivered
            self._next_seq = max(self._meta("next_seq"), int(last) + 1)
        except sqlite3.DatabaseError as exc:
            os.close(self._lockfile)
            raise PublishError(f"result spool {path} cannot be opened ({exc}): if it is corrupt, move it away "
                               "(the results in it are lost) and restart") from exc
        self._count = int(count)
        self._bytes = int(total)

    def append(self, topic: str, payload: Payload, qos: int, retain: bool = False) -> int:
        """Store one message; returns its sequence number. ``payload`` may be a function of that number,
        so a payload can carry its own sequence."""
        return self._append(topic, (payload,), qos, retain)[0]

    def append_many(self, topic: str, payloads: Sequence[Payload], qos: int,
                    retain: bool = False) -> List[SpooledMessage]:
        """Store messages in one transaction, in order, with consecutive sequence numbers; returns them
        (an oversize one is counted as dropped and left out). All or nothing: if one payload function
        raises, nothing is stored and the exception propagates."""
        return self._append(topic, payloads, qos, retain)[1]

    def _append(self, topic: str, payloads: Sequence[Payload], qos: int,
                retain: bool) -> Tuple[int, List[SpooledMessage]]:
        """(the first sequence number used, the messages stored)."""
        with self._lock:
            before = (self._next_seq, self._count, self._bytes)
            try:
                return before[0], self._append_locked(topic, payloads, qos, retain)
            except sqlite3.OperationalError as exc:
                self._next_seq, self._count, self._bytes = before
                if "full" not in str(exc):
                    raise
                # The WAL holds pages of results already acknowledged and deleted: checkpoint them into
                # the database (whose freed pages are reused) and truncate the WAL, then try once more.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except BaseException:
                self._next_seq, self._count, self._bytes = before
                raise
            try:
                return before[0], self._append_locked(topic, payloads, qos, retain)
            except BaseException:
                self._next_seq, self._count, self._bytes = before
                raise

    def _append_locked(self, topic: str, payloads: Sequence[Payload], qos: int,
                       retain: bool) -> List[SpooledMessage]:
        stored: List[SpooledMessage] = []
        oversize = 0
        now = time.time()
        with self._transaction():
            for payload in payloads:
                seq = self._next_seq
                body = payload(seq) if callable(payload) else payload
                self._next_seq = seq + 1
                size = _size(topic, body)
                if size > self.max_bytes:
                    oversize += 1
                    event(log, logging.WARNING, "spool.oversize", seq=seq, topic=topic, bytes=size,
                          max_bytes=self.max_bytes)
                    continue
                if self._count + 1 > self.max_messages or self._bytes + size > self.max_bytes:
                    dropped, freed = self._drop_oldest(size, seq)
                    self._count -= dropped
                    self._bytes -= freed
                self._db.execute(_INSERT, (seq, topic, body, qos, int(retain), now))
                self._count += 1
                self._bytes += size
                stored.append(SpooledMessage(seq, topic, body, qos, retain, now))
            if oversize:
                self._set_meta("dropped", self._meta("dropped") + oversize)
                # a row may not carry the last sequence number consumed: keep it from being reused
                self._set_meta("next_seq", self._next_seq)
        return stored

    def pending(self, limit: int, after: int = 0) -> List[SpooledMessage]:
        """Up to ``limit`` messages with ``seq > after``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain, created FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [SpooledMessage(int(s), str(t), bytes(p), int(q), bool(r), float(c)) for s, t, p, q, r, c in rows]

    def ack(self, seq: int) -> None:
        """Delete a delivered message; unknown (already dropped or acked) sequences are ignored."""
        self.ack_many((seq,))

    def ack_many(self, seqs: Iterable[int]) -> None:
        keys = sorted(set(seqs))
        if not keys:
            return
        removed, freed = 0, 0
        with self._lock:
            with self._transaction():
                self._set_meta("next_seq", self._next_seq)
                # chunks stay under SQLite's old 999-variable limit (JetPack 5 ships SQLite 3.31)
                for start in range(0, len(keys), 500):
                    chunk = keys[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    count, nbytes = self._db.execute(
                        f"SELECT COUNT(*), COALESCE(SUM({_SIZE_SQL}), 0) FROM messages WHERE seq IN ({marks})", chunk
                    ).fetchone()
                    self._db.execute(f"DELETE FROM messages WHERE seq IN ({marks})", chunk)
                    removed, freed = removed + int(count), freed + int(nbytes)
            self._count -= removed
            self._bytes -= freed

    @property
    def last_seq(self) -> int:
        """The last sequence number given out (0 before the first)."""
        with self._lock:
            return self._next_seq - 1

    def depth(self) -> int:
        with self._lock:
            return self._count

    def size_bytes(self) -> int:
        """Topic + payload bytes stored (what ``max_bytes`` caps); the file adds SQLite's page overhead."""
        with self._lock:
            return self._bytes

    @property
    def dropped(self) -> int:
        """Messages deleted unsent by the size cap, over the spool's whole life."""
        with self._lock:
            return self._meta("dropped")

    def oldest_age_s(self) -> float:
        """Seconds since the oldest unsent message was spooled; 0 when empty."""
        with self._lock:
            row = self._db.execute("SELECT created FROM messages ORDER BY seq LIMIT 1").fetchone()
        return max(0.0, time.time() - float(row[0])) if row else 0.0

    def close(self) -> None:
        with self._lock:
            self._db.close()
            os.close(self._lockfile)

    def _drop_oldest(self, size: int, seq: int) -> Tuple[int, int]:
        """Inside the caller's transaction: delete the oldest messages so one of ``size`` bytes (sequence
        ``seq``) fits. Returns (messages, bytes) deleted."""
        excess_count = self._count + 1 - self.max_messages
        excess_bytes = self._bytes + size - self.max_bytes
        last_seq, dropped, freed = 0, 0, 0
        cursor = self._db.execute(f"SELECT seq, {_SIZE_SQL} FROM messages ORDER BY seq")
        try:
            while dropped < excess_count or freed < excess_bytes:
                rows = cursor.fetchmany(256)
                if not rows:
                    break
                for seq, nbytes in rows:
                    if dropped >= excess_count and freed >= excess_bytes:
                        break
                    last_seq, dropped, freed = int(seq), dropped + 1, freed + int(nbytes)
        finally:
            cursor.close()
        if not dropped:
            return 0, 0
        self._set_meta("next_seq", seq + 1)
        self._set_meta("dropped", self._meta("dropped") + dropped)
        self._db.execute("DELETE FROM messages WHERE seq <= ?", (last_seq,))
        event(log, logging.WARNING, "spool.dropped_oldest", count=dropped, last_seq=last_seq,
              depth=self._count - dropped, max_messages=self.max_messages, max_bytes=self.max_bytes)
        return dropped, freed

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (the sqlite3 module's implicit transactions are off)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error:
                # A failed COMMIT (disk full) leaves the transaction open: close it, then report.
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


def _exclusive(path: Path) -> int:
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise PublishError(f"result spool {path} is in use by another agent process: stop it, "
                           "or give this one its own state_dir") from exc
    return fd
