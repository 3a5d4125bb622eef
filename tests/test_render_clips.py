"""Training clips from the rendered MediaPipe set (`data/render_clips.py`), on fake render files built without the
renderer: a real Anny motion (smooth random bone rotations, a walk) posed and filmed exactly as `render_set.py`
does it (`build_motion_bank`, `sequence_camera`), and MediaPipe's arrays made from the projected truth (plus
noise in one file). That checks our own geometry: targets against the file's truth, the mirrored body posed
against the mirrored joints, speed interpolation, the channel modes and determinism."""

import numpy as np
import pytest
import torch

from diffmesh.body.base import H36M_FLIP
from diffmesh.data.render_clips import ANNY_FLIP, Augment, RenderClipMaker, mirror_frames, mirror_rotmats
from diffmesh.data.renders import REQUIRED_KEYS, RENDER_FORMAT, load_render_set
from diffmesh.keypoints import NUM_MP_LANDMARKS, SHARED_JOINTS, USED_LANDMARKS, mediapipe_to_h36m, world_h36m
from diffmesh.outdir import write_npz
from diffmesh.rotations import rotvec_to_rotmat

T, F = 40, 16
SHAPES = (np.zeros(6, np.float32), np.array([1.0, -2.0, 0.5, 1.5, -1.0, 2.0], np.float32))


def _motion(rng, shape):
    """A smooth walk: root turning slowly, every bone swinging (world axes z up)."""
    t = np.arange(T)[:, None, None] / 30.0
    amp, freq = rng.uniform(0.1, 0.5, (1, 24, 3)), rng.uniform(0.5, 2.0, (1, 24, 3))
    phase = rng.uniform(0, 6, (1, 24, 3))
    rotvec = amp * np.sin(2 * np.pi * freq * t + phase)
    rotvec[:, 0] = [0.0, 0.0, 1.0] * (0.3 + 0.5 * t[:, 0])          # root: a turn about z
    rotmats = rotvec_to_rotmat(torch.as_tensor(rotvec, dtype=torch.float32)).numpy()
    translation = np.stack([np.linspace(0, 1.2, T), np.zeros(T), np.full(T, 0.95)], -1).astype(np.float32)
    return rotmats, translation


def _fake_file(path, body, shape, seed, noise, sequence="00_01"):
    from diffmesh.data.prepare import FitSet
    from diffmesh.data.synthetic import build_motion_bank, sequence_camera

    rng = np.random.default_rng(seed)
    rotmats, translation = _motion(rng, shape)
    glitch = np.zeros(T, bool)
    glitch[5] = True
    fits = FitSet(rotmats, translation, np.repeat(shape[None], T, 0), glitch, [sequence], np.array([0]),
                  np.array([T]), [sequence.split("_")[0]])
    bank = build_motion_bank(body, fits)
    cam = sequence_camera(rng, bank.joints[:, 0])
    used = np.zeros(NUM_MP_LANDMARKS, bool)
    used[list(USED_LANDMARKS)] = True
    joints_px, _ = cam.project(bank.joints)
    lm_px, _ = cam.project(bank.landmarks)
    lm_px[:, ~used] = 0.0
    lm_cam = np.where(used[:, None], (bank.landmarks - cam.position) @ cam.R.T, 0.0).astype(np.float32)
    returned = np.ones(T, bool)
    returned[[9, 20]] = False
    mp_px = lm_px + noise * rng.normal(0, 2.0, lm_px.shape).astype(np.float32)
    hips = lm_cam[:, [23, 24]].mean(1, keepdims=True)
    mp_world = (lm_cam - hips) + noise * rng.normal(0, 0.01, lm_cam.shape).astype(np.float32)
    vis = rng.uniform(0.5, 1.0, (T, NUM_MP_LANDMARKS)).astype(np.float32)
    mp_px[~returned], mp_world[~returned], vis[~returned] = np.nan, np.nan, 0.0
    inside = np.ones((T, 17), bool)
    arrays = dict(format=np.int64(RENDER_FORMAT), sequence=np.str_(sequence), camera_index=np.int64(seed),
                  seed=np.int64(seed), fit_digest=np.str_("fake"), camera_R=cam.R, camera_position=cam.position,
                  focal=np.float64(cam.focal), width=np.int64(cam.width), height=np.int64(cam.height),
                  principal=np.array([cam.width / 2, cam.height / 2]), fps=np.float64(30.0), rotmats=rotmats,
                  translation=translation, shape=shape, glitch=glitch, joints_world=bank.joints,
                  joints_cam=((bank.joints - cam.position) @ cam.R.T).astype(np.float32), joints_px=joints_px,
                  joints_inside=inside, joints_unoccluded=inside, landmarks_world=bank.landmarks,
                  landmarks_cam=lm_cam, landmarks_px=lm_px, landmark_used=used,
                  landmarks_inside=np.repeat(used[None], T, 0), landmarks_unoccluded=np.repeat(used[None], T, 0),
                  mp_landmarks=mp_px, mp_visibility=vis, mp_world=mp_world.astype(np.float32),
                  mp_returned=returned)
    assert set(REQUIRED_KEYS) <= set(arrays)
    write_npz(path, **arrays)


