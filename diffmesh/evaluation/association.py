"""Who is who across calibrated views, and over time: the people MediaPipe's multi-person landmarker finds in each
view (`video/multi_pose.py`) grouped into 3D people, frame by frame, then linked into tracks.

In each frame: every pair of detections from two different views is triangulated (its confident landmarks) and
kept when both reproject within `PAIR_PX`; pairs are taken best first (each detection joins one person), and every
other view contributes the detection that lies nearest the pair's 3D person reprojected (within `JOIN_PX`).
Over time: each frame's people are assigned to the tracks of the frame before by the distance of their mid-hips
(Hungarian assignment, at most `TRACK_M` metres), or start a new track.
"""

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.calibration import CalibratedCamera
from ..keypoints import MP_LEFT_HIP, MP_RIGHT_HIP
from ..video.multi_pose import People
from .triangulation import Triangulated, triangulate

PAIR_PX = 25.0           # mean reprojection error of a two-view pair that is one person (MediaPipe: ~7 px)
JOIN_PX = 40.0           # median distance of another view's detection to the pair's reprojected landmarks
SAME_PX = 30.0           # two detections of one view this close (median landmark distance) are one person
TRACK_M = 0.5            # largest mid-hip move between consecutive frames (60 fps) of one person
MIN_CONFIDENCE = 0.5


@dataclass
class Group:
    """One person in one frame: which detection of each view (-1: none) and its landmarks triangulated from them
    (`Triangulated` over 33 points: points, views used, per-view error)."""

    members: np.ndarray
    triangulated: Triangulated

    @property
    def landmarks(self) -> np.ndarray:
        return self.triangulated.points

    @property
    def hips(self) -> np.ndarray:
        return self.landmarks[[MP_LEFT_HIP, MP_RIGHT_HIP]].mean(0)


def add_detection(people: People, landmarks: np.ndarray, visibility: np.ndarray) -> People:
    """`people` with one more detection (33, 2) of the same frame: the single-person tracker's, which `diffmesh run`
    sees and which is smoothed over time. It replaces the landmarker's detection of the same person (median landmark
    distance under SAME_PX) and is added otherwise; an empty one changes nothing."""
    if not np.isfinite(landmarks).all():
        return people
    lm, vis, world = people.landmarks.copy(), people.visibility.copy(), people.world.copy()
    for d in range(len(people)):
        if np.median(np.linalg.norm(people.landmarks[d] - landmarks, axis=-1)) < SAME_PX:
            lm[d], vis[d] = landmarks, visibility
            return People(lm, vis, world)
    return People(np.concatenate([lm, landmarks[None]]), np.concatenate([vis, visibility[None]]),
                  np.concatenate([world, np.full((1, *world.shape[1:]), np.nan, np.float32)]))


def _stack(cameras, frame: list[People], members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chosen detections as (C, 33, 2) pixels (NaN where a view has none) and (C, 33) confidences."""
    C = len(cameras)
    px, conf = np.full((C, 33, 2), np.nan), np.zeros((C, 33))
    for v, d in enumerate(members):
        if d >= 0:
            px[v], conf[v] = frame[v].landmarks[d], frame[v].visibility[d]
    return px, conf


def _pair_error(cameras, frame, members) -> tuple[float, np.ndarray]:
    px, conf = _stack(cameras, frame, members)
    tri = triangulate(cameras, px, conf, min_confidence=MIN_CONFIDENCE, max_error_px=np.inf)
    err = np.where(tri.used, tri.error_px, np.nan)
    finite = err[np.isfinite(err)]
    return (float(finite.mean()) if len(finite) >= 8 else np.inf), tri.points


def _nearest_detection(camera: CalibratedCamera, people: People, points: np.ndarray, taken: set[int]) -> int:
    """The free detection of one view nearest the person's landmarks reprojected there, or -1 beyond JOIN_PX."""
    ok = np.isfinite(points).all(-1)
    if ok.sum() < 8:
        return -1
    projected = camera.project(points[ok])
    best, best_px = -1, JOIN_PX
    for d in range(len(people)):
        confident = people.visibility[d][ok] >= MIN_CONFIDENCE
        if d in taken or confident.sum() < 6:
            continue
        dist = float(np.median(np.linalg.norm(people.landmarks[d][ok][confident] - projected[confident], axis=-1)))
        if dist < best_px:
            best, best_px = d, dist
    return best


def group_frame(cameras: list[CalibratedCamera], frame: list[People]) -> list[Group]:
    """One frame's detections in C views -> the people seen by two views or more."""
    C = len(cameras)
    pairs = []
    for v1 in range(C):
        for v2 in range(v1 + 1, C):
            for a in range(len(frame[v1])):
                for b in range(len(frame[v2])):
                    members = np.full(C, -1)
                    members[v1], members[v2] = a, b
                    err, points = _pair_error(cameras, frame, members)
                    if err < PAIR_PX:
                        pairs.append((err, v1, a, v2, b, points))
    taken: list[set[int]] = [set() for _ in range(C)]
    groups = []
    for _, v1, a, v2, b, points in sorted(pairs, key=lambda p: p[0]):
        if a in taken[v1] or b in taken[v2]:
            continue
        members = np.full(C, -1)
        members[v1], members[v2] = a, b
        for v in set(range(C)) - {v1, v2}:
            members[v] = _nearest_detection(cameras[v], frame[v], points, taken[v])
        for v, d in enumerate(members):
            if d >= 0:
                taken[v].add(int(d))
        px, conf = _stack(cameras, frame, members)
        groups.append(Group(members, triangulate(cameras, px, conf)))
    return groups


def link_tracks(groups_per_frame: list[list[Group]]) -> list[dict[int, Group]]:
    """Per track (ordered by first appearance), its group in each frame where it is seen."""
    tracks: list[dict[int, Group]] = []
    last: list[tuple[int, np.ndarray]] = []                    # (track, its latest mid-hips) of the frame before
    for t, groups in enumerate(groups_per_frame):
        groups = [g for g in groups if np.isfinite(g.hips).all()]
        assigned: dict[int, int] = {}
        if last and groups:
            cost = np.array([[np.linalg.norm(g.hips - h) for g in groups] for _, h in last])
            for r, c in zip(*linear_sum_assignment(cost)):
                if cost[r, c] < TRACK_M:
                    assigned[c] = last[r][0]
        for c, g in enumerate(groups):
            if c not in assigned:
                assigned[c] = len(tracks)
                tracks.append({})
            tracks[assigned[c]][t] = g
        # Tracks not seen in this frame stay matchable through short gaps (their last position).
        seen_now = {assigned[c]: groups[c].hips for c in assigned}
        last = [(k, seen_now[k]) for k in seen_now] + [(k, h) for k, h in last if k not in seen_now]
    return tracks
