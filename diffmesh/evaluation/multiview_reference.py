"""The 3D reference of a calibrated multi-view recording (the Pose2Sim multi-person demo): MediaPipe in every view,
exactly as `diffmesh run` runs it, the 33 landmarks triangulated across the views with outlier views dropped
(`triangulation.py`), and the 17 Human3.6M joints built from them as the 2D layout builds them (`keypoints.py`:
each joint the mean of its landmarks, e.g. pelvis = mid-hips, head = mid-ears).

MediaPipe follows one person per view, not always the same one: a view that follows someone else disagrees with
the others and is dropped point by point, so the reference is the person most views follow. Cached in the data
cache (`reference_v{REFERENCE_VERSION}.npz`, written atomically); a cache of another version is rebuilt.
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.calibration import CalibratedCamera, demo_multiperson, read_qca
from ..keypoints import mediapipe_to_h36m
from ..metrics import acceleration, moving_average
from ..outdir import write_npz
from ..video.decode import probe_video
from ..video.detect import detect_keypoints
from .triangulation import triangulate

REFERENCE_VERSION = 1


@dataclass
class Reference:
    """joints (T, 17, 3) Human3.6M joints, world metres (z up); landmarks (T, 33, 3); views_used (C, T, 33) bool;
    view_error_px (C,) each view's mean reprojection error where it was kept; pixels (C, T, 33, 2) and
    visibility (C, T, 33) MediaPipe's 2D in each view; fps; camera names."""

    joints: np.ndarray
    landmarks: np.ndarray
    views_used: np.ndarray
    view_error_px: np.ndarray
    pixels: np.ndarray
    visibility: np.ndarray
    fps: float
    cameras: tuple[str, ...]
    folder: Path | None = None          # the recording's folder (videos/, calibration/), when known

    @property
    def camera_models(self) -> list[CalibratedCamera]:
        return read_qca(self.folder / "calibration" / "Calib.qca.txt")

    def jitter_mm(self, window: int = 1) -> float:
        """Mean joint acceleration (mm/frame^2) of the reference itself, the triangulation's own noise floor;
        with `window` > 1, of its centred moving average over that many frames."""
        joints = moving_average(self.joints, window) if window > 1 else self.joints
        return float(np.nanmean(np.linalg.norm(acceleration(joints), axis=-1)) * 1000)


def triangulate_views(cameras: list[CalibratedCamera], pixels: np.ndarray, visibility: np.ndarray,
                      fps: float) -> Reference:
    """MediaPipe's landmarks in C views (C, T, 33, 2) with visibilities (C, T, 33) -> `Reference`."""
    C, T = pixels.shape[:2]
    result = triangulate(cameras, pixels.reshape(C, -1, 2), np.nan_to_num(visibility.reshape(C, -1)))
    landmarks = result.points.reshape(T, 33, 3)
    seen = np.isfinite(landmarks).all(-1)
    joints = mediapipe_to_h36m(landmarks, seen.astype(np.float32))
    joints = np.where(joints[..., 3:] > 0, joints[..., :3], np.nan)             # a joint missing a landmark: NaN
    return Reference(joints.astype(np.float64), landmarks, result.used.reshape(C, T, 33), result.view_error_px(),
                     pixels, visibility, fps, tuple(c.name for c in cameras))


def _save(ref: Reference, path: Path) -> None:
    write_npz(path, version=REFERENCE_VERSION, joints=ref.joints, landmarks=ref.landmarks,
              views_used=ref.views_used, view_error_px=ref.view_error_px, pixels=ref.pixels,
              visibility=ref.visibility, fps=ref.fps, cameras=np.array(ref.cameras))


def _load(path: Path) -> Reference | None:
    try:
        with np.load(path, allow_pickle=False) as d:
            if int(d["version"]) != REFERENCE_VERSION:
                return None
            return Reference(d["joints"], d["landmarks"], d["views_used"], d["view_error_px"], d["pixels"],
                             d["visibility"], float(d["fps"]), tuple(str(c) for c in d["cameras"]))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None                                    # missing, older or damaged: rebuilt


def demo_reference(cache: str | Path | None = None, progress: bool = False) -> Reference:
    """The reference of Pose2Sim's multi-person demo (MediaPipe on the four views, about 20 s on 2 cores the
    first time; cached afterwards)."""
    folder = demo_multiperson(cache)
    path = folder / f"reference_v{REFERENCE_VERSION}.npz"
    ref = _load(path)
    if ref is not None:
        ref.folder = folder
        return ref
    cameras = read_qca(folder / "calibration" / "Calib.qca.txt")
    tracks, fps = [], None
    for cam in cameras:
        video = folder / "videos" / f"{cam.name}.mp4"
        info = probe_video(video)
        tracks.append(detect_keypoints(video, info, progress, workers=1)[0])
        fps = fps or info.fps
    T = min(len(t.visibility) for t in tracks)
    pixels = np.stack([t.landmarks[:T] for t in tracks]).astype(np.float64)
    visibility = np.stack([t.visibility[:T] for t in tracks])
    ref = triangulate_views(cameras, pixels, visibility, fps)
    ref.folder = folder
    _save(ref, path)
    return ref
