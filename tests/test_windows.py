"""`diffmesh run`'s windows against independent computations: the model's time grid (30, 5, 60 fps and variable
rate), interpolation and slerp, the window layouts and their cross-fade, padded clips, one shape per person, the
chained DiffMesh chain, and the boundary jitter measure. Model-level tests use the shipped DiffMesh weights on
real keypoints (the bundled squats video's BlazePose landmarks)."""

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation, Slerp

from diffmesh import diffusion
from diffmesh.keypoints import model_keypoints
from diffmesh.paths import DEFAULT_CHECKPOINT, VIDEOS_DIR
from diffmesh.pipeline import body_joints, cut_clips, recover_meshes, recover_motion, window_inputs
from diffmesh.predict import predict_clips
from diffmesh.video.presence import Presence
from diffmesh.rotations import interpolate, slerp_at
from diffmesh.windows import (TRAINING_FPS, WINDOW_MODES, jitter_at_boundaries, model_rate, person_shapes, plan_runs,
                              stitch, time_grid, window_starts, window_weights)

F = 16


def _presence(valid, track):
    valid = np.asarray(valid, bool)
    return Presence(valid, np.asarray(track, np.int64), np.where(valid, "ok", "no_pose"), np.ones(len(valid)))


def _z_rotations(angles):
    return Rotation.from_rotvec(np.outer(np.asarray(angles, np.float64).reshape(-1), [0, 0, 1])).as_matrix()


# ---------------------------------------------------------------- the grid

def test_grid_of_30_5_60_fps_and_variable_rate_video():
    rounded = np.round(np.arange(100) / 29.97 * 15360) / 15360      # 29.97 fps, timestamps in 1/15360 s
    g = time_grid(np.round(np.arange(100) / 30 * 15360) / 15360, TRAINING_FPS)
    assert g.identity and g.num_samples == 100                      # a 30 fps video is already on the grid
    g = time_grid(np.arange(65) / 5.0, TRAINING_FPS)                # the squats video: 6 samples per frame
    assert g.num_samples == 385 and np.array_equal(g.sample_at_frame, 6 * np.arange(65))
    assert np.array_equal(g.frame_at_sample[::6], np.arange(65)) and np.allclose(g.frame_at_sample, np.arange(385) / 6)
    g = time_grid(np.arange(61) / 60.0, TRAINING_FPS)               # 60 fps: every other frame is a sample
    assert g.num_samples == 31 and np.array_equal(g.frame_at_sample, 2 * np.arange(31))
    g = time_grid(rounded, TRAINING_FPS)                            # 29.97 fps: one sample more per 33 s
    assert g.num_samples == 101 and np.abs(g.sample_at_frame - rounded * 30).max() < 0.1   # 99.1 samples long
    # Variable rate: each sample lies between the two frames around its time, at the right fraction (a loop).
    rng = np.random.default_rng(0)
    times = 3.0 + np.cumsum(rng.uniform(0.01, 0.12, 50))
    g = time_grid(times, TRAINING_FPS)
    assert g.num_samples == int(np.ceil((times[-1] - times[0]) * 30 - 1e-2)) + 1
    for k, pos in enumerate(g.frame_at_sample):
        ts = min(times[0] + k / 30, times[-1])
        a = max(i for i in range(len(times)) if times[i] <= ts + 1e-12)
        frac = 0.0 if a == len(times) - 1 else (ts - times[a]) / (times[a + 1] - times[a])
        assert abs(pos - (a + frac)) < 1e-2
    assert np.allclose(g.sample_at_frame, (times - times[0]) * 30, atol=1e-2)
    assert time_grid(times, None).identity


