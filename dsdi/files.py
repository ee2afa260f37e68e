"""Low-level file access shared by the modules that own a format.

Atomic output: every file dsdi writes appears whole or not at all. A kill (or an exception) mid-write never
leaves half a file, and a failed run keeps the previous one. ``read_torch_file``: the one place a
``torch.save``d file is read (checkpoints, ``--weights``), refusing anything but plain tensors and containers.
"""

import os
import tempfile
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


def _first_line(error: BaseException) -> str:
    """The gist of a torch.load error on one short line: weights_only refusals name the refused global (their
    first line is advice), other errors keep their first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    refusal = next((line for line in lines if "Unsupported global" in line or "WeightsUnpickler error" in line), None)
    reason = refusal.removeprefix("WeightsUnpickler error:").strip() if refusal else lines[0]
    return reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 3] + "..."


def read_torch_file(path: str | Path, expected: str) -> Any:
    """What ``torch.save`` wrote to ``path``, tensors on the CPU, read with ``weights_only=True`` (tensors, numbers,
    strings and containers only; no code runs). A missing, truncated or corrupt file, or one holding other objects,
    raises InputError naming the file on one line; ``expected`` ("a dsdi checkpoint"...) says what belongs there."""
    import torch  # here: most users of this module never read a torch file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found; expected {expected}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to unpickle means "not such a file"
        raise InputError(f"{path}: not {expected} ({_first_line(error)}); check the path, or save the file "
                         "again") from None
