"""A real, small file system for the fault tests: a tmpfs that fills to ENOSPC on demand."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


class SmallDisk:
    """A tmpfs of a few MiB mounted at `path`, filled to ENOSPC by one filler file on demand."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.filler = path / "filler"

    def mount(self) -> None:
        """Mount (skips the test when this process may not mount)."""
        self.path.mkdir(parents=True, exist_ok=True)
        mount = shutil.which("mount")
        if mount is None:
            pytest.skip("needs the `mount` command to put a small tmpfs under state_dir")
        done = subprocess.run(
            [mount, "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(
                "needs root or CAP_SYS_ADMIN to mount a small tmpfs as the full state_dir "
                f"(mount said: {done.stderr.strip() or done.returncode})"
            )

    def unmount(self) -> None:
        """Unmount; lazily if something still holds a file open (never left mounted)."""
        umount = shutil.which("umount") or "umount"
        if subprocess.run([umount, str(self.path)], capture_output=True).returncode != 0:
            subprocess.run([umount, "-l", str(self.path)], capture_output=True, check=True)

    def fill(self) -> int:
        """Write the filler until the file system refuses; returns the bytes written."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                block = b"\0" * chunk
                try:
                    while True:
                        written += os.write(fd, block)
                except OSError as exc:
                    if exc.errno != 28:  # ENOSPC: what we want; anything else is a real error
                        raise
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        """Delete the filler."""
        self.filler.unlink()

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer could still use."""
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize
