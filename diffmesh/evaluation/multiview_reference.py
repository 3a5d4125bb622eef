"""The 3D reference of a calibrated multi-view recording (the Pose2Sim multi-person demo), one per person:

1. MediaPipe in every view: its multi-person landmarker (`video/multi_pose.py`, up to 4 people) and the
   single-person tracker exactly as `diffmesh run` runs it (`video/detect.py`), whose pose is added where it is
   not one of the former's (`association.add_detection`);
2. the detections grouped into people across views and linked over time (`association.py`);
3. each person's 33 landmarks triangulated from its views with outlier views dropped (`triangulation.py`), and
   the 17 Human3.6M joints built from them as the 2D layout builds them (`keypoints.py`: each joint the mean of its
   landmarks, e.g. pelvis = mid-hips, head = mid-ears).

The people kept are the tracks present in at least `MIN_PRESENCE` of the frames, longest first: in the demo the
woman beside the walkway and the man on it (the person standing at the back is seen by too few views). Cached in
the data cache (`reference_v{REFERENCE_VERSION}.npz`, written atomically); a cache of another version is rebuilt.
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.calibration import CalibratedCamera, demo_multiperson, read_qca
from ..errors import DataError
from ..keypoints import mediapipe_to_h36m
from ..metrics import acceleration, moving_average
from ..outdir import write_npz
from ..video.decode import probe_video
from ..video.detect import detect_keypoints
from ..video.multi_pose import People, detect_people
from .association import Group, add_detection, group_frame, link_tracks

REFERENCE_VERSION = 2
MIN_PRESENCE = 0.5


@dataclass
class Reference:
    """One person: joints (T, 17, 3) Human3.6M joints, world metres (z up), NaN in frames without the person;
    landmarks (T, 33, 3); views_used (C, T, 33) bool; view_error_px (C,) each view's mean reprojection error where
    it was kept; fps; camera names."""

    person: int
    joints: np.ndarray
    landmarks: np.ndarray
    views_used: np.ndarray
    view_error_px: np.ndarray
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


def person_reference(person: int, track: dict[int, Group], T: int, cameras: list[CalibratedCamera],
                     fps: float) -> Reference:
    """One linked track of groups -> its `Reference` over T frames (NaN where the person is not seen)."""
    C = len(cameras)
    landmarks = np.full((T, 33, 3), np.nan)
    used = np.zeros((C, T, 33), bool)
    error = np.full((C, T, 33), np.nan)
    for t, group in track.items():
        landmarks[t], used[:, t], error[:, t] = group.landmarks, group.triangulated.used, group.triangulated.error_px
    seen = np.isfinite(landmarks).all(-1)
    joints = mediapipe_to_h36m(np.nan_to_num(landmarks), seen.astype(np.float32))
    joints = np.where(joints[..., 3:] > 0, joints[..., :3], np.nan)             # a joint missing a landmark: NaN
    kept = np.where(used, error, np.nan).reshape(C, -1)
    view_error = np.array([np.nanmean(e) if np.isfinite(e).any() else np.nan for e in kept])
    return Reference(person, joints.astype(np.float64), landmarks, used, view_error, fps,
                     tuple(c.name for c in cameras))


def references_from_detections(cameras: list[CalibratedCamera], frames: list[list[People]],
                               fps: float) -> list[Reference]:
    """Per frame, each view's detections -> one `Reference` per person present in MIN_PRESENCE of the frames."""
    T = len(frames)
    tracks = link_tracks([group_frame(cameras, views) for views in frames])
    tracks = sorted((t for t in tracks if len(t) >= MIN_PRESENCE * T), key=len, reverse=True)
    return [person_reference(p, track, T, cameras, fps) for p, track in enumerate(tracks)]


_PER_PERSON = ("joints", "landmarks", "views_used", "view_error_px")


def _save(refs: list[Reference], path: Path) -> None:
    write_npz(path, version=REFERENCE_VERSION, fps=refs[0].fps, cameras=np.array(refs[0].cameras),
              **{k: np.stack([getattr(r, k) for r in refs]) for k in _PER_PERSON})


def _load(path: Path) -> list[Reference] | None:
    try:
        with np.load(path, allow_pickle=False) as d:
            if int(d["version"]) != REFERENCE_VERSION:
                return None
            fps, cameras = float(d["fps"]), tuple(str(c) for c in d["cameras"])
            arrays = [d[k] for k in _PER_PERSON]
            return [Reference(p, *(a[p] for a in arrays), fps, cameras) for p in range(len(arrays[0]))]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None                                    # missing, older or damaged: rebuilt


def detect_views(folder: Path, cameras: list[CalibratedCamera], progress: bool) -> tuple[list[list[People]], float]:
    """Every view's detections per frame (both MediaPipe models, see the module docstring) and the frame rate."""
    per_view, fps = [], None
    for cam in cameras:
        video = folder / "videos" / f"{cam.name}.mp4"
        info = probe_video(video)
        single = detect_keypoints(video, info, progress, workers=1)[0]
        many = detect_people(video)
        T = min(len(many), len(single.visibility))
        per_view.append([add_detection(many[t], single.landmarks[t], single.visibility[t]) for t in range(T)])
        fps = fps or info.fps
    T = min(len(v) for v in per_view)
    return [[v[t] for v in per_view] for t in range(T)], fps


def demo_references(cache: str | Path | None = None, progress: bool = False) -> list[Reference]:
    """The references of Pose2Sim's multi-person demo, longest-seen person first (MediaPipe's two models on the four
    views, about 40 s on 2 cores the first time; cached afterwards)."""
    folder = demo_multiperson(cache)
    path = folder / f"reference_v{REFERENCE_VERSION}.npz"
    refs = _load(path)
    if refs is None:
        cameras = read_qca(folder / "calibration" / "Calib.qca.txt")
        frames, fps = detect_views(folder, cameras, progress)
        refs = references_from_detections(cameras, frames, fps)
        if not refs:
            raise DataError(f"nobody was seen by two views in {folder}; the recording or its calibration is wrong")
        _save(refs, path)
    for r in refs:
        r.folder = folder
    return refs
