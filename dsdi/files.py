"""Atomic file output: every file dsdi writes appears whole or not at all.

A kill (or an exception) mid-write never leaves half a file, and a failed run keeps the previous one.
"""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
