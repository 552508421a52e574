"""Crash-safe file operations: every write lands whole or not at all, and survives power loss.

The pattern is always the same: write a temporary file in the target's folder, fsync it, rename
it over the target (atomic on POSIX within one file system), then fsync the folder so the rename
itself is on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

TMP_PREFIX = ".tmp-"
"""Names starting with this are half-written leftovers that `recover` deletes."""


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, creations, deletions) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(target: Path) -> Path:
    return target.with_name(f"{TMP_PREFIX}{target.name}.{os.getpid()}")


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Replace `target` with `data`: temp file, fsync, rename, fsync of the folder."""
    tmp = _tmp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_writer(target: Path) -> Iterator[BinaryIO]:
    """A binary file that replaces `target` atomically and durably when the block ends cleanly."""
    tmp = _tmp_name(target)
    try:
        with tmp.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write_json(target: Path, obj: Any) -> None:
    """Replace `target` with `obj` as indented JSON, atomically and durably."""
    atomic_write_bytes(target, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    """Parse a JSON file, or None when it is absent or unreadable (a torn write never is)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def atomic_symlink(target: Path, link: Path) -> None:
    """Point `link` at `target` (a relative path is kept relative) in one rename."""
    tmp = _tmp_name(link)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def remove_link(link: Path) -> None:
    """Delete a symlink (or file) if present, durably."""
    try:
        link.unlink()
    except FileNotFoundError:
        return
    fsync_dir(link.parent)


def remove_tree(path: Path) -> None:
    """Delete a folder atomically from the reader's view: rename it aside, then delete it."""
    if not path.exists() and not path.is_symlink():
        return
    # A folder half-deleted by a crash must not look like a real one at the next start.
    aside = path.with_name(f"{TMP_PREFIX}{path.name}.{os.urandom(4).hex()}.del")
    os.replace(path, aside)
    fsync_dir(path.parent)
    shutil.rmtree(aside, ignore_errors=True)


def fsync_file(path: Path) -> None:
    """Flush one file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
