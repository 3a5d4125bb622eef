"""SIGTERM (how schedulers, containers and Ray cancel work) during a real `diffmesh run`: the run ends with one line
and status 143, and leaves no staging folder, no temporary folder and no child process."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_run import WALK, need


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Linux /proc)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            found.add(k)
            todo.append(k)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class _Stderr:
    """Reads a process's stderr in the background, so the test can wait for a stage's progress bar."""

    def __init__(self, proc):
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc):
        for chunk in iter(lambda: proc.stderr.read1(256), b""):
            self.text += chunk.decode(errors="replace")

    def wait_for(self, word: str, timeout: float = 300) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and word not in self.text:
            time.sleep(0.05)
        return word in self.text

    def join(self):
        self._thread.join(timeout=30)


@contextlib.contextmanager
def _running(cmd: list[str], env: dict | None = None):
    """A `diffmesh` command running in its own process with its stderr read; killed on the way out if a test
    fails before it ends."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = _Stderr(proc)
    try:
        yield proc, err
    finally:
        if proc.poll() is None:
            proc.kill()
        err.join()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stage, extra", [("people", []), ("keypoints", ["--max-people", "1"]), ("render", [])])
def test_sigterm_during_a_stage_leaves_nothing(tmp_path, stage, extra):
    """The default run (everyone: the "people" stage) and the single-person tracker's ("keypoints") alike."""
    video = need(WALK)                                   # 230 frames: long enough for the second keypoint worker
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    out = work / "out"
    cmd = [sys.executable, "-m", "diffmesh.cli", "run", str(video), "-o", str(out)] + extra
    with _running(cmd, dict(os.environ, TMPDIR=str(tmp))) as (proc, err):
        assert err.wait_for(f"{stage}:"), err.text[-2000:]
        time.sleep(0.5)                                  # well inside the stage
        children = _descendants(proc.pid)
        if stage != "render":
            assert children, "the keypoint worker should be running"
        assert any(p.name.startswith(".out.") for p in work.iterdir())     # the staging folder exists now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    lines = [line for line in err.text.replace("\r", "\n").splitlines() if line.startswith("diffmesh:")]
    assert lines == ["diffmesh: terminated (SIGTERM)"], err.text[-2000:]
    time.sleep(0.2)
    assert not [p for p in children if _alive(p)]        # the worker is gone too
    assert sorted(p.name for p in work.iterdir()) == []  # no OUTDIR, no staging folder, no lock file
    assert [p.name for p in tmp.iterdir() if p.name.startswith("diffmesh")] == []   # no keypoint worker folder


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_a_batch_stops_its_workers_and_leaves_no_staging(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    for name in ("a", "b", "c"):
        (videos / f"{name}.mp4").write_bytes(need(WALK).read_bytes())
    cmd = [sys.executable, "-m", "diffmesh.cli", "batch", str(videos), "-o", str(out), "--workers", "2", "--quiet"]
    with _running(cmd) as (proc, err):
        end = time.monotonic() + 300
        while time.monotonic() < end and not (out.is_dir() and any(p.name.startswith(".") and p.is_dir()
                                                                    for p in out.iterdir())):
            time.sleep(0.1)
        children = _descendants(proc.pid)
        assert len(children) >= 2, "two workers should be running"
        proc.send_signal(signal.SIGTERM)             # as the first two videos start; the third is queued
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert "diffmesh: terminated (SIGTERM)" in err.text
    time.sleep(0.5)
    assert not [p for p in children if _alive(p)]                  # workers and their keypoint workers are gone
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []    # no staging folder, no lock
    finished = [p.name for p in out.iterdir() if p.is_dir()]
    assert "c" not in finished and len(finished) < 2, finished      # cancelled: the queued video never ran
