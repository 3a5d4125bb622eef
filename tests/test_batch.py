"""`diffmesh batch` on real short clips: one folder per video named from its path, a manifest, a failing video that
does not stop the others, and a rerun that skips what is finished (`diffmesh/batch.py`)."""

import json

import numpy as np
import pytest

from diffmesh.batch import MANIFEST_NAME, find_jobs, worker_shares
from diffmesh.cli import main
from diffmesh.errors import DiffMeshError
from test_run import WALK, cut, need


def _manifest(out):
    lines = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
    return lines[0], {r["output"]: r for r in lines[1:]}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two folders holding a clip of the same name, a second format beside one, and a text file named .mp4."""
    root = tmp_path_factory.mktemp("videos")
    (root / "a").mkdir()
    (root / "b" / "deep").mkdir(parents=True)
    cut(need(WALK), root / "a" / "clip.mp4", range(90, 106))
    cut(need(WALK), root / "b" / "deep" / "clip.mp4", range(120, 136))
    (root / "a" / "clip.mov").write_bytes((root / "a" / "clip.mp4").read_bytes())
    (root / "b" / "broken.mp4").write_text("not a video")
    (root / "b" / "notes.txt").write_text("not a video, not picked")
    return root


def test_outputs_are_named_from_the_path_so_no_two_videos_collide(inputs, tmp_path):
    names = {j.name for j in find_jobs([str(inputs)])}
    assert names == {"a/clip_mp4", "a/clip_mov", "b/deep/clip", "b/broken"}
    listed = tmp_path / "list.txt"
    listed.write_text(f"# two of them\n{inputs / 'a' / 'clip.mp4'}\n\n{inputs / 'b'}\n")
    assert {j.name for j in find_jobs([], str(listed))} == {"a/clip", "b/deep/clip", "b/broken"}
    assert [j.name for j in find_jobs([str(inputs / "b" / "**" / "*.mp4")])] == ["broken", "deep/clip"]
    with pytest.raises(DiffMeshError, match="no video files"):
        find_jobs([str(tmp_path)])
    with pytest.raises(DiffMeshError, match="neither a file"):
        find_jobs([str(tmp_path / "nowhere")])


def test_worker_shares_never_oversubscribe_the_cores():
    assert worker_shares(1, 2) == (2, None) and worker_shares(2, 2) == (1, 1) and worker_shares(4, 2) == (1, 1)
    assert worker_shares(2, 16) == (8, None)
    for workers in range(1, 9):
        for cores in range(1, 17):
            threads, keypoints = worker_shares(workers, cores)
            # None: video/detect.py's own choice, at most two MediaPipe processes
            assert workers * threads <= max(cores, workers) and (keypoints or 2) <= threads


def test_a_worker_loads_the_model_once_and_again_when_the_checkpoint_changes(tmp_path):
    import os
    import shutil

    from diffmesh.paths import DEFAULT_CHECKPOINT
    from diffmesh.pipeline import RunSettings, load_run_parts

    ckpt = tmp_path / "model.pt"
    shutil.copyfile(DEFAULT_CHECKPOINT, ckpt)
    first = load_run_parts(RunSettings(checkpoint=str(ckpt)))
    again = load_run_parts(RunSettings(checkpoint=str(ckpt), seed=3, render=False))   # other settings: same parts
    assert again[1] is first[1] and again[0] is first[0]
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))          # rewritten in place
    assert load_run_parts(RunSettings(checkpoint=str(ckpt)))[1] is not first[1]
    assert load_run_parts(RunSettings())[3] == str(DEFAULT_CHECKPOINT)


def test_batch_runs_every_video_records_failures_and_resumes(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["-o", str(out), "--no-render", "--export", "npz", "--quiet"]
    assert main(["batch", str(inputs), "--workers", "2", *common]) == 2
    err = capsys.readouterr()
    assert "1 of 4 videos failed" in err.err and len(err.err.strip().splitlines()) == 1
    head, records = _manifest(out)
    assert head["manifest"] == "diffmesh-batch" and set(records) == {"a/clip_mp4", "a/clip_mov", "b/deep/clip",
                                                                    "b/broken"}
    assert records["b/broken"]["status"] == "failed" and records["b/broken"]["error"]
    for name in ("a/clip_mp4", "a/clip_mov", "b/deep/clip"):
        r = records[name]
        assert r["status"] == "done" and r["frames"] == 16 and r["frames_with_body"] > 8 and r["fps"] > 0
        assert 200 < r["peak_mb"] < 4000                         # the worker's own high-water mark, in MB
        assert sorted(p.name for p in (out / name).iterdir()) == ["result.npz"]
    assert not (out / "b" / "broken").exists()
    # the same video through `run` gives the same result (deterministic with the seed)
    single = tmp_path / "single"
    assert main(["run", str(inputs / "a" / "clip.mp4"), "-o", str(single), "--no-render", "--export", "npz",
                 "--quiet"]) == 0
    b = np.load(single / "result.npz")
    for name in ("a/clip_mp4", "a/clip_mov"):      # the same clip twice: one of them ran on a worker's loaded model
        np.testing.assert_allclose(np.load(out / name / "result.npz")["joints3d"], b["joints3d"], atol=1e-4)
    # a rerun skips the three finished videos, keeps their files and tries the broken one again
    stamp = (out / "a" / "clip_mp4" / "result.npz").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["batch", str(inputs), *common]) == 2
    assert "3 already done" in capsys.readouterr().out
    assert (out / "a" / "clip_mp4" / "result.npz").stat().st_mtime_ns == stamp


def test_batch_bad_inputs_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["batch", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    assert "no video files" in capsys.readouterr().err
    clip = cut(need(WALK), tmp_path / "c.mp4", range(90, 106))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["batch", str(clip), "-o", str(blocker / "out")]) == 2
    assert "choose a writable -o" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / MANIFEST_NAME).write_text(json.dumps({"manifest": "diffmesh-batch", "version": 99}) + "\n")
    assert main(["batch", str(clip), "-o", str(other)]) == 2
    assert "another version" in capsys.readouterr().err
    assert main(["batch", str(clip), "-o", str(tmp_path / "o2"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(monkeypatch):
    """A Ray head on this machine (127.0.0.1, 2 CPUs) in its own temporary folder; afterwards only its own
    processes are stopped (those whose command line names that folder), not any other Ray on the machine. Token
    authentication is off for the head and this test's driver alike: Ray turns it on whenever a token from an
    earlier local instance lies in ~/.ray, and a head and a driver that disagree on it cannot talk."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp = tempfile.mkdtemp(prefix="dmray", dir="/tmp")          # short: Ray's socket paths live under it
    port = _free_port()
    ray = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray), "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--port",
                    str(port), "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                   check=True, capture_output=True, env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"), timeout=180)
    yield f"127.0.0.1:{port}"
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and temp.encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(temp, ignore_errors=True)


