"""Crash-safe file writes shared by the engine cache, the state store, fleet staging and timing caches;
bounded reads of files a hostile or careless path may name."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

# State, cache and spool directories: the agent's user and group, never others, whatever the umask
# the service or an operator's shell runs under (0777 under umask 000).
DIR_MODE = 0o750


def make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    """``mkdir -p`` that sets ``mode`` explicitly on each directory it creates; existing ones keep theirs."""
    path = Path(path)
    if path.is_dir():
        return
    if path.parent != path:
        make_dirs(path.parent, mode)
    try:
        path.mkdir()
    except FileExistsError:
        if path.is_dir():  # another process or thread made it meanwhile
            return
        raise
    os.chmod(path, mode)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` so that a crash (kill -9, power loss) leaves the old or the new content,
    never a mix: write a temporary file, fsync it, rename it over ``path``, fsync the directory."""
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (which makes renames and new entries in it durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, only if it is a regular file (not a link, FIFO or device) of at most
    ``max_bytes``: a FIFO would block the reader and /dev/zero would never end. ``ValueError`` says why
    one is refused; ``OSError`` as ``open`` raises it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link, not a regular file") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{path} is not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path} is larger than {max_bytes} bytes")
    return data
