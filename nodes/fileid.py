"""Noticing that an open file's path no longer names it (deleted or replaced while open).

Writers that keep a file open (the recorder, the ride store) remember the file's identity
when they open it and ask :func:`path_lost` on each flush or rotation tick; a file deleted or
replaced under a running flow would otherwise take every later write into an unlinked inode.
"""

from __future__ import annotations

import os

__all__ = ["FileIdentity", "file_identity", "path_lost"]

#: ``(st_dev, st_ino)`` of a file
FileIdentity = tuple[int, int]


def file_identity(st: os.stat_result) -> FileIdentity:
    """The identity of the file ``st`` describes."""
    return (st.st_dev, st.st_ino)


def path_lost(path: str | os.PathLike[str], identity: FileIdentity | None) -> str | None:
    """Why ``path`` no longer names the file of ``identity`` (deleted, replaced), or None.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     ident = file_identity(os.fstat(f.fileno()))
    ...     print(path_lost(f.name, ident))
    None
    >>> path_lost(f.name, ident)
    'deleted'
    >>> print(path_lost(f.name, None))  # nothing opened yet
    None
    """
    if identity is None:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "deleted"
    except OSError as exc:
        return f"no longer accessible ({exc.strerror or exc})"
    if file_identity(st) != identity:
        return "replaced by another file"
    return None
