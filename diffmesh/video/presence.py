"""Is the pose MediaPipe returned a person, and is it the same person as in the last frame?

MediaPipe can return a pose where nobody is (on a clip of an empty room it reports a full-body pose in most
frames), so "a pose was returned" is only the first piece of evidence. A frame is valid when all of these hold:
1. a pose was returned;
2. the torso is seen: the mean visibility of both shoulders and both hips is at least `min_torso_visibility`,
   and the mean over the twelve limb landmarks at least `min_limb_visibility`;
3. the skeleton is plausible: in the image no limb segment (upper arm, forearm, thigh, shin) is longer than
   `max_segment` torso lengths (there is no lower bound: a forearm pointing at the camera is short), in
   MediaPipe's metric world landmarks every segment is `world_segment_m` long, and the person is at least
   `min_height_frac` of the image height tall;
4. it lasts: valid runs shorter than `min_run_s` seconds are dropped (a detector's one-frame flicker).
A track is split (a new `track_id`) where the person jumps: the hip centre moves more than `max_jump` torso
lengths in one frame or the torso length changes by more than `max_scale_change` times, which is MediaPipe
re-detecting someone else.
"""

from dataclasses import dataclass

import numpy as np

from ..keypoints import (MP_LEFT_ANKLE, MP_LEFT_ELBOW, MP_LEFT_HIP, MP_LEFT_KNEE, MP_LEFT_SHOULDER, MP_LEFT_WRIST,
                         MP_RIGHT_ANKLE, MP_RIGHT_ELBOW, MP_RIGHT_HIP, MP_RIGHT_KNEE, MP_RIGHT_SHOULDER,
                         MP_RIGHT_WRIST)
from .pose import PoseTrack

TORSO = (MP_LEFT_SHOULDER, MP_RIGHT_SHOULDER, MP_LEFT_HIP, MP_RIGHT_HIP)
LIMB_LANDMARKS = TORSO + (MP_LEFT_ELBOW, MP_RIGHT_ELBOW, MP_LEFT_WRIST, MP_RIGHT_WRIST, MP_LEFT_KNEE,
                          MP_RIGHT_KNEE, MP_LEFT_ANKLE, MP_RIGHT_ANKLE)
SEGMENTS = ((MP_LEFT_SHOULDER, MP_LEFT_ELBOW), (MP_LEFT_ELBOW, MP_LEFT_WRIST),
            (MP_RIGHT_SHOULDER, MP_RIGHT_ELBOW), (MP_RIGHT_ELBOW, MP_RIGHT_WRIST),
            (MP_LEFT_HIP, MP_LEFT_KNEE), (MP_LEFT_KNEE, MP_LEFT_ANKLE),
            (MP_RIGHT_HIP, MP_RIGHT_KNEE), (MP_RIGHT_KNEE, MP_RIGHT_ANKLE))


@dataclass
class PresenceSettings:
    min_torso_visibility: float = 0.5
    min_limb_visibility: float = 0.4
    max_segment: float = 1.6
    world_segment_m: tuple[float, float] = (0.08, 0.8)
    min_height_frac: float = 0.04
    min_run_s: float = 0.1
    max_jump: float = 1.0
    max_scale_change: float = 1.6


@dataclass
class Presence:
    """Per frame (T,): valid (bool), track_id (int, -1 where invalid), evidence (the first failed test's name, or
    'ok'), torso_visibility (float)."""

    valid: np.ndarray
    track_id: np.ndarray
    evidence: np.ndarray
    torso_visibility: np.ndarray

    @property
    def num_tracks(self) -> int:
        return int(self.track_id.max() + 1) if self.valid.any() else 0

    def runs(self) -> list[tuple[int, int]]:
        """[start, stop) of each run of consecutive valid frames of one track (clips and camera solves never
        cross a run's ends)."""
        out = []
        for start, stop in runs_of(self.valid):
            cuts = [start] + [t for t in range(start + 1, stop) if self.track_id[t] != self.track_id[t - 1]] + [stop]
            out += [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]
        return out


