"""2D keypoints from MediaPipe Pose (the legacy `solutions.pose` API, whose full model ships inside
`mediapipe==0.10.21` and runs offline; the Tasks API and the lite/heavy models need a download).

MediaPipe follows one person: its detector picks the most confident person when it has no track, then the
landmark model tracks that person's region from frame to frame and re-detects only when tracking fails. So the
person followed is the one found first (usually the largest, most frontal one); after a loss it may switch
to someone else. `presence.py` decides from the evidence whether a returned pose is a person, and splits the
track where it jumps to another person.
"""

import os
from dataclasses import dataclass

import numpy as np

from ..keypoints import NUM_MP_LANDMARKS
from ..quiet import native_stderr_silenced


@dataclass
class PoseTrack:
    """MediaPipe's output for T frames (NaN where it returned nothing).

    landmarks: (T, 33, 2) pixels; visibility: (T, 33) in [0, 1]; world: (T, 33, 3) MediaPipe's own metric 3D
    landmarks (metres, hip-centred, y down); returned: (T,) bool, a pose was returned.
    """

    landmarks: np.ndarray
    visibility: np.ndarray
    world: np.ndarray
    returned: np.ndarray


class PoseEstimator:
    """MediaPipe Pose (full model) in video mode: call `process(rgb)` on consecutive frames, then `track()`."""

    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        # Imported here: mediapipe takes ~1 s to import and only the video pipeline needs it.
        os.environ.setdefault("GLOG_minloglevel", "2")
        with native_stderr_silenced():
            import mediapipe as mp

            self._pose = mp.solutions.pose.Pose(
                static_image_mode=False, model_complexity=1, smooth_landmarks=True, enable_segmentation=False,
                min_detection_confidence=min_detection_confidence, min_tracking_confidence=min_tracking_confidence)
        self._landmarks, self._visibility, self._world = [], [], []
        self._frames_seen = 0

    def process(self, rgb: np.ndarray) -> bool:
        """One frame (H, W, 3) uint8 RGB; returns whether MediaPipe returned a pose."""
        h, w = rgb.shape[:2]
        if self._frames_seen < 2:               # the graph logs its set-up on the first frames
            with native_stderr_silenced():
                result = self._pose.process(rgb)
        else:
            result = self._pose.process(rgb)
        self._frames_seen += 1
        if result.pose_landmarks is None:
            self._landmarks.append(np.full((NUM_MP_LANDMARKS, 2), np.nan, np.float32))
            self._visibility.append(np.zeros(NUM_MP_LANDMARKS, np.float32))
            self._world.append(np.full((NUM_MP_LANDMARKS, 3), np.nan, np.float32))
            return False
        lm = result.pose_landmarks.landmark
        self._landmarks.append(np.array([(p.x * w, p.y * h) for p in lm], np.float32))
        self._visibility.append(np.array([p.visibility for p in lm], np.float32))
        self._world.append(np.array([(p.x, p.y, p.z) for p in result.pose_world_landmarks.landmark], np.float32))
        return True

    def track(self) -> PoseTrack:
        landmarks = np.stack(self._landmarks) if self._landmarks else np.zeros((0, NUM_MP_LANDMARKS, 2), np.float32)
        visibility = np.stack(self._visibility) if self._visibility else np.zeros((0, NUM_MP_LANDMARKS), np.float32)
        world = np.stack(self._world) if self._world else np.zeros((0, NUM_MP_LANDMARKS, 3), np.float32)
        return PoseTrack(landmarks, visibility, world, ~np.isnan(landmarks[:, 0, 0]))

    def close(self) -> None:
        self._pose.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def track_frames(video: str, first: int = 0, stop: int | None = None, progress: bool = False,
                 total: int | None = None, probe=None) -> tuple[PoseTrack, np.ndarray]:
    """MediaPipe on frames [first, stop) of a video (to the end when stop is None): the pose track and the
    frames' timestamps (seconds); `probe` (a `camera_motion.MotionProbe`) sees the frames too. Module-level and
    light to import, so a worker process can run it."""
    from tqdm import tqdm

    from .decode import iter_frames

    times = []
    with PoseEstimator() as estimator:
        frames = iter_frames(video, max_frames=stop, first=first)
        for frame in tqdm(frames, total=total, desc="keypoints", unit="frame", disable=not progress, leave=False):
            estimator.process(frame.rgb)
            times.append(frame.time_s)
            if probe is not None:
                probe.add(frame.index, frame.time_s, frame.rgb)
        track = estimator.track()
    return track, np.asarray(times, np.float64)


def concatenate_tracks(parts: list[PoseTrack]) -> PoseTrack:
    return PoseTrack(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                       ("landmarks", "visibility", "world", "returned")))


def track_frames_to_file(video: str, first: int, out: str) -> None:
    """`track_frames(video, first)` written to the npz `out` (the keypoint worker's job, `detect.worker_main`),
    with the camera-motion thumbnails of its frames."""
    from .camera_motion import MotionProbe

    probe = MotionProbe()
    track, times = track_frames(video, first, probe=probe)
    np.savez(out, times=times, **probe.thumbnails().arrays(),
             **{k: getattr(track, k) for k in ("landmarks", "visibility", "world", "returned")})


def read_track_file(path):
    """What `track_frames_to_file` wrote: the track, the timestamps and the thumbnails."""
    from .camera_motion import Thumbnails

    with np.load(path) as f:
        return (PoseTrack(f["landmarks"], f["visibility"], f["world"], f["returned"]), f["times"],
                Thumbnails.from_arrays(f))
