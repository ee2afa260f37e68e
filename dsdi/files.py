"""Low-level file access shared by the modules that own a format.

Atomic output: every file dsdi writes appears whole or not at all. A kill (or an exception) mid-write never
leaves half a file, and a failed run keeps the previous one. ``read_torch_file``: the one place a
``torch.save``d file is read (checkpoints, ``--weights``), refusing anything but plain tensors and containers.
"""

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsdi.errors import InputError

_REASON_CHARS = 160


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path`` (``os.replace``),
    on an exception it is removed. Parent folders are created; the file is made readable by all (0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8 with '\\n' line ends to ``path``, atomically (see ``atomic_output``)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def _load_failure(error: BaseException) -> str:
    """The gist of a torch.load error, one short sentence: weights_only refusals say what was refused (their
    first lines are advice), other errors keep their first sentence."""
    text = str(error)
    _, refused, detail = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (detail if refused else text).splitlines() if line.strip()]
    reason = lines[0].split(". ")[0] if lines else type(error).__name__
    reason = reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 3] + "..."
    if refused:
        return f"it holds more than tensors, numbers, strings and containers: {reason}"
    return reason


def read_torch_file(path: str | Path, expected: str, mmap: bool = False) -> Any:
    """What ``torch.save`` wrote to ``path``, tensors on the CPU, read with ``weights_only=True`` (tensors, numbers,
    strings and containers only; no code runs); with ``mmap`` the tensors are mapped from the file, not read. A
    missing, truncated or corrupt file, or one holding other objects, raises InputError naming the file on one line;
    ``expected`` ("a dsdi checkpoint"...) says what belongs there."""
    import torch  # here: most users of this module never read a torch file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found; expected {expected}")
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol warning precedes the refusal below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - any failure to unpickle means "not such a file"
        raise InputError(f"{path}: not {expected} ({_load_failure(error)}); check the path, or save the file "
                         "again (state dicts and dsdi checkpoints load safely)") from None


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
