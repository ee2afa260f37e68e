"""dsdi.files: a failed write keeps the old file and leaves no temp file behind."""

import stat

import pytest

from dsdi.files import atomic_output, write_text_atomic


def test_success_replaces_the_file_readable_by_all(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    write_text_atomic(path, "old\n")
    write_text_atomic(path, "new\n")
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_failure_keeps_the_old_file_and_removes_the_temp(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
