"""Reader for the IDX format of the MNIST family (LeCun, Cortes and Burges).

Layout of an IDX file, all integers big-endian:

    bytes 0-1   zero
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions D
    4 * D bytes size of each dimension, uint32
    the rest    the elements in C (row-major) order

So an MNIST image file starts 00 00 08 03 (magic 2051) and a label file 00 00 08 01 (magic 2049).
Files may be gzip-compressed (the official downloads are); we detect that from gzip's own magic
bytes rather than the file name, so a renamed file still reads.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import BioPropError

#: IDX element type code -> big-endian numpy dtype
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

GZIP_MAGIC = b"\x1f\x8b"


def read_file_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if it is gzip; a damaged gzip stream is a BioPropError."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            head = stream.read(2)
        if head == GZIP_MAGIC:
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise BioPropError(
            f"{path}: the gzip stream is truncated or corrupt ({error}); delete the file and "
            f"download it again"
        ) from None
    except OSError as error:
        raise BioPropError(f"{path}: cannot be read ({error})") from None


def parse_idx(content: bytes, origin: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array in native byte order; `origin` names the file in errors."""
    if len(content) < 4:
        raise BioPropError(f"{origin}: only {len(content)} bytes, too short to be an IDX file")
    if content[0] != 0 or content[1] != 0 or content[2] not in IDX_DTYPES or content[3] == 0:
        raise BioPropError(
            f"{origin}: not an IDX file (magic bytes {content[:4].hex(' ')}; expected "
            f"00 00 <type> <dims>, e.g. 00 00 08 03 for images); the file is corrupt or of another format"
        )
    dtype = IDX_DTYPES[content[2]]
    n_dims = content[3]
    header_size = 4 + 4 * n_dims
    if len(content) < header_size:
        raise BioPropError(f"{origin}: truncated IDX header ({len(content)} of {header_size} bytes)")
    shape = tuple(int(size) for size in np.frombuffer(content, dtype=">u4", count=n_dims, offset=4))
    n_elements = int(np.prod(shape, dtype=np.int64))
    expected_size = header_size + n_elements * dtype.itemsize
    if len(content) != expected_size:
        problem = "truncated" if len(content) < expected_size else "has trailing bytes"
        raise BioPropError(
            f"{origin}: IDX file {problem}: header says shape {shape} of {dtype.name} "
            f"({expected_size} bytes) but the file holds {len(content)} bytes; delete it and "
            f"download it again"
        )
    elements = np.frombuffer(content, dtype=dtype, count=n_elements, offset=header_size)
    # A copy: frombuffer's view is read-only, and torch.from_numpy wants a writable array.
    return elements.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not."""
    return parse_idx(read_file_bytes(path), origin=str(path))

