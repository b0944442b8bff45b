"""Checksum-verified downloads that never leave a half-written file behind.

Each file is streamed into a hidden temporary file in the destination folder while its MD5 is
computed; only a file whose MD5 matches the published one is renamed to its real name. The
rename is atomic (same folder, same file system), so a file with the real name is always whole
and verified, whatever interrupts the download. Mirrors are tried in order; a mirror that fails
or serves a file with the wrong checksum is skipped and its reason recorded.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import BioPropError

#: seconds a single connect or read may stall before a mirror counts as unreachable
DOWNLOAD_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One official file: its name on disk, its published MD5, and the URLs it can come from."""

    file_name: str
    md5: str
    urls: tuple[str, ...]


class DownloadFailed(BioPropError):
    """Every URL of one file failed. `failures` holds (url, reason) pairs, in the order tried."""

    def __init__(self, remote: RemoteFile, failures: list[tuple[str, str]]):
        self.remote = remote
        self.failures = failures
        tried = "; ".join(f"{url}: {reason}" for url, reason in failures)
        super().__init__(f"{remote.file_name}: download failed ({tried})")


class ChecksumMismatch(Exception):
    """The bytes received are not the official file (wrong mirror content, or corrupted in transit)."""


def open_url(url: str, timeout: float):
    """The response stream for `url` (http, https or file). Tests replace this to simulate servers."""
    request = urllib.request.Request(url, headers={"User-Agent": "bioprop"})
    return urllib.request.urlopen(request, timeout=timeout)


def download_verified(remote: RemoteFile, folder: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch `remote` into folder/remote.file_name from the first URL that serves the official bytes.

    Raises DownloadFailed, listing each URL's reason, if none does; nothing is left in `folder`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / remote.file_name
    failures: list[tuple[str, str]] = []
    for url in remote.urls:
        try:
            _fetch_to(url, destination, remote.md5, timeout)
            return destination
        except ChecksumMismatch as mismatch:
            failures.append((url, str(mismatch)))
        except (OSError, http.client.HTTPException, ValueError) as error:
            # OSError covers URLError, HTTPError, timeouts, refused connections and a full disk;
            # HTTPException a connection cut mid-body; ValueError a malformed URL.
            failures.append((url, _describe(error)))
    raise DownloadFailed(remote, failures)


def _fetch_to(url: str, destination: Path, expected_md5: str, timeout: float) -> None:
    partial = tempfile.NamedTemporaryFile(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part", delete=False
    )
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with partial, open_url(url, timeout) as response:
            size = response.headers.get("Content-Length") if response.headers else None
            with tqdm(
                total=int(size) if size and size.isdigit() else None,
                unit="B", unit_scale=True, desc=destination.name, leave=False, disable=None,
            ) as progress:
                while chunk := response.read(CHUNK_BYTES):
                    partial.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
        received_md5 = digest.hexdigest()
        if received_md5 != expected_md5:
            raise ChecksumMismatch(f"checksum mismatch: received MD5 {received_md5}, expected {expected_md5}")
        os.replace(partial.name, destination)
    except BaseException:
        # BaseException, so that Ctrl-C mid-download also removes the partial file.
        Path(partial.name).unlink(missing_ok=True)
        raise


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
