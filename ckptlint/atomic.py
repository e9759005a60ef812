"""Replacing a file atomically: what ``--fix`` and ``--output-file`` write goes through here.

The new bytes go to a temporary file in the same folder, are flushed and
fsync-ed, and the file is renamed over the target (``os.replace``), then the
folder is fsync-ed: a crash or a full disk leaves the old file or the new
one, never half of one, and a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["replace_atomically"]


def replace_atomically(target: str, data: bytes, *, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Make ``target`` hold ``data`` with permission bits ``mode`` (and ``owner``'s uid/gid, where allowed)."""
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".ckptlint-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if owner is not None and hasattr(os, "chown"):
            tmp_stat = os.stat(tmp)
            if (tmp_stat.st_uid, tmp_stat.st_gid) != owner:
                try:
                    os.chown(tmp, *owner)
                except OSError:
                    pass  # only the owner's own group or root may give files away
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
