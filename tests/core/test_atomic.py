from __future__ import annotations

import os
import stat

import pytest

from napari_drunet.core.atomic import atomic_path, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_uses_umask_permissions(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert [f.name for f in tmp_path.iterdir()] == ["a.txt"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "m.json"
    atomic_write_json(p, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash while writing")
    assert p.read_text().count('"v": 1') == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.json"]