def test_linear_motion_and_constant_rotation_speed_come_back_exactly():
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.uniform(0.01, 0.09, 40))
    g = time_grid(times, TRAINING_FPS)
    sample_times = times[0] + np.arange(g.num_samples) / TRAINING_FPS
    velocity, origin = rng.normal(0, 100, (17, 2)), rng.normal(0, 300, (17, 2))
    frames = origin + velocity * times[:, None, None]
    resampled = interpolate(frames, g.frame_at_sample)
    at_pos = np.interp(g.frame_at_sample, np.arange(len(times)), times)      # the time of each sample's position
    assert np.abs(at_pos - np.minimum(sample_times, times[-1])).max() < 0.01 * 0.09 + 1e-12   # (snapped to frames)
    assert np.allclose(resampled, origin + velocity * at_pos[:, None, None], atol=1e-6)
    # Rotations about a fixed axis per bone at a constant rate: slerp between samples is exact.
    axes = rng.normal(size=(3, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    rate = np.array([1.0, -2.5, 4.0])
    at = lambda t: np.stack([Rotation.from_rotvec(np.outer(rate[k] * t, axes[k])).as_matrix() for k in range(3)], 1)
    back = slerp_at(at(sample_times - times[0]), g.sample_at_frame)
    assert np.abs(back - at(times - times[0])).max() < 1e-9
    # Random rotations: the same as scipy's Slerp, frame by frame and bone by bone.
    R = Rotation.random(g.num_samples * 3, random_state=2).as_matrix().reshape(g.num_samples, 3, 3, 3)
    back = slerp_at(R, g.sample_at_frame)
    for k in range(3):
        ref = Slerp(np.arange(g.num_samples), Rotation.from_matrix(R[:, k]))(g.sample_at_frame).as_matrix()
        assert np.abs(back[:, k] - ref).max() < 1e-9


# ---------------------------------------------------------------- windows and stitching

@pytest.mark.parametrize("m", [5, 16, 20, 40, 57])
def test_window_layouts_cover_every_sample(m):
    ind = window_starts(m, F, "independent")
    assert list(ind) == list(range(0, m, F))                       # disjoint, the last one padded
    for mode in ("blended", "chained"):
        starts = window_starts(m, F, mode)
        assert starts[0] == 0 and (np.diff(starts) <= F // 2).all() and (np.diff(starts) > 0).all()
        assert starts[-1] + F >= m and (m < F or starts[-1] + F == m)   # the last ends at the run's end
    w = window_weights(F, "blended")
    assert np.allclose(w[:F // 2] + w[F // 2:], 1) and w[0] < 0.01 and w[-1] < 0.01
    assert np.array_equal(window_weights(F, "independent"), np.ones(F))


def test_padded_positions_never_give_a_frame_its_output():
    """A 20-sample run, f = 16: the second window holds samples 16..19 and 12 padded copies of sample 19. Every
    window reports its position j as a rotation of j/10 rad about z; each sample must get its real position."""
    m = 20
    for mode in ("independent", "blended"):
        starts = window_starts(m, F, mode)
        rot = np.stack([_z_rotations(np.arange(F) / 10.0) for _ in starts])[:, :, None]     # (W, f, 1, 3, 3)
        out = stitch(rot.astype(np.float32), starts, m, window_weights(F, mode))
        angle = np.arctan2(out[:, 0, 1, 0], out[:, 0, 0, 0])
        if mode == "independent":
            assert np.allclose(angle, np.r_[np.arange(16), np.arange(4)] / 10, atol=1e-6)
        else:                                 # windows at 0 and 4: sample 19 is position 15 of the second window
            assert abs(angle[19] - 1.5) < 1e-5


def test_blend_is_the_weighted_mean_rotation():
    """Two windows f/2 apart with constant rotations about z by a and b: in the overlap the chordal mean of the
    two with weights w1, w2 is the rotation by atan2(w1 sin a + w2 sin b, w1 cos a + w2 cos b)."""
    m, a, b = 24, 0.3, 1.4
    starts = window_starts(m, F, "blended")
    assert list(starts) == [0, 8]
    rot = np.stack([np.repeat(_z_rotations([a]), F, 0), np.repeat(_z_rotations([b]), F, 0)])[:, :, None]
    out = stitch(rot, starts, m, window_weights(F, "blended"))
    got = np.arctan2(out[:, 0, 1, 0], out[:, 0, 0, 0])
    w = np.sin(np.pi * (np.arange(F) + 0.5) / F) ** 2
    for k in range(m):
        w1 = w[k] if k < F else 0.0
        w2 = w[k - 8] if k >= 8 else 0.0
        assert abs(got[k] - np.arctan2(w1 * np.sin(a) + w2 * np.sin(b), w1 * np.cos(a) + w2 * np.cos(b))) < 1e-6
    assert np.allclose(out @ np.swapaxes(out, -1, -2), np.eye(3), atol=1e-6)


def test_person_shape_is_the_mean_weighted_by_real_frames():
    shapes = np.array([[0.0, 1.0], [2.0, 3.0], [10.0, 10.0], [4.0, 0.0]])
    got = person_shapes(shapes, np.array([16, 4, 16, 8]), np.array([0, 0, 1, 0]))
    assert np.allclose(got[0], (16 * shapes[0] + 4 * shapes[1] + 8 * shapes[3]) / 28) and np.allclose(got[1], 10)


def test_jitter_at_boundaries_counts_the_jumps_of_window_cuts():
    """Joint 5 jumps by 1 cm at every independent cut (every 16 frames) of a 48-frame run and is still
    elsewhere: the acceleration at frames 15, 16, 31, 32 is 10 mm for that joint (10/17 mm over 17 joints)."""
    T = 48
    joints = np.zeros((T, 17, 3))
    joints[:, 5, 0] = 0.01 * (np.arange(T) // F)
    plans = plan_runs(_presence(np.ones(T), np.zeros(T)), np.arange(T) / 30, 30.0, F, TRAINING_FPS, "independent")
    r = jitter_at_boundaries(joints, plans, F)
    assert r["boundary_frames"] == 4 and r["inside_frames"] == T - 2 - 4
    assert abs(r["boundary"] - 10 / 17) < 1e-9 and r["inside"] == 0
    moved = joints + np.array([1.0, 2.0, 3.0]) * np.arange(T)[:, None, None] ** 2    # the root's motion drops out
    assert abs(jitter_at_boundaries(moved, plans, F)["boundary"] - 10 / 17) < 1e-6


def test_model_rate_is_the_training_rate_unless_the_checkpoint_says():
    from diffmesh.checkpoint import read_checkpoint

    assert model_rate(read_checkpoint(DEFAULT_CHECKPOINT)["config"]) == TRAINING_FPS == 30.0
    assert model_rate({"fps": 25}) == 25.0


# ---------------------------------------------------------------- with the shipped model

@pytest.fixture(scope="module")
def model(anny_body):
    from diffmesh.checkpoint import load_model

    return load_model(DEFAULT_CHECKPOINT, anny_body, expect={"input": "keypoints"}).eval()


@pytest.fixture(scope="module")
def squats_keypoints(model):
    """(65, 17, C) what the shipped model reads, from BlazePose's landmarks of the bundled 5 fps squats video:
    pixels + confidence, and for a 2d+3d model the root-relative metric joints from its 3D landmarks."""
    lm = np.array(json.loads((VIDEOS_DIR / "pexels_4838220_woman_squats_5fps.blazepose_2d.json").read_text()))
    world = np.array(json.loads((VIDEOS_DIR / "pexels_4838220_woman_squats_5fps.blazepose_3d_world.json").read_text()))
    return model_keypoints(lm[..., :2], np.full(lm.shape[:2], 0.9), world, model.cfg.keypoint_inputs)


def test_chain_from_x_end_is_forward_and_from_its_own_state_too(model, squats_keypoints):
    from diffmesh.keypoints import normalize_clip

    x = torch.as_tensor(np.stack([normalize_clip(squats_keypoints[s:s + F])[0] for s in (0, 20, 40)]))
    with torch.inference_mode():
        ref = model(x)
        out, states = model.chain_from(x)
        assert torch.equal(out.rotmats, ref.rotmats) and torch.equal(out.shape, ref.shape)
        # The full chain computed here: handing its own x_{f+1} to chain_from reproduces it (the last f steps).
        B, L, d = len(x), model.cfg.num_tokens, model.cfg.token_dim
        c = model.generator(model.adapter(x).reshape(B, F, L * d)).view(B, -1, L, d)
        full, _ = diffusion.motion_reverse(model.x_end.expand(B, L, d), c, model.motion_step, model.betas)
        assert torch.allclose(states, full[:, :F], atol=1e-4)
        again, states2 = model.chain_from(x, full[:, F])
        assert torch.allclose(again.rotmats, ref.rotmats, atol=1e-5) and torch.allclose(states2, states, atol=1e-4)
        assert again.denoiser_calls == F and out.denoiser_calls == model.cfg.num_steps


def test_padded_clip_frames_take_their_real_position(model, squats_keypoints):
    """Frames 16..19 of a 20-frame run are clip 2's positions 0..3, the rest of that clip repeats frame 19: frame
    19 must get the model's output at position 3, computed here on the same clip (the old code gave position 15)."""
    kp = squats_keypoints[:20]
    presence = _presence(np.ones(20), np.zeros(20))
    clips = cut_clips(presence, F)
    from diffmesh.keypoints import normalize_clip

    direct = predict_clips(model, None, normalize_clip(kp[clips[1]])[0][None], with_joints=False)["rotmats"][0].numpy()
    assert np.abs(direct[3] - direct[15]).max() > 1e-3              # the positions differ: the test can fail
    rot, _ = recover_meshes(model, kp, clips, 20)
    assert np.abs(rot[19] - direct[3]).max() < 1e-5 and np.abs(rot[16] - direct[0]).max() < 1e-5
    rot, _ = recover_motion(model, kp, np.arange(20) / 30, presence, 30.0, TRAINING_FPS, "independent")
    assert np.abs(rot[19] - direct[3]).max() < 1e-5


def _on_grid(model, kp, times, rate=TRAINING_FPS, windows="blended"):
    T = len(kp)
    return recover_motion(model, kp, times, _presence(np.ones(T), np.zeros(T)), 30.0, rate, windows)


@pytest.mark.parametrize("windows", WINDOW_MODES)
def test_other_rates_give_the_model_its_own_rate(model, squats_keypoints, windows):
    """The model sees 30 fps whatever the video's rate: a 60 fps video whose even frames are a 30 fps video's
    gives that video's rotations at its even frames and their slerp midpoints between; a 5 fps video (the squats)
    gives, at its frames, the rotations of the 30 fps video made by interpolating it (np.interp); a variable-rate
    video cut from a 30 fps one whose motion is linear between the kept frames gives the 30 fps video's."""
    kp30 = squats_keypoints[:40]
    t30 = np.arange(40) / 30
    ref, ref_shape = _on_grid(model, kp30, t30, windows=windows)
    kp60 = np.empty((79, *kp30.shape[1:]), np.float32)
    kp60[::2], kp60[1::2] = kp30, (kp30[:-1] + kp30[1:]) / 2
    rot, shape = _on_grid(model, kp60, np.arange(79) / 60, windows=windows)
    assert np.array_equal(rot[::2], ref) and np.array_equal(shape[0], ref_shape[0])
    mid = np.stack([Slerp([0, 1], Rotation.from_matrix(ref[i:i + 2, k]))(0.5).as_matrix() for i in range(39)
                    for k in range(ref.shape[1])]).reshape(39, -1, 3, 3)
    assert np.abs(rot[1::2] - mid).max() < 1e-5
    assert np.abs(_on_grid(model, kp60, np.arange(79) / 60, rate=None, windows=windows)[0][::2] - ref).max() > 1e-2

    kp5, t5 = squats_keypoints[:12], np.arange(12) / 5.0
    t = np.arange(67) / 30
    C = kp5.shape[-1]
    kp = np.stack([np.interp(t, t5, kp5[:, j, c]) for j in range(17) for c in range(C)], -1).reshape(67, 17, C)
    ref, _ = _on_grid(model, kp.astype(np.float32), t, windows=windows)
    rot, _ = _on_grid(model, kp5, t5, windows=windows)
    assert np.abs(rot - ref[::6]).max() < 1e-4

    keep = np.sort(np.r_[0, 39, np.random.default_rng(3).choice(np.arange(1, 39), 22, replace=False)])
    kp = np.stack([np.interp(t30, t30[keep], kp30[keep, j, c]) for j in range(17) for c in range(C)], -1)
    ref, _ = _on_grid(model, kp.reshape(40, 17, C).astype(np.float32), t30, windows=windows)
    rot, _ = _on_grid(model, kp30[keep], t30[keep], windows=windows)
    assert np.abs(rot - ref[keep]).max() < 1e-4


def test_one_shape_per_track_and_constant_bone_lengths(model, anny_body, squats_keypoints):
    """Two tracks (frames 0-36 and 40-64): every frame of a track has the track's shape, the mean of its windows'
    shapes weighted by their real frames (computed here from the windows' own outputs), so the posed body's bone
    lengths do not change within a track."""
    T = 65
    valid = np.ones(T, bool)
    valid[37:40] = False
    track = np.where(np.arange(T) < 37, 0, 1)
    presence = _presence(valid, np.where(valid, track, -1))
    for windows in ("independent", "blended"):
        rot, shapes = recover_motion(model, squats_keypoints, np.arange(T) / 30, presence, 30.0, None, windows)
        plans = plan_runs(presence, np.arange(T) / 30, 30.0, F, None, windows)
        out = predict_clips(model, None, window_inputs(squats_keypoints, plans, F), with_joints=False)["shape"].numpy()
        n0 = len(plans[0].starts)
        real = [min(F, p.grid.num_samples - s) for p in plans for s in p.starts]
        for k, sl in ((0, slice(0, n0)), (1, slice(n0, None))):
            want = (np.array(real[sl])[:, None] * out[sl]).sum(0) / sum(real[sl])
            frames = np.where(presence.track_id == k)[0]
            assert np.allclose(shapes[frames], want, atol=1e-6)
        assert np.abs(out[0] - out[1]).max() > 1e-3                 # the windows' own shapes differ
        joints = body_joints(anny_body, rot, shapes)
        # The rigid segments (pelvis-hip, thigh, shin, upper arm, forearm; the spine, neck and clavicle joints
        # span several bones and bend).
        child, parent = [1, 2, 3, 4, 5, 6, 12, 13, 15, 16], [0, 1, 2, 0, 4, 5, 11, 12, 14, 15]
        bones = np.linalg.norm(joints[:, child] - joints[:, parent], axis=-1)
        for k in (0, 1):
            frames = np.where(presence.track_id == k)[0]
            assert bones[frames].std(0).max() < 1e-5
        assert np.abs(bones[0] - bones[50]).max() > 1e-4            # and the two people differ
