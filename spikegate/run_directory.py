"""A run owns its directory for its whole life, and a run's files can be checked to belong together.

``claim_run_directory(path, fresh=...)`` takes an exclusive lock on ``path/.spikegate.lock`` (an
``flock``, which the kernel drops when the process dies, so the lock of a crashed run is never
stale). A fresh run whose directory is held by another live run, or already holds a run's files
(two runs started in the same second get the same timestamped name), moves on to ``path-1``,
``path-2``, ... A resumed run must use ``path`` itself and is refused while another run holds it.

``RunDirectory.release(keep=...)`` drops the lock; a run that failed before its first checkpoint in a
directory that was empty when it started removes the directory (and parents it left empty inside
the working directory), so nothing but finished or resumable runs stays behind.

``run_digest(cfg)`` is a short hash of what a run trains; the trainer stores it in the checkpoint and
in ``metrics.json``, and ``spikegate evaluate`` / ``spikegate report`` compare it with
``config.yaml`` to tell a directory that mixes two runs' files.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

__all__ = ["RunDirectory", "RunDirectoryError", "claim_run_directory", "run_digest", "LOCK_NAME"]

LOCK_NAME = ".spikegate.lock"
# any of these in a directory means a run already lives there
RUN_FILES = ("config.yaml", "checkpoint.pt", "metrics.json", ".hydra")
# settings a resume may change without changing what the run trains
_NOT_DIGESTED = {
    "trainer": ("resume", "epochs", "progress", "num_workers", "pin_memory", "device", "distributed"),
    "neuron": ("backend",),
    "dataset": ("root", "cache_dir"),
}


class RunDirectoryError(RuntimeError):
    """A run directory that another live run holds."""


@dataclass
class RunDirectory:
    """A directory this process holds the lock of.

    path: the directory (may differ from the one asked for, see ``claim_run_directory``).
    pristine: it held nothing when the run claimed it, so the run may remove it on failure.
    run_id: a random id, also written into the lock file with the pid.
    """

    path: Path
    pristine: bool
    run_id: str
    _fd: Optional[int] = field(default=None, repr=False)

    def release(self, *, keep: bool = True) -> None:
        """Drop the lock. ``keep=False``: remove the directory too if the run found it empty (its
        files are then all this run's), and the parents this leaves empty under the cwd."""
        if self._fd is None:
            return
        (self.path / LOCK_NAME).unlink(missing_ok=True)  # before unlocking: see _try_lock
        os.close(self._fd)
        self._fd = None
        if not keep and self.pristine:
            shutil.rmtree(self.path, ignore_errors=True)
            _remove_empty_parents(self.path)


def _remove_empty_parents(path: Path) -> None:
    cwd = Path.cwd().resolve()
    parent = path.resolve().parent
    while parent != cwd and cwd in parent.parents:
        try:
            parent.rmdir()
        except OSError:  # not empty (another run lives there) or already gone
            return
        parent = parent.parent


def _holder(lock_path: Path) -> str:
    try:
        return f"pid {json.loads(lock_path.read_text())['pid']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _try_lock(directory: Path, run_id: str) -> Optional[int]:
    """The fd of ``directory/LOCK_NAME`` locked by this process, or None if a live process holds it.

    A holder unlinks the lock file before it unlocks, so a lock taken on a file that is no longer
    at the path (its holder just finished) is dropped and taken again on a fresh file."""
    lock_path = directory / LOCK_NAME
    while True:
        directory.mkdir(parents=True, exist_ok=True)  # a failed run may have just removed it
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return None
            raise
        try:
            same_file = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:
            os.close(fd)
            continue
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id})
        os.ftruncate(fd, 0)
        os.write(fd, record.encode())
        return fd


def _holds_run(directory: Path) -> bool:
    return any((directory / name).exists() for name in RUN_FILES)


def _is_empty(directory: Path) -> bool:
    return all(entry.name == LOCK_NAME for entry in directory.iterdir())


def claim_run_directory(path: str | os.PathLike, *, fresh: bool) -> RunDirectory:
    """Lock ``path`` (creating it) for this run; see the module docstring.

    fresh: a new run (not a resume): when ``path`` is held by another run or already holds a run's
        files, use the first of ``path-1``, ``path-2``, ... that is free.
    Raises ``RunDirectoryError`` when a resumed run's ``path`` is held by another live run."""
    path = Path(path)
    run_id = uuid.uuid4().hex
    for n in range(10_000):
        candidate = path if n == 0 else path.with_name(f"{path.name}-{n}")
        fd = _try_lock(candidate, run_id)
        if fd is None:
            if not fresh:
                raise RunDirectoryError(
                    f"run directory {candidate} is in use by another run ({_holder(candidate / LOCK_NAME)}); "
                    "wait for it to finish"
                )
            continue
        if fresh and _holds_run(candidate):
            (candidate / LOCK_NAME).unlink(missing_ok=True)
            os.close(fd)
            continue
        return RunDirectory(candidate, pristine=_is_empty(candidate), run_id=run_id, _fd=fd)
    raise RunDirectoryError(f"run directory: no free name after {path}-9999")


def _digest_source(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    plain = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)  # a copy: cfg stays as it is
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    for group, keys in _NOT_DIGESTED.items():
        for key in keys:
            if isinstance(plain.get(group), dict):
                plain[group].pop(key, None)
    return plain


def run_digest(cfg: DictConfig | Mapping[str, Any]) -> str:
    """16 hex digits hashing the resolved config, without the settings a resume may change (where
    data lives, the device and backend, progress bars, workers, ``trainer.distributed``,
    ``trainer.epochs`` and ``trainer.resume``)."""
    text = json.dumps(_digest_source(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mixed_runs(run_dir: str | os.PathLike, cfg: DictConfig | Mapping[str, Any], written_by: Optional[str],
               what: str) -> Optional[str]:
    """Why the file ``what`` of ``run_dir``, written by the run with digest ``written_by``, and the
    ``cfg`` of its ``config.yaml`` come from different runs; None when they agree (or the file is
    older than the digest and cannot be checked)."""
    if written_by is None:
        return None
    described = run_digest(cfg)
    if written_by == described:
        return None
    return (f"{run_dir} mixes two runs: {what} was written by run {written_by}, "
            f"config.yaml describes run {described}")
