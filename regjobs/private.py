"""Files and folders only this system's user can read.

The state folder holds owners' emails, screenshots, valid evidence links and the secret key,
so nothing in it is ever readable by another user, not even for a moment:
- every process that starts the system sets the umask `UMASK` once, first thing (the
  launcher, `api.serve`, the warm pool, the CLIs; `deployments.stack` passes it to each child
  it starts; the systemd units say `UMask=`), so whatever any of them or their libraries
  create (SQLite and its WAL, logs, Prefect's home, Chromium's profile) is 0600, folders 0700;
- files the code writes itself are made with `os.open(..., 0o600)`, whatever the umask;
- the state folder is made 0700, and tightened to 0700 if it exists (docs/design.md,
  "Secrets and hostile input").
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

#: No permission for the group or others on anything created.
UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700

logger = logging.getLogger("regjobs.private")


def restrict_umask() -> None:
    """Set this process's umask (inherited by every process it starts)."""
    os.umask(UMASK)


def private_dir(path: Path) -> Path:
    """`path` made 0700 (its missing parents as the umask says), or tightened to 0700 if it
    exists, is this user's and is not a shared sticky folder like /tmp."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    found = path.stat()
    if stat.S_IMODE(found.st_mode) & ~DIR_MODE:
        if found.st_uid != os.getuid() or found.st_mode & stat.S_ISVTX:
            logger.warning(
                "%s is readable by others and not this user's own folder: left as it is", path
            )
        else:
            os.chmod(path, DIR_MODE)
    return path


def create_private(path: Path, data: bytes) -> None:
    """A new file holding `data`, 0600 from the moment it exists (never created readable and
    then changed); FileExistsError if `path` exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def publish_private(path: Path, data: bytes) -> bool:
    """A new file `path` holding `data`, 0600 and whole from the moment it has its name:
    written under a temporary name (`create_private`), then linked into place, which fails
    if `path` exists. False if it was there already: processes racing to make it agree on
    whichever landed first."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    create_private(tmp, data)
    try:
        path.hardlink_to(tmp)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data` at once (readers see the old or the new, whole), 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by a process of this PID that died half-way
    create_private(tmp, data)
    os.replace(tmp, path)


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """A file descriptor of `path`, created 0600 if it does not exist."""
    return os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
