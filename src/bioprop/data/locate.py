"""Where a data set's files are looked for, where downloads go, and the error when neither works.

Search order for a data set NAME (the first folder holding a complete set of files wins; files
are never combined across folders, so a train file from one copy never meets a test file from
another):

1. when data_dir is given: data_dir/NAME/, then any layout-specific subfolders (e.g.
   torchvision's data_dir/MNIST/raw/), then data_dir itself -- and nothing else. A folder the
   user names is the folder read: when it lacks the files, or does not exist, the error says
   what is missing there (and whether a system or cached copy exists, to be used by leaving
   data_dir out) instead of quietly reading another copy. A folder among these that holds some
   of the files but not all ends the search, for the same reason. With download=True the
   missing files are fetched into data_dir/NAME/ (created if need be).
2. otherwise: system folders for the data set (Debian's /usr/share/datasets/fashion-mnist/),
3. then the cache folder CACHE_ROOT/NAME/, where CACHE_ROOT is the cache_dir argument, else
   $BIOPROP_DATA_DIR, else ~/.cache/bioprop. Downloads go here. Each data set gets its own
   subfolder because MNIST and Fashion-MNIST use identical file names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar, Union

from ..errors import DataUnavailableError
from .download import DownloadFailed, RemoteFile, download_verified

CACHE_ENV_VAR = "BIOPROP_DATA_DIR"
DEFAULT_CACHE_ROOT = "~/.cache/bioprop"

Found = TypeVar("Found")
PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class NotHere:
    """A folder without a complete set of files; `note` says what it had and lacked, for the
    error; `partial`: it holds some of the files (so a named folder that is this ends the search)."""

    note: str = ""
    partial: bool = False


@dataclass(frozen=True)
class Search:
    """Where to look for one data set, and where a download goes (see the module docstring)."""

    folders: tuple[Path, ...]  # looked in, in this order
    download_to: Path  # where download=True puts the missing files
    data_dir: Path | None = None  # the folder the user named, if any
    not_searched: tuple[Path, ...] = ()  # with data_dir: the system and cache folders it replaces


def cache_folder(name: str, cache_dir: PathLike | None = None) -> Path:
    root = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_ROOT
    return Path(root).expanduser() / name


def plan_search(
    name: str,
    data_dir: PathLike | None,
    cache_dir: PathLike | None,
    *,
    data_dir_subfolders: Sequence[str] = (),
    system_folders: Sequence[PathLike] = (),
) -> Search:
    """The folders to look in, in order, without duplicates, and where downloads go."""
    cache = cache_folder(name, cache_dir)
    elsewhere = _unique([*(Path(folder) for folder in system_folders), cache])
    if data_dir is None:
        return Search(folders=elsewhere, download_to=cache)
    root = Path(data_dir).expanduser()
    named = _unique([root / name, *(root / subfolder for subfolder in data_dir_subfolders), root])
    return Search(folders=named, download_to=root / name, data_dir=root,
                  not_searched=tuple(folder for folder in elsewhere if folder not in named))


def _unique(folders: Sequence[Path]) -> tuple[Path, ...]:
    unique: list[Path] = []
    for folder in folders:
        if folder not in unique:
            unique.append(folder)
    return tuple(unique)


def resolve_file_set(folder: Path, required: Sequence[Sequence[str]]) -> dict[str, Path] | NotHere:
    """Find one file per entry of `required` in `folder`.

    Each entry lists acceptable names for one file, preferred first (e.g. the .gz and the
    uncompressed name). Returns {preferred name: path}, or NotHere saying what is missing.
    """
    found: dict[str, Path] = {}
    missing: list[str] = []
    for alternatives in required:
        path = next((folder / option for option in alternatives if (folder / option).is_file()), None)
        if path is None:
            missing.append(alternatives[0])
        else:
            found[alternatives[0]] = path
    if not missing:
        return found
    if not found:
        return NotHere()
    return NotHere(f"has {', '.join(path.name for path in found.values())} but lacks {', '.join(missing)}", partial=True)


def locate_or_download(
    name: str,
    *,
    search: Search,
    resolve: Callable[[Path], Found | NotHere],
    needed: str,
    remote_files: Sequence[RemoteFile],
    download: bool,
    other_fixes: Sequence[str] = (),
) -> tuple[Found, Path]:
    """The first folder's resolved files, downloading into `search.download_to` if allowed and needed.

    needed: the exact file names a user must provide, for the error message.
    other_fixes: extra ways to get the files, e.g. a system package to install.
    Raises DataUnavailableError naming the files, the folders searched, and the fixes.
    """
    notes: dict[Path, str] = {}
    for folder in search.folders:
        if folder.is_dir():
            result = resolve(folder)
        else:
            result = NotHere("not a folder" if folder.exists() else "does not exist")
        if not isinstance(result, NotHere):
            return result, folder
        notes[folder] = result.note
        if search.data_dir is not None and result.partial:
            break  # the user's files, incomplete: never read past them to another copy

    target = search.download_to
    file_list = ", ".join(remote.file_name for remote in remote_files)
    searched = "; ".join(f"{folder} ({note})" if note else str(folder) for folder, note in notes.items())
    if not download:
        if search.data_dir is not None:
            raise DataUnavailableError(_not_in_data_dir(name, search, resolve, needed, searched, other_fixes))
        fixes = [
            f"run with --download (download=True) to fetch them into {target}",
            f"or point --data-dir at a folder holding {file_list}",
            *other_fixes,
        ]
        raise DataUnavailableError(
            f"data set {name!r}: files not found. Needed: {needed}. Searched: {searched}. "
            f"To fix: {'; '.join(fixes)}."
        )

    created = _missing_folders(target)
    try:
        for remote in remote_files:
            if not (target / remote.file_name).is_file():
                download_verified(remote, target)
    except DownloadFailed as failure:
        _remove_if_empty(created)
        tried = "; ".join(f"{url} -> {reason}" for url, reason in failure.failures) or "no URL is known"
        checksums = ", ".join(f"{remote.file_name} (MD5 {remote.md5})" for remote in remote_files)
        elsewhere = "" if search.data_dir is not None else f", or point --data-dir at a folder holding {file_list}"
        raise DataUnavailableError(
            f"data set {name!r}: download of {failure.remote.file_name} failed. Tried: {tried}. "
            f"To fix: place {checksums} in {target}{elsewhere}{''.join('; ' + fix for fix in other_fixes)}."
        ) from None
    except OSError as error:
        _remove_if_empty(created)
        where = ("pass a writable --data-dir" if search.data_dir is not None
                 else f"pass a writable cache_dir or set ${CACHE_ENV_VAR}")
        raise DataUnavailableError(
            f"data set {name!r}: cannot write downloads to {target} ({error}); {where}"
        ) from None

    result = resolve(target)
    if isinstance(result, NotHere):
        raise DataUnavailableError(
            f"data set {name!r}: downloaded into {target} but the files are still incomplete "
            f"({result.note or 'nothing usable'}); needed: {needed}"
        )
    return result, target


def _not_in_data_dir(name: str, search: Search, resolve: Callable[[Path], object], needed: str,
                     searched: str, other_fixes: Sequence[str]) -> str:
    """The error for a named data_dir without the files: what is missing there, and the copies
    elsewhere that leaving data_dir out would read (checked, so the user knows if one is whole)."""
    root, target = search.data_dir, search.download_to
    if not root.exists():
        problem = f"--data-dir {root} does not exist"
    elif not root.is_dir():
        problem = f"--data-dir {root} is not a folder"
    else:
        problem = f"--data-dir {root} does not hold its files; looked in {searched}"
    complete = [folder for folder in search.not_searched
                if folder.is_dir() and not isinstance(resolve(folder), NotHere)]
    if complete:
        without = f"or leave out --data-dir to read the complete copy in {complete[0]}"
    else:
        without = "or leave out --data-dir to search " + ", ".join(map(str, search.not_searched))
    not_searched = "; ".join(
        f"{folder} (holds a complete copy)" if folder in complete else str(folder) for folder in search.not_searched
    )
    fixes = [
        f"put the files in {target}",
        f"run with --download (download=True) to fetch them into {target}",
        without,
        *other_fixes,
    ]
    return (
        f"data set {name!r}: {problem}. Needed: {needed}. Not searched, because --data-dir names the "
        f"folder to read: {not_searched}. To fix: {'; '.join(fixes)}."
    )


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_if_empty(created_by_us: Sequence[Path]) -> None:
    """Remove the folders a failed download created (deepest first), unless something is in them."""
    for folder in created_by_us:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (an earlier file downloaded fine) or already gone: keep it and its parents
