"""The parameter snapshot file of ``snapshot_params="disk"``: written once, removed on every exit path.

A run killed by SIGKILL runs no cleanup; its file carries its process id, so
the next run removes it once that process is gone.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import torch

__all__ = ["SnapshotError", "remove_stale_spills", "spill_to_disk"]


class SnapshotError(RuntimeError):
    """The parameter snapshot could not be written (a full or unwritable temporary folder)."""


_SPILL_PREFIX = "ckptlint-params-"


def spill_to_disk(tensors: dict[str, torch.Tensor]) -> str:
    """Save ``tensors`` to a new temporary file and return its path.

    The file name carries this process's id, so that files left behind by a
    killed run (SIGKILL skips every ``finally``) are recognised and removed
    by the next call. A write that fails (``TMPDIR`` full or unwritable)
    removes the partial file and raises ``SnapshotError`` in one line: verify
    never falls back to an in-memory copy on its own, which could exhaust
    memory on exactly the models the file exists for.
    """
    folder = tempfile.gettempdir()
    remove_stale_spills(folder)
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    fd, path = -1, ""
    try:
        fd, path = tempfile.mkstemp(prefix=f"{_SPILL_PREFIX}{os.getpid()}-", suffix=".pt", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            torch.save(tensors, fh)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if isinstance(exc, (OSError, RuntimeError)):
            reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
            reason = reason if isinstance(reason, str) else reason[0]
            raise SnapshotError(
                f"snapshot_params='disk': cannot write the {_mib(nbytes)} parameter snapshot to {folder!r} "
                f"({reason}); free space there, point TMPDIR at a folder with room, or pass "
                "snapshot_params=True (an in-memory copy) or False (no copy; a parameter write then raises)"
            ) from None
        raise
    return path


def remove_stale_spills(folder: str) -> list[str]:
    """Remove snapshot files whose process no longer exists; return their paths."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(_SPILL_PREFIX) and name.endswith(".pt")):
            continue
        pid_text = name[len(_SPILL_PREFIX) :].partition("-")[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows: os.kill(pid, 0) is not a probe there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # another user's process, or not ours to judge: keep its file
    return True


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