@pytest.fixture(scope="module")
def files(tmp_path_factory, anny_body):
    d = tmp_path_factory.mktemp("fake_renders")
    _fake_file(d / "00_01_cam0.npz", anny_body, SHAPES[0], 0, noise=0.0)      # MediaPipe = truth
    _fake_file(d / "00_01_cam1.npz", anny_body, SHAPES[1], 1, noise=1.0)      # noisy, another body
    return load_render_set(d)


@pytest.fixture(scope="module")
def plain(files, anny_body):
    return RenderClipMaker(files, F, augment=Augment.off(), body=anny_body)


def _pose(body, rotmats, shape):
    """Root-relative joints (f, 17, 3) of rotmats (f, K, 3, 3) with one shape (S,)."""
    with torch.no_grad():
        j = body.clip_joints(torch.as_tensor(rotmats)[None], torch.as_tensor(shape)[None])[0].numpy()
    return j - j[:, :1]


def test_windows_stay_inside_one_file(plain):
    starts = plain.window_starts()
    assert len(starts) == 2 * (T - F + 1)
    assert starts.max() == T + T - F and (T - F) in starts and (T - F + 1) not in starts


def test_targets_without_augmentation_are_the_files_truth(plain, files, anny_body):
    for i, d in enumerate(files):
        x, t = plain.make(i * T + 2, np.random.default_rng(0))
        sl = slice(2, 2 + F)
        jc = d["joints_cam"][sl]
        np.testing.assert_allclose(t["joints3d"], jc - jc[:, :1], atol=1e-6)
        np.testing.assert_allclose(t["rotmats"][:, 0], d["camera_R"] @ d["rotmats"][sl, 0], atol=1e-6)
        np.testing.assert_array_equal(t["rotmats"][:, 1:], d["rotmats"][sl, 1:])
        np.testing.assert_array_equal(t["shape"], d["shape"])
        np.testing.assert_array_equal(t["valid"], ~d["glitch"][sl] & d["mp_returned"][sl])
        assert not t["valid"][3] and not t["valid"][7]        # frame 5 a glitch, frame 9 no pose
        # the rotations pose the truth (our geometry agrees with the file's)
        assert np.abs(_pose(anny_body, t["rotmats"], t["shape"]) - t["joints3d"]).max() < 1e-4
        assert np.isfinite(x).all() and (x[7, :, 2] == 0).all()
    # MediaPipe = truth: the shared joints' inputs are the 2D targets exactly
    x, t = plain.make(2, np.random.default_rng(0))
    ok = t["valid"] | np.isin(np.arange(F), [3])
    np.testing.assert_allclose(x[ok][:, SHARED_JOINTS, :2], t["keypoints2d"][ok][:, SHARED_JOINTS], atol=1e-5)


def test_mirrored_rotations_pose_the_mirrored_joints(plain, files, anny_body):
    for i in range(len(files)):
        x0, t0 = plain.make(i * T + 10, np.random.default_rng(0))
        x1, t1 = plain.make(i * T + 10, np.random.default_rng(0), mirror=True)
        mirrored = t0["joints3d"][:, list(H36M_FLIP)] * [-1, 1, 1]
        np.testing.assert_allclose(t1["joints3d"], mirrored, atol=1e-6)
        err = np.abs(_pose(anny_body, t1["rotmats"], t1["shape"]) - mirrored).max()
        assert err < 1e-3, f"file {i}: mirrored pose off by {err * 1000:.2f} mm"
        ret = files[i]["mp_returned"][10:10 + F]
        flipped = x0[:, list(H36M_FLIP)] * np.array([-1, 1, 1], np.float32)
        np.testing.assert_allclose(x1[ret], flipped[ret], atol=1e-5)
        np.testing.assert_allclose(t1["keypoints2d"], t0["keypoints2d"][:, list(H36M_FLIP)] * [-1, 1], atol=1e-5)


