"""Who may write into a work dir: one rpnet process at a time, and only into folders rpnet made.

**The lock.** ``rpnet run``, the stage commands and ``rpnet sweep`` hold the work dir's lock while
they write: an exclusive ``flock`` on the work dir itself (so deleting a file cannot release it);
``WORK_DIR/.rpnet.lock`` holds the holder's pid, host, start time and command. A second writer is refused with a :class:`WorkDirBusy` that names the holder.
The kernel drops the lock when its process dies however it dies (kill -9 included), so a lock
left by a dead process is simply taken over by the next run: nothing to clean up by hand. Locks
are re-entrant within a process (``rpnet sweep`` runs ``rpnet run`` on each of its cells).

**Ownership.** Each folder rpnet creates in a work dir gets an empty mark file, ``.rpnet``. rpnet
deletes a folder only when it carries the mark (or the records the runner leaves: ``done.json``,
``started.json``), and overwrites the files at the top of a work dir (``config.yaml``,
``metrics.json``, ``report.html``) only in a work dir it marked, or one an rpnet older than the
marks wrote. Anything else is the user's: :class:`NotOurs` says which files are in the way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Iterator

from .errors import RpnetError
from .io import remove_temporaries
from .layout import METRICS, REPORT, RUN_CONFIG

log = logging.getLogger(__name__)

LOCK_FILE = ".rpnet.lock"
MARK_FILE = ".rpnet"
RUNNER_RECORDS = ("done.json", "started.json")  # rpnet.pipeline.state's records: also mark a stage folder
RUN_FILES = (RUN_CONFIG, METRICS, REPORT)  # what rpnet writes at the top of a work dir

_held: dict[Path, tuple[int, int]] = {}  # lock path -> (fd, depth), this process's locks


class WorkDirBusy(RpnetError):
    """Another process holds the work dir's lock."""


class NotOurs(RpnetError):
    """A folder rpnet would write into or delete holds files rpnet did not write."""


def holder_text(info: dict) -> str:
    """``pid 123 on host h since 2026-12-06T20:01:02+00:00 (rpnet run c.yaml)`` from a lock file's JSON."""
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('started', '?')}"
            f" ({info.get('command', '?')})")


def read_holder(path: Path) -> dict:
    """The JSON a lock file holds; {} when it is empty or torn."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


@contextlib.contextmanager
def work_dir_lock(folder: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold the lock of ``folder`` for the ``with`` block (an exclusive ``flock`` on the folder; its holder is
    written to ``folder/.rpnet.lock``); :class:`WorkDirBusy` when another process holds it.

    ``command``: what to tell a refused second writer (default: this process's command line).
    Creates ``folder`` if needed. Yields the lock file's path.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / LOCK_FILE).resolve()
    if path in _held:  # re-entered by the process that holds it
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
        try:
            yield path
        finally:
            fd, depth = _held[path]
            _held[path] = (fd, depth - 1)
        return
    # The lock is held on the folder itself: deleting .rpnet.lock during a run (a clean-up script, a user)
    # lets no second writer in. The file only says who holds it.
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WorkDirBusy(f"{folder} is in use by {holder_text(read_holder(path))}: wait for it to finish, "
                          "or stop that process (its lock goes with it), or choose another work_dir") from None
    previous = read_holder(path)
    if previous:
        log.info("%s: taking over the lock left by %s, which no longer holds it", folder, holder_text(previous))
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command or " ".join(["rpnet", *sys.argv[1:]])}
    path.write_text(json.dumps(info) + "\n")
    _held[path] = (fd, 1)
    try:
        yield path
    finally:
        if _held[path][1] == 1:
            del _held[path]
            with contextlib.suppress(OSError):
                path.write_text("")  # an empty lock file: nobody holds it (a killed holder leaves its JSON)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def lock_held(folder: str | Path) -> bool:
    """Whether another process holds ``folder``'s lock now (a run in progress); takes no lock itself."""
    import fcntl

    folder = Path(folder)
    if not folder.is_dir() or (folder.resolve() / LOCK_FILE) in _held:
        return False
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def mark(folder: str | Path) -> Path:
    """Create ``folder`` (and parents) and mark it as rpnet's; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARK_FILE).touch()
    return folder


def is_ours(folder: str | Path) -> bool:
    """Whether rpnet made ``folder``: its mark, or one of the runner's records, is in it."""
    folder = Path(folder)
    return any((folder / name).is_file() for name in (MARK_FILE, *RUNNER_RECORDS))


def foreign_files(folder: Path, limit: int = 5) -> list[str]:
    """Up to ``limit`` names of what ``folder`` holds, for an error message."""
    return sorted(p.name for p in folder.iterdir())[:limit]


