"""Where a neuromorphic dataset's files are: its folder under ``dataset.root``, read as the user has it.

A dataset folder (e.g. ``ROOT/NMNIST``) may hold the unpacked files, the published archives
(``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``) or both, complete or in part. ``DatasetFiles`` lists the
members of all of them under one name space: a file in the folder is named by its path relative to
the folder, a member of an archive by ``<archive stem>/<path inside the archive>`` (``train.zip``
holding ``Train/0/00002.bin`` gives ``train/Train/0/00002.bin``). Each dataset matches these names
with a pattern per split that yields the label, so it does not matter which of the forms is on disk.

Errors (all subclasses of ``DatasetError``, whose message is one line meant for the user):

- ``DatasetNotFoundError`` (a ``FileNotFoundError``): the files are not there; names the dataset,
  the folder looked in, the files expected and where they are published.
- ``DatasetRootError`` (a ``ValueError``): the root or the dataset folder is a file, cannot be read,
  or holds something that is not this dataset.
- ``CorruptDatasetFileError`` (a ``ValueError``): one file cannot be read or does not hold what the
  dataset's format says; names the file (``archive:member`` inside an archive).
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .event_cache import PathLike, default_root

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetRootError",
    "CorruptDatasetFileError",
    "PartialDatasetWarning",
    "ARCHIVE_SUFFIXES",
    "dataset_root",
    "DatasetFiles",
    "SplitFiles",
]

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


class DatasetError(Exception):
    """A user error about dataset files; the message is one line that says what to do."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset's files are not where the configuration points."""


class DatasetRootError(DatasetError, ValueError):
    """``dataset.root`` or the dataset's folder is a file, unreadable, or holds another dataset."""


class CorruptDatasetFileError(DatasetError, ValueError):
    """A dataset file cannot be read or does not hold the dataset's format."""


class PartialDatasetWarning(UserWarning):
    """Fewer samples than the published dataset holds were found (a partial copy)."""


def dataset_root(root: Optional[PathLike]) -> Path:
    """``root`` (``None``: ``$SPIKEGATE_DATA`` or ``~/.cache/spikegate``) as a path; refuses a root
    that is a file or cannot be listed. A root that does not exist is left to the dataset to report
    (it names the files expected there)."""
    if root is None:
        path = default_root()
    elif isinstance(root, (str, os.PathLike)) and str(root) != "":
        path = Path(root).expanduser()
    else:
        raise DatasetRootError(f"dataset.root: expected a directory path or null, got {root!r}")
    if path.exists() and not path.is_dir():
        raise DatasetRootError(f"dataset.root: {str(path)!r} is a file, expected a directory")
    if path.is_dir() and not os.access(path, os.R_OK | os.X_OK):
        raise DatasetRootError(f"dataset.root: cannot read the directory {str(path)!r} (permission denied)")
    return path


def _archive_stem(name: str) -> Optional[str]:
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _is_hidden(name: str) -> bool:
    """Hidden files and the resource forks macOS adds to archives (``._x.bin``, ``__MACOSX/``)."""
    return any(part.startswith(".") and part not in (".", "..") or part == "__MACOSX"
               for part in name.split("/"))