def test_the_exact_mirror_beats_plain_conjugation_and_is_its_own_inverse(files, anny_body):
    conj = RenderClipMaker(files, F, augment=Augment.off(), mirror="conjugate")
    _, t0 = conj.make(T + 10, np.random.default_rng(0))
    _, t1 = conj.make(T + 10, np.random.default_rng(0), mirror=True)
    mirrored = t0["joints3d"][:, list(H36M_FLIP)] * [-1, 1, 1]
    err = np.abs(_pose(anny_body, t1["rotmats"], t1["shape"]) - mirrored).max()
    assert 1e-3 < err < 1e-2                  # Anny's neck chain is 0.1-2 mm off the midline
    with torch.no_grad():
        rest = anny_body.rest_model(torch.as_tensor(SHAPES[1])[None], with_vertices=False)["heads"]
    C = mirror_frames(rest[0, anny_body.posed_index].numpy(), anny_body.posed_parents)
    changed = [k for k in range(24) if np.abs(C[k] - np.eye(3)).max() > 1e-6]
    assert changed and all(k in (20, 21, 22) for k in changed)    # neck01..neck03
    twice = mirror_rotmats(mirror_rotmats(t0["rotmats"], anny_body.posed_parents, C), anny_body.posed_parents, C)
    np.testing.assert_allclose(twice, t0["rotmats"], atol=1e-5)
    assert ANNY_FLIP[1] == 4 and ANNY_FLIP[12] == 16 and ANNY_FLIP[0] == 0


def test_speed_one_is_the_plain_clip_and_other_speeds_interpolate(plain, files):
    aug = RenderClipMaker(files, F, body=plain.body)
    x0, t0 = plain.make(T + 3, np.random.default_rng(0))
    x1, t1 = aug.make(T + 3, np.random.default_rng(5), speed=1.0, mirror=False)
    np.testing.assert_array_equal(x0, x1)
    for k in t0:
        np.testing.assert_array_equal(t0[k], t1[k])
    s = 1.1
    _, ts = aug.make(T + 3, np.random.default_rng(5), speed=s, mirror=False)
    d = files[1]
    pos = 3 + s * np.arange(F)
    jc = d["joints_cam"] - d["joints_cam"][:, :1]
    i0, w = np.floor(pos).astype(int), (pos - np.floor(pos))[:, None, None]
    np.testing.assert_allclose(ts["joints3d"], (1 - w) * jc[i0] + w * jc[i0 + 1], atol=1e-5)
    k = 5                                       # a fractional sample: its rotations lie between the frames'
    assert 0.1 < w[k, 0, 0] < 0.9
    a, b, r = d["rotmats"][i0[k], 3], d["rotmats"][i0[k] + 1, 3], ts["rotmats"][k, 3]
    angle = lambda p, q: np.arccos(np.clip((np.trace(p.T @ q) - 1) / 2, -1, 1))   # noqa: E731
    assert angle(a, r) + angle(r, b) == pytest.approx(angle(a, b), abs=1e-4)
    assert angle(a, r) == pytest.approx(w[k, 0, 0] * angle(a, b), abs=1e-4)
    near = np.rint(pos).astype(int)
    np.testing.assert_array_equal(ts["valid"], ~d["glitch"][near] & d["mp_returned"][near])
    _, tf = aug.make(2 * T - F, np.random.default_rng(5), speed=1.25, mirror=False)   # moved back into the file
    assert np.isfinite(tf["joints3d"]).all()


def test_channel_modes(files, anny_body):
    d = files[1]
    for channels, c in (("2d", 3), ("2d+vis", 3), ("2d+3d", 6)):
        maker = RenderClipMaker(files, F, channels=channels, body=anny_body)
        x, t = maker.batch(maker.window_starts()[[0, T]], [np.random.default_rng(i) for i in range(2)])
        assert x.shape == (2, F, 17, c) and x.dtype == torch.float32 and torch.isfinite(x).all()
        assert t.rotmats.shape == (2, F, 24, 3, 3) and t.valid.dtype == torch.bool
        if channels == "2d":
            assert set(np.unique(x[..., 2].numpy())) <= {0.0, 1.0}
    x, _ = RenderClipMaker(files, F, channels="2d+3d", augment=Augment.off()).make(T, np.random.default_rng(0))
    world = world_h36m(np.nan_to_num(d["mp_world"][:F]))
    np.testing.assert_allclose(x[0, :, 3:], world[0], atol=1e-6)
    assert (x[9, :, 3:] == 0).all() and (x[:, 0, 3:] == 0).all()       # no pose at frame 9; pelvis at 0
    vis = mediapipe_to_h36m(np.nan_to_num(d["mp_landmarks"][:F]), d["mp_visibility"][:F])[..., 2]
    np.testing.assert_allclose(x[..., 2], vis, atol=1e-6)                # the visibility channel


