"""MediaPipe over a whole video, in one process or two: `detect_keypoints` gives the pose track and the frames'
timestamps; the second process (a plain subprocess running `pose.track_frames_to_file`) takes the second half."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DiffMeshError
from .decode import VideoInfo
from .pose import PoseTrack, concatenate_tracks, read_track_file, track_frames


# MediaPipe's pose graph runs on one core, so a second worker process on the second half of a video nearly
# doubles the keypoint rate on 2 cores. The worker needs ~1.5 s to start (Python, PyAV, MediaPipe), worth it
# from a few hundred frames on; it starts cold, so MediaPipe re-detects at the split (presence.py splits the
# track there if it picks someone else).
WORKER_MIN_FRAMES = 150
WORKER_STARTUP_FRAMES = 80          # frames the main process handles while the worker starts
# The worker's program. On Linux it first asks the kernel to send it SIGTERM when its parent dies, so that a run
# killed outright (SIGKILL, out of memory) leaves no MediaPipe process behind; every other ending of the parent
# (error, Ctrl-C, SIGTERM) kills it in `detect_keypoints`.
WORKER_CODE = ("import sys, signal\n"
               "if sys.platform.startswith('linux'):\n"
               "    import ctypes; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
               "from diffmesh.video.pose import track_frames_to_file as run; run(*sys.argv[1:])")


def detect_keypoints(video: str | Path, info: VideoInfo, progress: bool = True, workers: int | None = None,
                     probe=None) -> tuple[PoseTrack, np.ndarray]:
    """MediaPipe on every frame: the pose track (T frames) and the frames' timestamps (T,) in seconds.
    `workers` None: two processes when the machine has two cores or more and the video is long enough. `probe`
    (a `camera_motion.MotionProbe`) gets the thumbnails of every frame, the worker's included."""
    T = info.num_frames or 0
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 and T >= WORKER_MIN_FRAMES else 1
    if workers <= 1 or T < 2:
        return track_frames(str(video), progress=progress, total=T or None, probe=probe)
    split = min(T - 1, (T + WORKER_STARTUP_FRAMES) // 2)
    with tempfile.TemporaryDirectory(prefix="diffmesh-keypoints-") as tmp:
        result, log = Path(tmp) / "second_half.npz", Path(tmp) / "worker.log"
        # A plain subprocess (not multiprocessing): it never re-imports the caller's main module.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                       os.environ.get("PYTHONPATH")])))
        with open(log, "w") as log_file:
            worker = subprocess.Popen([sys.executable, "-c", WORKER_CODE, str(video), str(split), str(result)],
                                      stdout=subprocess.DEVNULL, stderr=log_file, env=env)
        try:
            track_a, times_a = track_frames(str(video), 0, split, progress, total=split, probe=probe)
            worker.wait()
            err = log.read_text(errors="replace")
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        if len(times_a) < split:                     # the video was shorter than its header said
            return track_a, times_a
        if worker.returncode != 0:
            last = [line for line in err.strip().splitlines() if line.strip()][-1:] or ["no message"]
            raise DiffMeshError(f"the keypoint worker failed on the second half of {video}: {last[0][:200]}")
        track_b, times_b, thumbs_b = read_track_file(result)
        if probe is not None:
            probe.extend(thumbs_b)
    return concatenate_tracks([track_a, track_b]), np.concatenate([times_a, times_b])
