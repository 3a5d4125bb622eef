"""Output folders that appear whole or not at all, also when two runs race for one folder (`outdir.py`)."""

import subprocess
import sys

import pytest

from diffmesh.errors import DiffMeshError
from diffmesh.outdir import outdir_lock, staged_outdir
from test_run import WALK, cut, need


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_folder_made_while_the_run_worked_is_kept_without_force(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DiffMeshError, match="created by another run while this one worked"):
        with staged_outdir(out, force=False) as staging:
            (staging / "result.npz").write_text("ours")
            out.mkdir()                                           # another program's folder appears meanwhile
            (out / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"] and _hidden(tmp_path) == []
    with staged_outdir(out, force=True) as staging:               # --force replaces it, whole
        (staging / "result.npz").write_text("ours")
    assert sorted(p.name for p in out.iterdir()) == ["result.npz"] and _hidden(tmp_path) == []


def test_an_error_inside_leaves_nothing_and_the_lock_is_free_again(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with staged_outdir(out, force=False) as staging:
            (staging / "half.npz").write_text("half")
            raise KeyboardInterrupt
    assert not out.exists() and _hidden(tmp_path) == []
    with outdir_lock(out):                                        # released: can be taken again at once
        with pytest.raises(DiffMeshError, match="another run is writing"):
            with outdir_lock(out):
                pass


def test_a_run_into_a_folder_another_run_is_writing_stops_at_once(tmp_path):
    clip = cut(need(WALK), tmp_path / "walk.mp4", range(90, 106))
    out = tmp_path / "out"
    with outdir_lock(out):                                        # what a running `diffmesh run -o out` holds
        r = subprocess.run([sys.executable, "-m", "diffmesh.cli", "run", str(clip), "-o", str(out), "--force",
                            "--no-render", "--export", "npz", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2 and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "another run is writing" in lines[0], r.stderr[-2000:]


def test_two_runs_racing_into_one_folder_one_wins_the_other_says_so(tmp_path):
    """Two real `diffmesh run` processes started together into one -o: exactly one keeps its output and reports
    it, the other exits non-zero with one line and reports no file."""
    clip = cut(need(WALK), tmp_path / "walk.mp4", range(90, 106))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "diffmesh.cli", "run", str(clip), "-o", str(out), "--no-render", "--export", "npz",
           "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], [r[2][-1000:] for r in results]
    winner, loser = sorted(results, key=lambda r: r[0])
    assert "result.npz" in winner[1] and "result.npz" not in loser[1]
    lines = loser[2].strip().splitlines()
    assert len(lines) == 1 and ("another run is writing" in lines[0] or "already exists" in lines[0])
    assert sorted(p.name for p in out.iterdir()) == ["result.npz"] and _hidden(tmp_path) == []
