"""Where a data set's files are looked for, where downloads go, and the error when neither works.

Search order for a data set NAME (the first folder holding a complete set of files wins; files
are never combined across folders, so a train file from one copy never meets a test file from
another):

1. data_dir/NAME/, then any layout-specific subfolders (e.g. torchvision's data_dir/MNIST/raw/),
   then data_dir itself -- only when data_dir is given;
2. system folders for the data set (Debian's /usr/share/datasets/fashion-mnist/);
3. the cache folder CACHE_ROOT/NAME/, where CACHE_ROOT is the cache_dir argument, else
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
    """A folder without a complete set of files; `note` says what it had and lacked, for the error."""

    note: str = ""


def cache_folder(name: str, cache_dir: PathLike | None = None) -> Path:
    root = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_ROOT
    return Path(root).expanduser() / name


def search_folders(
    name: str,
    data_dir: PathLike | None,
    cache_dir: PathLike | None,
    *,
    data_dir_subfolders: Sequence[str] = (),
    system_folders: Sequence[PathLike] = (),
) -> list[Path]:
    """The folders to look in, in order, without duplicates."""
    folders: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        folders += [root / name, *(root / subfolder for subfolder in data_dir_subfolders), root]
    folders += [Path(folder) for folder in system_folders]
    folders.append(cache_folder(name, cache_dir))
    unique: list[Path] = []
    for folder in folders:
        if folder not in unique:
            unique.append(folder)
    return unique


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
    return NotHere(f"has {', '.join(path.name for path in found.values())} but lacks {', '.join(missing)}")


def locate_or_download(
    name: str,
    *,
    folders: Sequence[Path],
    resolve: Callable[[Path], Found | NotHere],
    needed: str,
    remote_files: Sequence[RemoteFile],
    cache: Path,
    download: bool,
    other_fixes: Sequence[str] = (),
) -> tuple[Found, Path]:
    """The first folder's resolved files, downloading into `cache` if allowed and needed.

    needed: the exact file names a user must provide, for the error message.
    other_fixes: extra ways to get the files, e.g. a system package to install.
    Raises DataUnavailableError naming the files, the folders searched, and the fixes.
    """
    notes: dict[Path, str] = {}
    for folder in folders:
        if folder.is_dir():
            result = resolve(folder)
        else:
            result = NotHere("not a folder" if folder.exists() else "does not exist")
        if not isinstance(result, NotHere):
            return result, folder
        notes[folder] = result.note

    file_list = ", ".join(remote.file_name for remote in remote_files)
    searched = "; ".join(f"{folder} ({notes[folder]})" if notes[folder] else str(folder) for folder in folders)
    if not download:
        fixes = [
            f"run with --download (download=True) to fetch them into {cache}",
            f"or point --data-dir at a folder holding {file_list}",
            *other_fixes,
        ]
        raise DataUnavailableError(
            f"data set {name!r}: files not found. Needed: {needed}. Searched: {searched}. "
            f"To fix: {'; '.join(fixes)}."
        )

    created_cache = not cache.exists()
    try:
        for remote in remote_files:
            if not (cache / remote.file_name).is_file():
                download_verified(remote, cache)
    except DownloadFailed as failure:
        _remove_if_empty(cache, created_cache)
        tried = "; ".join(f"{url} -> {reason}" for url, reason in failure.failures) or "no URL is known"
        checksums = ", ".join(f"{remote.file_name} (MD5 {remote.md5})" for remote in remote_files)
        raise DataUnavailableError(
            f"data set {name!r}: download of {failure.remote.file_name} failed. Tried: {tried}. "
            f"To fix: place {checksums} in {cache}, or point --data-dir at a folder holding "
            f"{file_list}{''.join('; ' + fix for fix in other_fixes)}."
        ) from None
    except OSError as error:
        raise DataUnavailableError(
            f"data set {name!r}: cannot write downloads to {cache} ({error}); pass a writable "
            f"cache_dir or set ${CACHE_ENV_VAR}"
        ) from None

    result = resolve(cache)
    if isinstance(result, NotHere):
        raise DataUnavailableError(
            f"data set {name!r}: downloaded into {cache} but the files are still incomplete "
            f"({result.note or 'nothing usable'}); needed: {needed}"
        )
    return result, cache


def _remove_if_empty(folder: Path, created_by_us: bool) -> None:
    if created_by_us:
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty (an earlier file downloaded fine) or already gone: keep it
