"""The video pipeline's pure parts against independent computations: clip cutting, presence, camera placement."""

import numpy as np
import pytest
from scipy.optimize import least_squares

from diffmesh.camera import project, smooth_translation, solve_translation
from diffmesh.keypoints import MP_LEFT_HIP, MP_LEFT_SHOULDER, MP_RIGHT_HIP, MP_RIGHT_SHOULDER, SHARED_JOINTS
from diffmesh.pipeline import cut_clips
from diffmesh.video.pose import PoseTrack
from diffmesh.video.presence import Presence, decide_presence


def _presence(valid, track):
    valid = np.asarray(valid, bool)
    return Presence(valid, np.asarray(track), np.where(valid, "ok", "no_pose"), np.ones(len(valid)))


def test_clips_cover_each_run_of_one_track_and_pad_the_last():
    valid = [0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
    track = [-1, 0, 0, 0, 0, 0, -1, 0, 0, 0, 1, 1, 1, 1]
    clips = cut_clips(_presence(valid, track), 4)
    got = [c.tolist() for c in clips]
    assert got == [[1, 2, 3, 4], [5, 5, 5, 5], [7, 8, 9, 9], [10, 11, 12, 13]]
    assert all(len(c) == 4 for c in clips)


@pytest.fixture(scope="module")
def anny_joints():
    import torch

    from diffmesh.body import load_body

    body = load_body("anny")
    rng = np.random.default_rng(0)
    rot = body.mean_pose.repeat(20, 1, 1, 1).clone()
    small = torch.as_tensor(rng.normal(0, 0.15, (20, body.num_bones, 3)), dtype=torch.float32)
    import roma

    rot = rot @ roma.rotvec_to_rotmat(small)
    j = body(rot, body.mean_shape.repeat(20, 1), with_vertices=False).joints.numpy()
    return j - j[:, :1]


def _keypoints(joints, t, focal, principal, rng, noise_px):
    uv = project(joints + t[:, None], focal, principal) + rng.normal(0, noise_px, joints.shape[:2] + (2,))
    return np.concatenate([uv, np.full(joints.shape[:2] + (1,), 0.9)], -1).astype(np.float32)


def test_translation_solve_matches_nonlinear_reprojection_fit(anny_joints):
    rng = np.random.default_rng(1)
    T = len(anny_joints)
    focal, principal = 1400.0, (640.0, 360.0)
    t_true = np.stack([np.linspace(-1, 1, T), np.full(T, 0.2), np.linspace(5, 7, T)], 1)
    kp = _keypoints(anny_joints, t_true, focal, principal, rng, 0.0)
    t = solve_translation(anny_joints, kp, focal, principal)
    assert np.abs(t - t_true).max() < 1e-3                         # exact keypoints: exact translation
    kp = _keypoints(anny_joints, t_true, focal, principal, rng, 3.0)
    t = solve_translation(anny_joints, kp, focal, principal)
    ids = list(SHARED_JOINTS)
    for i in range(T):                                             # independent: minimise the pixel error itself
        fit = least_squares(lambda x: (project(anny_joints[i, ids] + x, focal, principal) - kp[i, ids, :2]).ravel(),
                            t_true[i] + 0.3).x
        assert np.abs(t[i] - fit).max() < 0.05 * fit[2] / 5         # the linear solve is within 1 % of depth


def test_smoothing_removes_depth_jitter_and_keeps_the_reprojection(anny_joints):
    rng = np.random.default_rng(2)
    T = len(anny_joints)
    focal, principal = 1400.0, (640.0, 360.0)
    t_true = np.stack([np.linspace(-0.5, 0.5, T), np.zeros(T), np.full(T, 6.0)], 1)
    kp = _keypoints(anny_joints, t_true, focal, principal, rng, 2.0)
    raw = solve_translation(anny_joints, kp, focal, principal)
    smooth = smooth_translation(anny_joints, kp, focal, principal, fps=30.0)
    accel = lambda t: np.linalg.norm(t[2:] - 2 * t[1:-1] + t[:-2], axis=-1).mean()
    assert accel(smooth) < 0.2 * accel(raw)
    assert np.abs(smooth - t_true).mean() < np.abs(raw - t_true).mean()
    ids = list(SHARED_JOINTS)
    px = lambda t: np.linalg.norm(project(anny_joints[:, ids] + t[:, None], focal, principal) - kp[:, ids, :2], axis=-1)
    assert px(smooth).mean() < px(raw).mean() + 1.0                 # pixels: at most 1 px worse on average


def _track(T, hips_x, visible=True):
    """A plausible standing skeleton whose hip centre is at hips_x (T,) pixels."""
    from diffmesh.keypoints import (MP_LEFT_ANKLE, MP_LEFT_ELBOW, MP_LEFT_KNEE, MP_LEFT_WRIST, MP_RIGHT_ANKLE,
                                    MP_RIGHT_ELBOW, MP_RIGHT_KNEE, MP_RIGHT_WRIST)

    pts = {MP_LEFT_SHOULDER: (20, 100), MP_RIGHT_SHOULDER: (-20, 100), MP_LEFT_HIP: (12, 200),
           MP_RIGHT_HIP: (-12, 200), MP_LEFT_ELBOW: (25, 150), MP_RIGHT_ELBOW: (-25, 150), MP_LEFT_WRIST: (28, 195),
           MP_RIGHT_WRIST: (-28, 195), MP_LEFT_KNEE: (14, 280), MP_RIGHT_KNEE: (-14, 280), MP_LEFT_ANKLE: (14, 360),
           MP_RIGHT_ANKLE: (-14, 360)}
    lm = np.zeros((T, 33, 2), np.float32)
    for k, (x, y) in pts.items():
        lm[:, k] = (x, y)
    lm[:, 0] = (0, 60)
    lm[..., 0] += np.asarray(hips_x, np.float32)[:, None]
    world = (lm - lm[:, [MP_LEFT_HIP, MP_RIGHT_HIP]].mean(1, keepdims=True)) / 220.0
    world = np.concatenate([world, np.zeros((T, 33, 1), np.float32)], -1)
    vis = np.full((T, 33), 0.95 if visible else 0.2, np.float32)
    return PoseTrack(lm, vis, world, np.ones(T, bool))


def test_presence_accepts_a_person_splits_jumps_and_drops_flicker():
    T = 30
    x = np.full(T, 300.0)
    x[15:] = 900.0                                                  # MediaPipe jumped to someone else
    p = decide_presence(_track(T, x), fps=30, image_height=720)
    assert p.valid.all() and p.num_tracks == 2 and (p.track_id[:15] == 0).all() and (p.track_id[15:] == 1).all()

    flicker = _track(T, np.full(T, 300.0))
    flicker.returned[:] = False
    flicker.returned[10:12] = True                                  # a two-frame detection in an empty scene
    p = decide_presence(flicker, fps=30, image_height=720)
    assert not p.valid.any() and set(p.evidence[10:12]) == {"too_short"}

    p = decide_presence(_track(T, np.full(T, 300.0), visible=False), fps=30, image_height=720)
    assert not p.valid.any() and set(p.evidence) == {"low_torso_visibility"}

    broken = _track(T, np.full(T, 300.0))
    broken.landmarks[:, 15] = (2000, 2000)                          # a wrist 5 torso lengths away
    assert not decide_presence(broken, fps=30, image_height=720).valid.any()