def _torso_length(landmarks: np.ndarray) -> np.ndarray:
    shoulders = landmarks[:, [MP_LEFT_SHOULDER, MP_RIGHT_SHOULDER]].mean(1)
    hips = landmarks[:, [MP_LEFT_HIP, MP_RIGHT_HIP]].mean(1)
    return np.linalg.norm(shoulders - hips, axis=-1)


def frame_evidence(track: PoseTrack, image_height: int, settings: PresenceSettings = PresenceSettings()
                   ) -> np.ndarray:
    """Tests 1-3 for each frame: (T,) strings, 'ok' or the name of the first test that failed."""
    T = len(track.returned)
    out = np.full(T, "ok", dtype=object)
    lm, vis = track.landmarks, track.visibility
    torso_vis = vis[:, list(TORSO)].mean(1)
    limb_vis = vis[:, list(LIMB_LANDMARKS)].mean(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        torso = _torso_length(lm)
        seg = np.stack([np.linalg.norm(lm[:, a] - lm[:, b], axis=-1) for a, b in SEGMENTS], 1) / torso[:, None]
        ys = np.where(track.returned[:, None], lm[:, list(LIMB_LANDMARKS), 1], 0.0)
        height = ys.max(1) - ys.min(1)
        seg_m = np.stack([np.linalg.norm(track.world[:, a] - track.world[:, b], axis=-1) for a, b in SEGMENTS], 1)
        lo, hi = settings.world_segment_m
        plausible = np.all(seg <= settings.max_segment, 1) & (torso > 0) & np.all((seg_m >= lo) & (seg_m <= hi), 1)
    out[height < settings.min_height_frac * image_height] = "too_small"
    out[~plausible] = "implausible_skeleton"
    out[limb_vis < settings.min_limb_visibility] = "low_limb_visibility"
    out[torso_vis < settings.min_torso_visibility] = "low_torso_visibility"
    out[~track.returned] = "no_pose"
    return out


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.where(edges == 1)[0], np.where(edges == -1)[0]))


def decide_presence(track: PoseTrack, fps: float, image_height: int,
                    settings: PresenceSettings = PresenceSettings()) -> Presence:
    """Combine the per-frame tests with the temporal ones (see the module docstring)."""
    evidence = frame_evidence(track, image_height, settings)
    valid = evidence == "ok"
    T = len(valid)
    # Split where the person jumps (another person re-detected), before dropping short runs.
    torso = _torso_length(track.landmarks)
    hips = track.landmarks[:, [MP_LEFT_HIP, MP_RIGHT_HIP]].mean(1)
    new_track = np.zeros(T, bool)
    for t in range(1, T):
        if valid[t] and valid[t - 1]:
            jump = np.linalg.norm(hips[t] - hips[t - 1]) / max(torso[t - 1], 1e-6)
            ratio = max(torso[t], 1e-6) / max(torso[t - 1], 1e-6)
            new_track[t] = jump > settings.max_jump or not (1 / settings.max_scale_change <= ratio
                                                            <= settings.max_scale_change)
    min_run = max(1, int(round(settings.min_run_s * fps)))
    track_id = np.full(T, -1, np.int64)
    next_id, last_end = 0, None
    for start, stop in runs_of(valid):
        cuts = [start] + [t for t in range(start + 1, stop) if new_track[t]] + [stop]
        for a, b in zip(cuts[:-1], cuts[1:]):
            if b - a < min_run:
                valid[a:b] = False
                evidence[a:b] = "too_short"
                continue
            # A run that resumes after a gap without a jump continues the same person.
            same = (last_end is not None and not new_track[a] and a > 0 and
                    np.linalg.norm(hips[a] - hips[last_end]) / max(torso[last_end], 1e-6)
                    <= settings.max_jump * max(1, a - last_end))
            if not same:
                next_id += 1
            track_id[a:b] = next_id - 1
            last_end = b - 1
    vis = track.visibility[:, list(TORSO)].mean(1)
    return Presence(valid, track_id, evidence, vis)
