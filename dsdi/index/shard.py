"""The shard file of one ``dsdi rank`` process: an append-only log of the clips it finished (see ``dsdi.index.store``).

Each record is ``[magic "DSS1", u32 payload bytes, u32 CRC-32 of payload]`` then the payload ``[u32 header bytes,
JSON header, scores bytes]``; one ``write`` per record, so a killed process leaves at most one torn record at
the end, which readers ignore.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

SHARD_MAGIC = b"DSS1"
_RECORD_HEAD = struct.Struct("<4sII")
_META_HEAD = struct.Struct("<I")


def shard_record(meta: dict, blobs: bytes = b"") -> bytes:
    """One record: the JSON header ``meta`` and the scores bytes ``blobs``, framed and checksummed."""
    head = json.dumps(meta, separators=(",", ":")).encode()
    payload = _META_HEAD.pack(len(head)) + head + blobs
    return _RECORD_HEAD.pack(SHARD_MAGIC, len(payload), zlib.crc32(payload)) + payload


def read_shard(path: str | Path) -> Iterator[tuple[dict, bytes]]:
    """The (header, scores bytes) records of a shard file, in order, up to the first torn or damaged record (a
    process killed while writing it); the end offset of the valid part is the iterator's return value."""
    valid = 0
    with open(path, "rb") as handle:
        while True:
            head = handle.read(_RECORD_HEAD.size)
            if len(head) < _RECORD_HEAD.size:
                break
            magic, size, crc = _RECORD_HEAD.unpack(head)
            payload = handle.read(size) if magic == SHARD_MAGIC else b""
            if magic != SHARD_MAGIC or len(payload) < size or zlib.crc32(payload) != crc:
                break
            (head_bytes,) = _META_HEAD.unpack_from(payload)
            meta = json.loads(payload[_META_HEAD.size:_META_HEAD.size + head_bytes])
            valid += _RECORD_HEAD.size + size
            yield meta, payload[_META_HEAD.size + head_bytes:]
    return valid


def valid_shard_length(path: Path) -> int:
    """Bytes of the valid records at the start of a shard file (where the next record is appended)."""
    records = read_shard(path)
    while True:
        try:
            next(records)
        except StopIteration as end:
            return end.value