def test_deterministic_for_a_seed(files, anny_body):
    maker = RenderClipMaker(files, F, channels="2d+3d", body=anny_body)
    starts = maker.window_starts()[[1, 30, 40]]
    a = maker.batch(starts, [np.random.default_rng([7, i]) for i in range(3)])
    b = maker.batch(starts, [np.random.default_rng([7, i]) for i in range(3)])
    c = maker.batch(starts, [np.random.default_rng([8, i]) for i in range(3)])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1].rotmats, b[1].rotmats)
    assert not torch.equal(a[0], c[0])


def test_inputs_are_what_the_video_pipeline_builds(files):
    """Without augmentation the inputs are `keypoints.model_keypoints` (the pipeline's per-frame inputs, where
    that helper exists) normalised per clip."""
    from diffmesh import keypoints

    d = files[1]
    for channels in ("2d", "2d+vis", "2d+3d"):
        x, _ = RenderClipMaker(files, F, channels=channels, augment=Augment.off()).make(T, np.random.default_rng(0))
        ref = keypoints.model_keypoints(d["mp_landmarks"][:F], d["mp_visibility"][:F], d["mp_world"][:F], channels)
        np.testing.assert_allclose(x, keypoints.normalize_clip(ref)[0], atol=1e-5)


def test_training_on_renders_with_3d_inputs_and_running_the_checkpoint(tmp_path, anny_body):
    """`diffmesh train --data renders --keypoint-inputs 2d+3d --anchor mediapipe-3d` end to end on two render files
    named after a real train and val sequence; its checkpoint reads six channels and goes through the run's model stage
    (`evaluation.renders.predict_file`: MediaPipe's world landmarks fed beside the 2D)."""
    from diffmesh.checkpoint import load_model
    from diffmesh.data.mocap import CMUMocap
    from diffmesh.evaluation.renders import predict_file
    from diffmesh.pipeline import RunSettings
    from diffmesh.train.cmu import TrainSettings, run_training
    from diffmesh.windows import model_rate

    mocap = CMUMocap()
    cache = tmp_path / "renders"
    _fake_file(cache / f"{mocap.names('train')[0]}_cam0.npz", anny_body, SHAPES[0], 0, 1.0, mocap.names("train")[0])
    _fake_file(cache / f"{mocap.names('val')[0]}_cam0.npz", anny_body, SHAPES[1], 1, 1.0, mocap.names("val")[0])
    settings = TrainSettings(data="renders", keypoint_inputs="2d+3d", anchor="mediapipe-3d", epochs=1,
                             steps_per_epoch=2, batch_size=4, val_clips=3, warmup_steps=1)
    summary = run_training(tmp_path / "run", settings, render_cache=cache, quiet=True, threads=1)
    assert np.isfinite(summary["best_val_mpjpe_mm"])
    model = load_model(tmp_path / "run" / "best.pt", anny_body, expect={"keypoint_inputs": "2d+3d"})
    assert (model.cfg.motion_form, model.adapter.joint_embed.in_features, model.cfg.anchor) == ("paper", 6, "mediapipe-3d")
    data = load_render_set(cache)[0]
    joints, valid = predict_file(model, model_rate({}), anny_body, data, RunSettings())
    assert joints.shape == (T, 17, 3) and valid.sum() > T // 2 and np.isfinite(joints[valid]).all()


