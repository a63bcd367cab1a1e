"""Two processes (or two Project objects) on one project folder keep each other's work.

Before the lock each ``Project`` wrote back its whole in-memory manifest: the second writer
dropped the first one's cases, corrections and versions, and both could allocate ``v002``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rel_helpers import REPO, save_tiny  # noqa: E402

from napari_drunet.core.correction.project import Project  # noqa: E402
from napari_drunet.core.errors import DataError  # noqa: E402
from napari_drunet.core.models.model import load_model  # noqa: E402

N = 6

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from napari_drunet.core.models.model import load_model
    from napari_drunet.core.correction.project import Project

    folder, tag = Path(sys.argv[1]), sys.argv[2]
    model = load_model(folder.parent / "tiny.safetensors", "cpu")
    p = Project.open(folder)            # both open before either writes
    (folder.parent / f"ready-{tag}").touch()
    while not (folder.parent / "go").exists():
        time.sleep(0.01)
    for i in range(%d):
        p.add_case(f"{tag}{i}", np.zeros((1, 8, 8)), np.zeros((8, 8), int))
        mask = np.zeros((8, 8), int)
        mask[: i + 1, 0] = 1
        p.save_correction(f"{tag}{i}", mask)
        p.mark_reviewed("shared", [i if tag == "a" else 7 - i])
        if i %% 3 == 2:
            vid = p.versions.add(model, source=tag)
            print("version", vid, flush=True)
    p.set_setting(f"done-{tag}", True)
""") % N


def _start(folder: Path, tag: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", WORKER, str(folder), tag], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_keep_each_others_cases_and_versions(tmp_path):
    save_tiny(tmp_path / "tiny.safetensors")
    folder = tmp_path / "proj"
    p = Project.create(folder)
    p.add_case("shared", np.zeros((1, 8, 8)), np.zeros((8, 8), int))
    procs = {tag: _start(folder, tag) for tag in "ab"}
    deadline = time.time() + 120
    while not all((tmp_path / f"ready-{t}").exists() for t in procs):
        assert time.time() < deadline, [pr.poll() for pr in procs.values()]
        assert all(pr.poll() is None for pr in procs.values()), \
            [pr.stderr.read() for pr in procs.values() if pr.poll() is not None]
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outs = {t: pr.communicate(timeout=180) for t, pr in procs.items()}
    for t, pr in procs.items():
        assert pr.returncode == 0, outs[t][1][-3000:]
    q = Project.open(folder)
    assert sorted(q.cases()) == sorted(["shared", *(f"{t}{i}" for t in "ab" for i in range(N))])
    for t in "ab":
        for i in range(N):
            assert q.load_case(f"{t}{i}").correction[:, 0].sum() == i + 1
        assert q.get_setting(f"done-{t}") is True
    assert q.case_meta("shared")["reviewed_slices"] == list(range(8))
    printed = [ln.split()[1] for out, _ in outs.values() for ln in out.splitlines()]
    ids = [v["id"] for v in q.versions.entries()]
    assert sorted(printed) == sorted(ids) == [f"v{i:03d}" for i in range(1, 5)]
    assert len(set(ids)) == len(ids)
    assert sorted(v["source"] for v in q.versions.entries()) == ["a", "a", "b", "b"]
    for v in ids:  # every recorded version file is the one its writer saved, and loads
        load_model(q.versions.path(v), "cpu")


def test_two_objects_in_one_process_keep_each_others_changes(tmp_path):
    model = load_model(save_tiny(tmp_path / "tiny.safetensors"), "cpu")
    folder = tmp_path / "proj"
    Project.create(folder)
    first, second = Project.open(folder), Project.open(folder)
    first.add_case("x", np.zeros((1, 8, 8)), np.zeros((8, 8), int))
    second.add_case("y", np.zeros((1, 8, 8)), np.zeros((8, 8), int))
    assert first.versions.add(model) == "v001"
    assert second.versions.add(model) == "v002"
    first.set_setting("k", 1)
    third = Project.open(folder)
    assert third.cases() == ["x", "y"]
    assert [v["id"] for v in third.versions.entries()] == ["v001", "v002"]
    assert third.get_setting("k") == 1


def test_busy_project_gives_a_clear_message(tmp_path):
    from napari_drunet.core.atomic import SharedLock

    folder = tmp_path / "proj"
    Project.create(folder)
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(30)\n")
    if os.name == "nt":
        pytest.skip("the holder script uses fcntl")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder / ".project.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert Project.open(folder).cases() == []  # reading needs no lock
        with pytest.raises(DataError, match="busy in another window or process"):
            with SharedLock(folder / ".project.lock", timeout=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    with SharedLock(folder / ".project.lock", timeout=0.3):  # free again once the holder died
        pass
