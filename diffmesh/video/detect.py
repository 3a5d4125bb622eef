"""MediaPipe over a whole video, in one process or two: `detect_keypoints` gives the single-person pose track,
`detect_people_frames` every person's detections, each with the frames' timestamps; a second process (a plain
subprocess running `worker_main`) takes the second half of the video."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DiffMeshError
from .decode import VideoInfo
from .pose import PoseTrack, concatenate_tracks, read_track_file, track_frames


# MediaPipe's pose graph runs on one core, so a second worker process on the second half of a video nearly
# doubles the keypoint rate on 2 cores. The worker needs ~1.5 s to start (Python, PyAV, MediaPipe), worth it
# from a few hundred frames on; it starts cold, so MediaPipe re-detects at the split (presence.py splits the
# track there if it picks someone else; the people's tracker links the two halves).
WORKER_MIN_FRAMES = 150
# Frames the main process handles while the worker starts: ~1.5 s of the single-person tracker (~20 ms a frame)
# or of the people's landmarker (~60 ms a frame for two people).
WORKER_STARTUP_FRAMES = {"pose": 80, "people": 25}
# The people's worker starts this long before its half and drops those frames: its followers have found everyone
# by the split (a cold start misses a person in a hard pose, e.g. mid-flip, and their track breaks there).
PEOPLE_WARMUP_SECONDS = 0.5
# The worker's program. On Linux it first asks the kernel to send it SIGTERM when its parent dies, so that a run
# killed outright (SIGKILL, out of memory) leaves no MediaPipe process behind; every other ending of the parent
# (error, Ctrl-C, SIGTERM) kills it in `_two_halves`.
WORKER_CODE = ("import sys, signal\n"
               "if sys.platform.startswith('linux'):\n"
               "    import ctypes; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
               "from diffmesh.video.detect import worker_main; worker_main(*sys.argv[1:])")


def worker_main(kind: str, video: str, first: str, out: str, warmup: str = "0") -> None:
    """The worker process's entry point: frames [first, end) of the video, written to the npz `out` with the
    camera-motion thumbnails of its frames; `kind` "pose" (the single-person tracker) or "people" (which starts
    `warmup` frames earlier)."""
    if kind == "pose":
        from .pose import track_frames_to_file

        track_frames_to_file(video, int(first), out)
    else:
        from .multi_pose import people_frames_to_file

        people_frames_to_file(video, int(first), out, int(warmup))


def detect_keypoints(video: str | Path, info: VideoInfo, progress: bool = True, workers: int | None = None,
                     probe=None) -> tuple[PoseTrack, np.ndarray]:
    """MediaPipe's single-person tracker on every frame: the pose track (T frames) and the frames' timestamps
    (T,) in seconds. `workers` None: two processes when the machine has two cores or more and the video is long
    enough. `probe` (a `camera_motion.MotionProbe`) gets the thumbnails of every frame, the worker's included."""
    def first_half(stop):
        return track_frames(str(video), 0, stop, progress, total=stop or info.num_frames or None, probe=probe)
    return _two_halves(video, info, "pose", workers, first_half, read_track_file,
                       lambda a, b: concatenate_tracks([a, b]), probe)


def detect_people_frames(video: str | Path, info: VideoInfo, progress: bool = True, workers: int | None = None,
                         probe=None) -> tuple[list, np.ndarray]:
    """The multi-person landmarker as `diffmesh run` uses it (tiles, people followed:
    `multi_pose.MultiPoseEstimator`) on every frame: one `People` per frame and the timestamps, in one process
    or two like `detect_keypoints`."""
    from .multi_pose import detect_frames, read_people_file

    def first_half(stop):
        return detect_frames(video, tiles=True, follow=True, total=stop or info.num_frames or None,
                             progress=progress, probe=probe, stop=stop)
    return _two_halves(video, info, "people", workers, first_half, read_people_file, lambda a, b: a + b, probe)


def _two_halves(video: str | Path, info: VideoInfo, kind: str, workers: int | None, first_half: Callable,
                read: Callable, join: Callable, probe) -> tuple:
    """`first_half(stop)` in this process (stop None: the whole video) and, with two workers, the rest in a
    worker process (`worker_main(kind, ...)`, its file read back by `read`); the halves joined by `join`."""
    T = info.num_frames or 0
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 and T >= WORKER_MIN_FRAMES else 1
    if workers <= 1 or T < 2:
        return first_half(None)
    warmup = int(round(PEOPLE_WARMUP_SECONDS * info.fps)) if kind == "people" else 0
    split = min(T - 1, (T + WORKER_STARTUP_FRAMES[kind] + warmup) // 2)
    with tempfile.TemporaryDirectory(prefix="diffmesh-keypoints-") as tmp:
        result, log = Path(tmp) / "second_half.npz", Path(tmp) / "worker.log"
        # A plain subprocess (not multiprocessing): it never re-imports the caller's main module.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                       os.environ.get("PYTHONPATH")])))
        with open(log, "w") as log_file:
            worker = subprocess.Popen([sys.executable, "-c", WORKER_CODE, kind, str(video), str(split), str(result),
                                       str(warmup)], stdout=subprocess.DEVNULL, stderr=log_file, env=env)
        try:
            part_a, times_a = first_half(split)
            worker.wait()
            err = log.read_text(errors="replace")
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        if len(times_a) < split:                     # the video was shorter than its header said
            return part_a, times_a
        if worker.returncode != 0:
            last = [line for line in err.strip().splitlines() if line.strip()][-1:] or ["no message"]
            raise DiffMeshError(f"the keypoint worker failed on the second half of {video}: {last[0][:200]}")
        part_b, times_b, thumbs_b = read(result)
        if probe is not None:
            probe.extend(thumbs_b)
    return join(part_a, part_b), np.concatenate([times_a, times_b])