def test_world_errors_are_mediapipe_minus_truth_over_windows_with_a_pose(files):
    from diffmesh.data.mixed_clips import WorldErrors

    errors = WorldErrors(files, F)
    # frames 9 and 20 have no pose: the only 16-frame windows without them start at 21..24 in each file
    assert sorted(errors.starts) == [*range(21, 25), *range(T + 21, T + 25)]
    d = files[1]
    truth = d["joints_cam"] - d["joints_cam"][:, :1]
    np.testing.assert_allclose(errors.errors[T + 30], world_h36m(d["mp_world"][30]) - truth[30], atol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(8):
        e = errors.draw(rng)
        windows = [errors.errors[s:s + F] for s in errors.starts]
        mirrored = [w[:, list(H36M_FLIP)] * np.array([-1.0, 1.0, 1.0]) for w in windows]
        assert e.shape == (F, 17, 3) and any(np.allclose(e, w, atol=1e-6) for w in windows + mirrored)


def test_mixed_batches_hold_the_share_of_synthetic_clips_in_the_render_clips_layout(files, anny_body):
    """`--synthetic-share`: the synthetic clips of a batch read like the render clips for every input mode
    (2d: confidence 1; 2d+3d: the truth plus a window of MediaPipe's 3D error) and share their targets' layout."""
    from diffmesh.data.mixed_clips import MixedSampler, WorldErrors
    from diffmesh.data.prepare import FitSet
    from diffmesh.data.synthetic import ClipMaker, build_motion_bank, window_starts

    rotmats, translation = _motion(np.random.default_rng(5), SHAPES[0])
    fits = FitSet(rotmats, translation, np.repeat(SHAPES[0][None], T, 0), np.zeros(T, bool), ["00_02"],
                  np.array([0]), np.array([T]), ["00"])
    bank = build_motion_bank(anny_body, fits)
    synthetic = ClipMaker(bank, F)
    for channels, c in (("2d", 3), ("2d+vis", 3), ("2d+3d", 6)):
        renders = RenderClipMaker(files, F, channels=channels, body=anny_body)
        errors = WorldErrors(files, F) if channels == "2d+3d" else None
        mixed = MixedSampler(renders, renders.window_starts(), synthetic, window_starts(bank, F, 1), 0.25, channels,
                             errors)
        x, t = mixed.sample(np.random.default_rng(3), 8)
        assert x.shape == (8, F, 17, c) and torch.isfinite(x).all() and t.rotmats.shape == (8, F, 24, 3, 3)
        assert t.shape.shape == (8, 6) and t.valid.dtype == torch.bool
        y, u = mixed.sample(np.random.default_rng(3), 8)
        assert torch.equal(x, y) and torch.equal(t.joints3d, u.joints3d)
        syn = x[6:]                                    # the last round(0.25 * 8) = 2 clips are the synthetic ones
        if channels == "2d":
            assert (syn[..., 2] == 1).all()
        if channels == "2d+3d":
            err = (syn[..., 3:] - t.joints3d[6:]).numpy()
            windows = [errors.errors[s:s + F] for s in errors.starts]
            windows += [w[:, list(H36M_FLIP)] * np.array([-1.0, 1.0, 1.0]) for w in windows]
            assert all(any(np.allclose(e, w, atol=1e-5) for w in windows) for e in err)
    with pytest.raises(ValueError, match="between 0 and 1"):
        MixedSampler(renders, renders.window_starts(), synthetic, window_starts(bank, F, 1), 1.5, "2d")


def test_training_on_renders_mixed_with_synthetic_clips(tmp_path, anny_body, test_split_fits):
    """`diffmesh train --data renders --keypoint-inputs 2d+3d --synthetic-share 0.5 --shape-std 0.5` end to end: the synthetic
    clips come from the real fits of the render file's sequence (a test-split one, whose fits the suite has)."""
    from diffmesh.data.mocap import CMUMocap
    from diffmesh.train.cmu import TrainSettings, run_training

    name = CMUMocap().names("test")[0]
    cache = tmp_path / "renders"
    _fake_file(cache / f"{name}_cam0.npz", anny_body, SHAPES[0], 0, 1.0, name)
    settings = TrainSettings(data="renders", keypoint_inputs="2d+3d", synthetic_share=0.5, shape_std=0.5, epochs=1,
                             steps_per_epoch=2, batch_size=4, val_clips=2, warmup_steps=1)
    summary = run_training(tmp_path / "run", settings, render_cache=cache, cache_dir=test_split_fits, quiet=True,
                           threads=1, splits=("test", "test"), sequences=[name])
    assert np.isfinite(summary["best_val_mpjpe_mm"])
    with pytest.raises(Exception, match="--data renders"):
        run_training(tmp_path / "run2", TrainSettings(synthetic_share=0.5), quiet=True, threads=1)
