"""Every person in a video, each as one track: MediaPipe's multi-person landmarker (`multi_pose.py`) on every
frame, its detections linked over time by norfair's tracker.

Linking: norfair keeps a constant-velocity Kalman filter on each track's 33 landmarks, so a detection is compared
with where the person is predicted to be, not where they were. The distance of a detection to a track is the median
distance of the landmarks both see confidently, as a fraction of the person's height in the image (so it means the
same for near and far people); a detection continues the nearest track within `TrackSettings.max_distance`
(norfair matches the closest pairs first), or starts a new one. A track that finds no detection keeps predicting
for `lost_seconds`, so a person hidden for a moment behind another, or missed by the detector, is re-found
under the same identity. Tracks shorter than `min_seconds` are dropped (a passing false detection).

The tracks are then ranked, the most prominent first: by the sum over frames of the person's height in the image
(large and long-visible people first), and numbered 0, 1, ... in that order, so `--person 0` is the main person
whatever `--max-people` keeps.
"""

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from ..keypoints import NUM_MP_LANDMARKS
from .multi_pose import People
from .pose import PoseTrack


@dataclass(frozen=True)
class TrackSettings:
    max_distance: float = 0.3      # median landmark distance / person height for a detection to continue a track
    lost_seconds: float = 1.0      # a track unseen this long ends; within it the person is re-found
    min_seconds: float = 0.5       # tracks with fewer frames than this are dropped
    min_visibility: float = 0.5    # landmarks compared and counted only from this visibility on


def person_height(landmarks: np.ndarray, visibility: np.ndarray, min_visibility: float = 0.5) -> float:
    """Height (px) of one detection (33, 2): the vertical extent of its confident landmarks (all of them when
    fewer than two are confident)."""
    sure = visibility >= min_visibility
    ys = landmarks[sure if sure.sum() >= 2 else slice(None), 1]
    return float(np.ptp(ys)) if len(ys) else 0.0


def _distance_function(settings: TrackSettings):
    def distance(detection, tracked_object) -> float:
        """norfair's distance: how far a detection lies from a track's predicted landmarks, in person heights."""
        sure = (detection.scores >= settings.min_visibility) & (tracked_object.last_detection.scores
                                                                 >= settings.min_visibility)
        if sure.sum() < 3:
            sure = np.ones_like(sure)
        d = np.linalg.norm(detection.points[sure] - tracked_object.estimate[sure], axis=-1)
        height = max(person_height(detection.points, detection.scores, settings.min_visibility), 1.0)
        return float(np.median(d) / height)
    return distance


def link_detections(frames: list[People], fps: float, settings: TrackSettings = TrackSettings()) -> np.ndarray:
    """Which track each detection belongs to: (D, 3) rows (frame, detection index, norfair track id)."""
    from norfair import Detection, Tracker

    lost = max(int(round(settings.lost_seconds * fps)), 1)
    # norfair logs a warning through the root logger for every function distance (it suggests its vectorized
    # ones, which cannot weigh landmarks by visibility); with a few people a frame the cost is negligible.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        tracker = Tracker(distance_function=_distance_function(settings), distance_threshold=settings.max_distance,
                          hit_counter_max=lost, initialization_delay=0, detection_threshold=settings.min_visibility,
                          pointwise_hit_counter_max=lost)
    finally:
        logging.disable(previous)
    links = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for t, people in enumerate(frames):
            detections = [Detection(points=people.landmarks[d].astype(np.float64),
                                    scores=people.visibility[d].astype(np.float64), data=(t, d))
                          for d in range(len(people)) if np.isfinite(people.landmarks[d]).all()]
            for obj in tracker.update(detections=detections):
                if obj.last_detection is not None and obj.last_detection.data[0] == t:
                    links.append((t, obj.last_detection.data[1], obj.id))
    return np.array(links, np.int64).reshape(-1, 3)


def _as_pose_track(frames: list[People], rows: np.ndarray) -> PoseTrack:
    """One track's detections as the single-person tracker's `PoseTrack` over all T frames (NaN elsewhere)."""
    T = len(frames)
    landmarks = np.full((T, NUM_MP_LANDMARKS, 2), np.nan, np.float32)
    visibility = np.zeros((T, NUM_MP_LANDMARKS), np.float32)
    world = np.full((T, NUM_MP_LANDMARKS, 3), np.nan, np.float32)
    returned = np.zeros(T, bool)
    for t, d, _ in rows:
        people = frames[t]
        landmarks[t], visibility[t], world[t], returned[t] = people.landmarks[d], people.visibility[d], \
            people.world[d], True
    return PoseTrack(landmarks, visibility, world, returned)


def prominence(track: PoseTrack, min_visibility: float = 0.5) -> float:
    """The sum over frames of the person's height in the image (px x frames): large, long-visible people first."""
    return float(sum(person_height(track.landmarks[t], track.visibility[t], min_visibility)
                     for t in np.where(track.returned)[0]))


def track_people(frames: list[People], fps: float, settings: TrackSettings = TrackSettings(),
                 max_people: int | None = None) -> list[PoseTrack]:
    """The people of a video, one `PoseTrack` each, the most prominent first (its index is the person's id);
    tracks shorter than `settings.min_seconds` dropped; at most `max_people` (None: all)."""
    links = link_detections(frames, fps, settings)
    shortest = max(int(round(settings.min_seconds * fps)), 1)
    tracks = []
    for track_id in np.unique(links[:, 2]):
        rows = links[links[:, 2] == track_id]
        if len(rows) >= shortest:
            tracks.append(_as_pose_track(frames, rows))
    tracks.sort(key=lambda tr: -prominence(tr, settings.min_visibility))
    return tracks[:max_people] if max_people is not None else tracks


def detect_tracks(video, info, progress: bool = True, max_people: int | None = None, person: int | None = None,
                  settings: TrackSettings = TrackSettings(), probe=None, workers: int | None = None
                  ) -> tuple[list[PoseTrack], list[int], np.ndarray]:
    """The people of a video (`info`: its `VideoInfo`) as `diffmesh run --max-people` finds them: the landmarker
    on every frame, its crops and the people it follows (`detect.detect_people_frames`, in `workers` processes),
    then `track_people`. Returns the tracks, their ids (their rank of prominence, the same whatever `max_people`
    keeps) and the frames' timestamps (T,). `person`: only the track with that id (none when there is no such
    person)."""
    from .detect import detect_people_frames

    frames, times = detect_people_frames(video, info, progress, workers, probe)
    fps = None
    if len(times) > 1:
        fps = (len(times) - 1) / max(times[-1] - times[0], 1e-9)
    tracks = track_people(frames, fps or 30.0, settings)
    ids = list(range(len(tracks)))
    if person is not None:
        ids = [person] if 0 <= person < len(tracks) else []
    if max_people:
        ids = ids[:max_people]
    return [tracks[i] for i in ids], ids, times
