"""A moving camera: the background drift measured on real frames (the demo's still camera, and a pan made by sliding
a window across the same frames, whose shift is known), and `diffmesh run` on such a pan: a warning, outputs in
the camera frame, no world invented."""

from pathlib import Path

import numpy as np
import pytest

from diffmesh.paths import VIDEOS_DIR
from diffmesh.video.camera_motion import MOVING_DRIFT, MotionProbe, camera_drift
from diffmesh.video.decode import VideoWriter, iter_frames

DEMO = VIDEOS_DIR / "sports2d_demo_walk_jumpingjacks_flip.mp4"
PAN_FRAMES = range(40, 130)          # the woman walks right to left below the box; the window follows her
PAN_WIDTH, PAN_PX = 640, 4           # the window's width and its shift per frame (leftwards)


def _window_x(index: int) -> int:
    return 1280 - PAN_WIDTH - PAN_PX * (index - PAN_FRAMES.start)


def _pan_clip(path: Path) -> Path:
    with VideoWriter(path, 30) as out:
        for frame in iter_frames(DEMO, max_frames=PAN_FRAMES.stop):
            if frame.index in PAN_FRAMES:
                x = _window_x(frame.index)
                out.write(np.ascontiguousarray(frame.rgb[:, x:x + PAN_WIDTH]))
    return path


def test_a_still_camera_does_not_drift_and_a_pan_drifts_by_its_shift():
    still, pan = MotionProbe(), MotionProbe()
    for frame in iter_frames(DEMO, max_frames=PAN_FRAMES.stop):
        still.add(frame.index, frame.time_s, frame.rgb)
        if frame.index in PAN_FRAMES:
            x = _window_x(frame.index)
            pan.add(frame.index, frame.time_s, frame.rgb[:, x:x + PAN_WIDTH])
    assert camera_drift(still.thumbnails(), []) < 0.01                          # measured 0.1 %
    thumbs = pan.thumbnails()
    expected = (_window_x(thumbs.frames[0]) - _window_x(thumbs.frames[-1])) / PAN_WIDTH   # the whole pan: 0.55
    assert camera_drift(thumbs, []) == pytest.approx(expected, rel=0.05)
    assert MOVING_DRIFT < expected / 5


def test_a_video_with_no_texture_gives_no_verdict_and_no_drift():
    probe = MotionProbe()
    for i in range(20):
        probe.add(i, i / 10, np.full((360, 640, 3), 90 + i, np.uint8))            # a blank wall, fading
    assert camera_drift(probe.thumbnails(), []) == 0.0


def test_a_moving_camera_gets_a_warning_and_outputs_in_the_camera_frame(tmp_path, capsys):
    from diffmesh.cli import main
    from diffmesh.result import Result

    clip = _pan_clip(tmp_path / "pan.mp4")
    out = tmp_path / "out"
    assert main(["run", str(clip), "-o", str(out), "--no-render", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: the camera moves" in err and "camera frame" in err
    r = Result.load(out / "result.npz")
    assert r.camera_drift > MOVING_DRIFT and r.world_from_camera is None and r.joints3d_world is None
    assert r.valid.sum() > 60 and np.isfinite(r.joints3d[r.valid]).all()            # the bodies are still there
    assert not (out / "topview.png").exists() and (out / "mesh.glb").exists()