TRASH_PREFIX = ".rpnet-trash-"  # a stage folder being deleted: renamed first, so a kill leaves no half folder


def files_changed_since(folder: Path, stamp: float) -> list[Path]:
    """The files under ``folder`` modified after ``stamp`` (a modification time): what someone put or
    edited there after rpnet finished writing it."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_mtime > stamp)


def remove_ours(folder: str | Path, finished: float | None = None) -> None:
    """Delete a folder rpnet made and everything rpnet wrote in it; nothing is deleted (:class:`NotOurs`)
    when it is not marked as rpnet's, or when, ``finished`` (the modification time of the record rpnet
    wrote last into it) given, a file in it is newer: a file a user put or edited there (precious notes,
    hand-corrected masks). The folder is renamed to a trash name first and then removed, so a kill
    half-way leaves no half-deleted folder under the stage's name (:func:`empty_trash` finishes it)."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not is_ours(folder):
        raise NotOurs(f"{folder} holds files rpnet did not write ({', '.join(foreign_files(folder))}): rpnet "
                      "would have to delete them to rerun this stage; move them away or choose another work_dir")
    if finished is not None:
        changed = files_changed_since(folder, finished)
        if changed:
            names = ", ".join(str(p.relative_to(folder)) for p in changed[:5]) + (", ..." if len(changed) > 5 else "")
            raise NotOurs(f"{folder} must be rerun, but {len(changed)} file(s) in it were put there or changed after "
                          f"rpnet wrote it ({names}): rpnet deletes only what it wrote; move them out of {folder} "
                          "and run again")
    trash = folder.with_name(f"{TRASH_PREFIX}{folder.name}-{os.getpid()}")
    if trash.exists():
        shutil.rmtree(trash)
    folder.rename(trash)
    shutil.rmtree(trash)


def empty_trash(work: Path) -> int:
    """Remove the stage folders a killed run was deleting (:data:`TRASH_PREFIX`); returns how many."""
    trash = [p for p in work.iterdir() if p.is_dir() and p.name.startswith(TRASH_PREFIX)] if work.is_dir() else []
    for folder in trash:
        shutil.rmtree(folder)
    return len(trash)


def claim_work_dir(work: str | Path) -> Path:
    """Make ``work`` rpnet's before the first write, and mark it. Refused (:class:`NotOurs`, nothing
    written): an unmarked folder holding a file rpnet would overwrite there (:data:`RUN_FILES`), unless
    an rpnet older than the marks wrote it (its config.yaml is rpnet's own dump, or a stage folder
    holds the runner's records). Other files may stay: stage folders are checked when they would be
    deleted (:func:`remove_ours`), and a folder of copied weights is a valid start. Returns the folder."""
    work = Path(work)
    if work.exists() and not work.is_dir():
        raise NotOurs(f"work_dir {work} is a file, not a folder")
    if work.is_dir() and not (work / MARK_FILE).is_file():
        clashes = [name for name in RUN_FILES if (work / name).exists()]
        legacy = written_by_rpnet(work / RUN_CONFIG) or any(is_ours(p) for p in work.iterdir() if p.is_dir())
        if clashes and not legacy:
            raise NotOurs(f"work_dir {work} already holds {', '.join(clashes)}, which rpnet did not write and would "
                          "overwrite: choose a new or empty work_dir, or move them away")
    return mark(work)


def written_by_rpnet(config: Path) -> bool:
    """Whether ``config`` is a resolved config as rpnet writes it (byte for byte its own dump)."""
    from .config import dump_config, load_config
    from .errors import ConfigError

    if not config.is_file():
        return False
    try:
        text = config.read_text()
        return dump_config(load_config(config)) == text
    except (ConfigError, OSError, UnicodeDecodeError):
        return False


@contextlib.contextmanager
def writing(work: str | Path, *, main: bool = True, command: str | None = None) -> Iterator[Path]:
    """Claim and lock the work dir for a ``with`` block that writes into it (:func:`claim_work_dir`,
    :func:`work_dir_lock`), and delete the temporary files a killed run left in it. ``main``: whether this process does (under torchrun, rank 0; the other
    ranks write only where rank 0 has made the folders). Yields the work dir."""
    work = Path(work)
    if not main:
        yield work
        return
    claim_work_dir(work)
    with work_dir_lock(work, command):
        removed = remove_temporaries(work)  # a killed writer's half-written files; none is writing now
        if removed:
            log.info("%s: removed %d temporary files left by a killed run", work, removed)
        if empty_trash(work):
            log.info("%s: finished deleting the stage folders a killed run was deleting", work)
        yield work