def test_batch_on_a_local_ray_instance(ray_head, tmp_path, capsys):
    """`--ray HOST:PORT`: the same jobs as Ray tasks; the same folders and manifest as the local pool, and the
    results equal `diffmesh run`'s."""
    videos = tmp_path / "v"
    videos.mkdir()
    cut(need(WALK), videos / "a.mp4", range(90, 106))
    cut(need(WALK), videos / "b.mp4", range(120, 136))
    out = tmp_path / "out"
    assert main(["batch", str(videos), "-o", str(out), "--ray", ray_head, "--no-render", "--export", "npz",
                 "--quiet"]) == 0
    assert "2 done now" in capsys.readouterr().out
    _, records = _manifest(out)
    assert {n: r["status"] for n, r in records.items()} == {"a": "done", "b": "done"}
    single = tmp_path / "single"
    assert main(["run", str(videos / "b.mp4"), "-o", str(single), "--no-render", "--export", "npz", "--quiet"]) == 0
    np.testing.assert_allclose(np.load(out / "b" / "result.npz")["joints3d"], np.load(single / "result.npz")["joints3d"],
                               atol=1e-4)
    assert main(["batch", str(videos), "-o", str(out), "--ray", ray_head, "--quiet"]) == 0   # resumed: nothing to do
    assert "2 already done" in capsys.readouterr().out


def test_a_ray_address_that_does_not_answer_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    clip = cut(need(WALK), tmp_path / "c.mp4", range(90, 106))
    assert main(["batch", str(clip), "-o", str(tmp_path / "o"), "--ray", f"127.0.0.1:{_free_port()}"]) == 2
    assert "does not answer" in capsys.readouterr().err
    assert main(["batch", str(clip), "-o", str(tmp_path / "o"), "--ray", "nonsense"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