class _Folder:
    """Plain files below ``base`` (archives excluded), named by their relative posix path."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def names(self) -> list[str]:
        found = []
        for directory, dirs, files in os.walk(self.base, onerror=self._refuse):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = Path(directory).relative_to(self.base)
            found += [(rel / f).as_posix() for f in files if _archive_stem(f) is None]
        return found

    def _refuse(self, error: OSError) -> None:
        raise DatasetRootError(f"cannot read {str(error.filename)!r}: {error.strerror}") from error

    def where(self, name: str) -> str:
        return str(self.base / name)

    def stamp(self, names: list[str]) -> list:
        stats = [os.stat(self.base / n) for n in names]
        return [[n, s.st_size, s.st_mtime_ns] for n, s in zip(names, stats)]

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for name in names:
            try:
                yield name, (self.base / name).read_bytes()
            except OSError as error:
                raise CorruptDatasetFileError(f"cannot read {self.where(name)!r}: {error}") from error


class _Archive:
    """Members of one zip or tar archive, named ``<stem>/<member path>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.prefix = _archive_stem(path.name) + "/"
        self.is_zip = path.name.endswith(".zip")

    def _corrupt(self, error: BaseException) -> CorruptDatasetFileError:
        return CorruptDatasetFileError(
            f"cannot read the archive {str(self.path)!r}: {error}; is it complete? "
            "Download it again or unpack it next to it"
        )

    def names(self) -> list[str]:
        try:
            if self.is_zip:
                with zipfile.ZipFile(self.path) as archive:
                    inner = [i.filename for i in archive.infolist() if not i.is_dir()]
            else:
                with tarfile.open(self.path) as archive:
                    inner = [m.name for m in archive.getmembers() if m.isfile()]
        except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, zlib.error) as error:
            raise self._corrupt(error) from error
        return [self.prefix + n for n in inner]

    def where(self, name: str) -> str:
        return f"{self.path}:{name[len(self.prefix):]}"

    def stamp(self, names: list[str]) -> list:
        stat = os.stat(self.path)
        return [[self.path.name, stat.st_size, stat.st_mtime_ns, len(names)]]

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """Members in the archive's own order (a tar is read once, front to back)."""
        wanted = {n[len(self.prefix):] for n in names}
        try:
            if self.is_zip:
                with zipfile.ZipFile(self.path) as archive:
                    for inner in sorted(wanted):
                        yield self.prefix + inner, archive.read(inner)
                return
            with tarfile.open(self.path, mode="r|*") as archive:
                for member in archive:
                    if member.isfile() and member.name in wanted:
                        yield self.prefix + member.name, archive.extractfile(member).read()
        except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, zlib.error) as error:
            raise self._corrupt(error) from error


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split: ``keys`` (sorted, one per sample), ``labels [N]`` int64, and where
    each key is read from."""

    keys: list[str]
    labels: np.ndarray
    sources: list  # per key: the _Folder or _Archive holding it
    names: list[str]  # per key: its name in that source

    def __len__(self) -> int:
        return len(self.keys)

    def stamp(self) -> str:
        """A hash of the files' names, sizes and modification times (the cache key's part for the
        source data)."""
        digest = hashlib.sha256()
        for source in dict.fromkeys(self.sources):
            names = list(dict.fromkeys(n for s, n in zip(self.sources, self.names) if s is source))
            digest.update(repr(source.stamp(names)).encode())
        digest.update(repr(self.keys).encode())
        return digest.hexdigest()[:16]

    def read(self) -> Iterator[tuple[int, str, bytes]]:
        """``(index, where, data)`` of every sample, each source read once in its own order."""
        index = {(id(s), n): i for i, (s, n) in enumerate(zip(self.sources, self.names))}
        for source in dict.fromkeys(self.sources):
            names = [n for s, n in zip(self.sources, self.names) if s is source]
            for name, data in source.read(names):
                yield index[(id(source), name)], source.where(name), data

    def where(self, i: int) -> str:
        return self.sources[i].where(self.names[i])

    def local_path(self, i: int) -> Optional[Path]:
        """The file of sample ``i`` on disk, or ``None`` if it is inside an archive."""
        source = self.sources[i]
        return source.base / self.names[i] if isinstance(source, _Folder) else None

    def repeat(self, labels: np.ndarray) -> "SplitFiles":
        """Samples that all live in this split's one file (HDF5 sets): ``key#index`` each."""
        n = len(labels)
        return SplitFiles([f"{self.keys[0]}#{i}" for i in range(n)], np.asarray(labels, np.int64),
                          [self.sources[0]] * n, [self.names[0]] * n)


class DatasetFiles:
    """The members of a dataset folder and its archives (see the module docstring).

    folder: the dataset's folder (``ROOT/<name as tonic lays it out>``); it must exist, else
    ``DatasetNotFoundError`` with ``missing_message``.
    """

    def __init__(self, folder: Path, missing_message: str) -> None:
        if not folder.exists():
            raise DatasetNotFoundError(missing_message)
        if not folder.is_dir():
            raise DatasetRootError(f"{str(folder)!r} is a file, expected the dataset's folder")
        if not os.access(folder, os.R_OK | os.X_OK):
            raise DatasetRootError(f"cannot read the directory {str(folder)!r} (permission denied)")
        self.folder = folder
        self.missing_message = missing_message
        self.members: list[tuple[object, str]] = []
        plain = _Folder(folder)
        self.members += [(plain, n) for n in sorted(plain.names())]
        for archive_path in sorted(folder.iterdir()):
            if archive_path.is_file() and _archive_stem(archive_path.name) is not None:
                archive = _Archive(archive_path)
                self.members += [(archive, n) for n in sorted(archive.names())]

    def split(self, pattern: str, labels: dict[str, int]) -> SplitFiles:
        """The samples whose name matches ``pattern`` (searched, anchored at a path component and
        at the end) with group ``label`` one of ``labels``' keys. A sample found both unpacked and
        in an archive is read from the folder."""
        regex = re.compile(rf"(?:^|/)({pattern})$")
        chosen: dict[str, tuple[object, str, int]] = {}
        for source, name in self.members:
            if _is_hidden(name):
                continue
            match = regex.search(name)
            if match is None or match.group("label") not in labels:
                continue
            key = match.group(1)
            chosen.setdefault(key, (source, name, labels[match.group("label")]))
        keys = sorted(chosen)
        return SplitFiles(
            keys=keys,
            labels=np.array([chosen[k][2] for k in keys], dtype=np.int64),
            sources=[chosen[k][0] for k in keys],
            names=[chosen[k][1] for k in keys],
        )

    def describe_contents(self, limit: int = 3) -> str:
        """A few of the names found, for a message about a folder holding something else."""
        names = [n for _, n in self.members]
        if not names:
            return "it is empty"
        shown = ", ".join(repr(n) for n in names[:limit])
        return f"it holds {len(names)} files ({shown}{', ...' if len(names) > limit else ''})"
