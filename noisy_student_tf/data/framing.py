"""TFRecord framing checked in Python before TensorFlow reads a file.

A TFRecord file is a sequence of frames: 8-byte little-endian length, 4-byte masked CRC-32C of
those 8 bytes, the payload, 4-byte masked CRC-32C of the payload. TensorFlow's reader trusts a
length whose CRC matches and allocates that many bytes before reading them, so a crafted (or
bit-rotted, CRC recomputed) length of a terabyte ends the process with a segmentation fault, no
message and no file name. `walk` follows the frame headers only (12 bytes per record, read in
1 MiB blocks; larger records are stepped over with a seek) and names the first frame that cannot
be right: a header cut short, a header whose CRC does not match, or a length larger than what
the file still holds.
Payload CRCs are left to TensorFlow, which checks them without crashing.

Results are cached per (path, size, mtime), so the check costs one header pass per file and
process (2 s per million small records, 9 s per million 256px JPEGs here; docs/benchmarks.md).
Local files are read with Python's `open`; other file systems (gs://, ...) through tf.io.gfile,
whose buffered reads fetch most of each file on the way (as tf.data would).
"""

import dataclasses
import os
import struct
import threading
from typing import Dict, Iterable, Optional, Tuple

import tensorflow as tf

from noisy_student_tf.errors import UserInputError

HEADER_BYTES = 12  # length (8) + masked CRC of the length (4)
FOOTER_BYTES = 4  # masked CRC of the payload


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses; pure Python, meant for 8-byte headers."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


@dataclasses.dataclass(frozen=True)
class Framing:
    """What the headers of one file say: `records` complete frames before `bad_index` (None
    when the whole file is well framed), and why that frame is bad."""
    path: str
    records: int
    bad_index: Optional[int] = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.bad_index is None

    def __str__(self) -> str:
        if self.ok:
            return f"{self.path}: {self.records} records"
        return f"{self.path} record {self.bad_index}: {self.reason}"


def _open(path: str):
    if "://" in path:
        return tf.io.gfile.GFile(path, "rb")
    return open(path, "rb", buffering=0)


BLOCK_BYTES = 1 << 20  # headers of small records come from one read of a block


def _walk_uncached(path: str, size: int) -> Framing:
    offset, index = 0, 0
    block, block_start = b"", 0
    with _open(path) as f:
        while offset < size:
            remaining = size - offset
            if remaining < HEADER_BYTES:
                return Framing(path, index, index, "truncated record (the file was cut "
                               f"short): {remaining} bytes where a {HEADER_BYTES}-byte record "
                               "header belongs")
            at = offset - block_start
            if at < 0 or at + HEADER_BYTES > len(block):
                f.seek(offset)
                block, block_start, at = f.read(min(BLOCK_BYTES, remaining)), offset, 0
            header = block[at:at + HEADER_BYTES]
            if len(header) < HEADER_BYTES:  # the file shrank while we read it
                return Framing(path, index, index, "truncated record (file changed while "
                               "being read)")
            length, crc = struct.unpack("<QI", header)
            if masked_crc(header[:8]) != crc:
                return Framing(path, index, index, "corrupted record header (length CRC "
                               "mismatch)")
            need = HEADER_BYTES + length + FOOTER_BYTES
            if need > remaining:
                return Framing(path, index, index, "truncated record (the file was cut short, "
                               f"or the length prefix is crafted): the prefix claims {length} "
                               f"bytes, {remaining - HEADER_BYTES} remain in the file")
            offset += need
            index += 1
    return Framing(path, index)


_cache: Dict[Tuple[str, int, int], Framing] = {}
_cache_lock = threading.Lock()


def walk(path: str) -> Framing:
    """The framing of `path` (cached while the file's size and mtime stay the same)."""
    try:
        if "://" in path:
            st = tf.io.gfile.stat(path)
            key = (path, st.length, st.mtime_nsec)
            size = st.length
        else:
            st = os.stat(path)
            key = (path, st.st_size, st.st_mtime_ns)
            size = st.st_size
    except (OSError, tf.errors.OpError) as e:
        raise UserInputError(f"{path}: cannot read ({e})") from None
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    try:
        result = _walk_uncached(path, size)
    except (OSError, tf.errors.OpError) as e:
        raise UserInputError(f"{path}: cannot read ({e})") from None
    with _cache_lock:
        _cache[key] = result
    return result


def require(paths: Iterable[str], limits: Optional[Dict[str, int]] = None) -> int:
    """Checks every file's framing before TensorFlow reads it; returns the record count.

    `limits` (path -> records read from the start of that file, from --skip_corrupt_records)
    allows a bad frame at or after the limit. Otherwise a bad frame raises UserInputError
    naming the file and record index.
    """
    total = 0
    for path in paths:
        framing = walk(path)
        limit = (limits or {}).get(path)
        if not framing.ok and (limit is None or limit > framing.bad_index):
            raise UserInputError(f"bad input data: {framing}")
        total += framing.records if limit is None else min(limit, framing.records)
    return total


def count(path: str, num_replicas: int = 1, replica: int = 0) -> int:
    """Records of a well-framed file with index = replica (mod num_replicas)."""
    n = require([path])
    return len(range(replica, n, num_replicas))


def dataset(paths, buffer_size: Optional[int] = None) -> tf.data.Dataset:
    """tf.data.TFRecordDataset over `paths` (a path or a list), after `require`."""
    files = [paths] if isinstance(paths, (str, bytes)) else list(paths)
    require(files)
    if isinstance(paths, (str, bytes)):
        return tf.data.TFRecordDataset(paths, buffer_size=buffer_size)
    return tf.data.TFRecordDataset(files, buffer_size=buffer_size)
