"""Ground truth from mocap: the fit, its cache, the keypoint layout and the synthetic 2D clips."""

import numpy as np
import pytest
import torch

from diffmesh.body.base import H36M_FLIP
from diffmesh.data.fitting import JOINT_GROUPS
from diffmesh.data.mocap import CMUMocap, fit_anny
from diffmesh.data.prepare import FIT_FORMAT, check_fit_file, load_fits, run_prepare, subject_file
from diffmesh.data.synthetic import (ANNY_LEFT_EAR_VERTEX, ANNY_NOSE_VERTEX, ANNY_RIGHT_EAR_VERTEX, ClipMaker,
                                     NoiseModel, build_motion_bank, fixed_clips, random_camera, window_starts)
from diffmesh.errors import DataError, DiffMeshError
from diffmesh.keypoints import H36M_FROM_MEDIAPIPE, mediapipe_to_h36m, normalize_clip
from diffmesh.rotations import rotvec_to_rotmat


def test_fast_kinematics_equal_annys_own(anny_body):
    torch.manual_seed(0)
    R = rotvec_to_rotmat(torch.randn(5, anny_body.num_bones, 3) * 0.6)
    shape = torch.randn(5, anny_body.num_shape)
    full = anny_body(R, shape, with_vertices=True)          # Anny's own kinematics and skinning
    fast = anny_body(R, shape, with_vertices=False)
    torch.testing.assert_close(fast.joints, full.joints, atol=1e-5, rtol=0)
    clips = anny_body.clip_joints(R[:4].view(2, 2, *R.shape[1:]), shape[:2])
    ref = anny_body(R[:4], shape[:2].repeat_interleave(2, 0), with_vertices=False).joints.view(2, 2, 17, 3)
    torch.testing.assert_close(clips, ref, atol=1e-6, rtol=0)


def test_face_landmark_vertices_sit_where_mediapipe_puts_them(anny_body):
    rest = anny_body.rest_model(torch.zeros(1, anny_body.num_shape))
    v, heads = rest["vertices"][0], rest["heads"][0]
    labels = list(anny_body.bone_labels)
    eye_l, eye_r = heads[labels.index("eye.L")], heads[labels.index("eye.R")]
    nose, ear_l, ear_r = v[ANNY_NOSE_VERTEX], v[ANNY_LEFT_EAR_VERTEX], v[ANNY_RIGHT_EAR_VERTEX]
    assert nose[1] < eye_l[1] - 0.02 and abs(nose[0]) < 0.01                 # in front of the eyes, centred
    assert 0.01 < eye_l[2] - nose[2] < 0.07                                  # below the eyes
    assert ear_l[0] > eye_l[0] + 0.03 and ear_r[0] < eye_r[0] - 0.03        # outside the eyes, left is +x
    assert abs(ear_l[0] + ear_r[0]) < 0.005 and ear_l[1] > eye_l[1] + 0.05   # symmetric, behind the eyes


def test_mediapipe_mapping_against_hand_computed_joints():
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 500, (2, 33, 2))
    conf = rng.uniform(0.2, 1, (2, 33))
    kp = mediapipe_to_h36m(lm, conf)
    assert kp.shape == (2, 17, 3)
    np.testing.assert_allclose(kp[:, 0, :2], (lm[:, 23] + lm[:, 24]) / 2, rtol=1e-5)          # pelvis
    np.testing.assert_allclose(kp[:, 8, :2], (lm[:, 11] + lm[:, 12]) / 2, rtol=1e-5)          # thorax
    np.testing.assert_allclose(kp[:, 7, :2], (kp[:, 0, :2] + kp[:, 8, :2]) / 2, rtol=1e-5)    # spine
    np.testing.assert_allclose(kp[:, 13, :2], lm[:, 15], rtol=1e-5)                            # left wrist
    np.testing.assert_allclose(kp[:, 0, 2], np.minimum(conf[:, 23], conf[:, 24]), rtol=1e-6)
    # the mapping is mirror-consistent: swapping MediaPipe's left and right swaps Human3.6M's
    mp_flip = list(range(33))
    for a, b in ((7, 8), (11, 12), (13, 14), (15, 16), (23, 24), (25, 26), (27, 28)):
        mp_flip[a], mp_flip[b] = b, a
    np.testing.assert_allclose(mediapipe_to_h36m(lm[:, mp_flip], conf[:, mp_flip]), kp[:, list(H36M_FLIP)], rtol=1e-5)
    assert len(H36M_FROM_MEDIAPIPE) == 17


def test_normalisation_maps_the_clip_box_to_unit_square_and_back():
    rng = np.random.default_rng(1)
    kp = np.concatenate([rng.uniform([100, 200], [400, 900], (16, 17, 2)), np.ones((16, 17, 1))], -1)
    kp[3, 4, 2] = 0.0
    kp[3, 4, :2] = [5000, 5000]                                              # an unconfident outlier is ignored
    norm, centre, scale = normalize_clip(kp.astype(np.float32))
    good = kp[..., 2] > 0
    assert np.isclose(np.abs(norm[..., :2][good]).max(), 1.0, atol=1e-5)
    np.testing.assert_allclose(norm[..., :2] * scale + centre, kp[..., :2], rtol=1e-4)
    np.testing.assert_array_equal(norm[..., 2], kp[..., 2])


def test_fit_of_a_real_clip_is_ground_truth_grade(anny_body, mocap):
    clip = mocap.clip("14_06", 200, 48)
    fit = fit_anny(anny_body, clip, iterations=400)
    assert fit.error_mm.mean() < 12, f"fit error {fit.error_mm.mean():.1f} mm"
    assert fit.rotmats.shape == (48, anny_body.num_bones, 3, 3)


def test_prepare_caches_atomically_and_refuses_stale_files(tmp_path, mocap, anny_body):
    cache = tmp_path / "fits"
    report = run_prepare(subjects=["55"], cache_dir=cache, subject_iterations=40, sequence_iterations=40, quiet=True)
    path = subject_file(cache, "55")
    assert path.exists() and report["fitted_now"] == ["55"]
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]        # no temporary file left behind
    assert set(report["error"]["test"]) >= {f"{g}_mean_mm" for g in JOINT_GROUPS}
    again = run_prepare(subjects=["55"], cache_dir=cache, quiet=True)
    assert again["fitted_now"] == []                                         # complete files are reused
    fits = load_fits("test", cache_dir=cache, sequences=mocap.sequences_of("55"))
    assert len(fits.glitch) == sum(fits.seq_len) and fits.rotmats.shape[1:] == (anny_body.num_bones, 3, 3)
    with pytest.raises(DataError, match="run `diffmesh prepare"):
        load_fits("test", cache_dir=cache)                                   # subjects 13 and 35 are missing
    data = dict(np.load(path))
    data["format"] = np.int64(FIT_FORMAT - 1)
    np.savez(path, **data)
    with pytest.raises(DataError, match="another diffmesh version.*--force"):
        check_fit_file(path, mocap.md5(), anny_body.version)
    path.write_bytes(b"truncated")
    with pytest.raises(DataError, match="unreadable"):
        check_fit_file(path, mocap.md5(), anny_body.version)


def test_bad_mocap_files_get_one_line(tmp_path):
    with pytest.raises(DiffMeshError, match="not found"):
        CMUMocap(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        CMUMocap(bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="lacks key"):
        CMUMocap(tmp_path / "other.npz")


def test_empty_split_is_refused(mocap):
    with pytest.raises(DataError, match="empty"):
        mocap.names("holdout")


@pytest.fixture(scope="module")
def test_bank(anny_body, test_split_fits):
    return build_motion_bank(anny_body, load_fits("test", sequences=["13_11", "35_01", "55_01"]))


def test_synthetic_clips_are_consistent_with_the_body(anny_body, test_bank):
    maker = ClipMaker(test_bank, 16, NoiseModel(enabled=False))
    starts, rngs, cams = fixed_clips(test_bank, 16, seed=0, limit=6)
    x, t = maker.batch(starts, rngs, cams)
    assert x.shape == (6, 16, 17, 3) and t.rotmats.shape == (6, 16, anny_body.num_bones, 3, 3)
    # targets in camera axes are the body's own joints for the camera-frame root rotation
    joints = anny_body.clip_joints(t.rotmats, t.shape)
    torch.testing.assert_close(joints - joints[:, :, :1], t.joints3d, atol=1e-5, rtol=0)
    # the camera looks at the person: pelvis in front of it, the clip box normalised
    assert x[..., :2].abs().max() <= 1.0 + 1e-5 and (x[..., 2] == 1).all()
    # exact keypoints match the targets' 2D where both are the same joint (knees and elbows are bone heads)
    for j in (2, 5, 12, 15):
        torch.testing.assert_close(x[:, :, j, :2], t.keypoints2d[:, :, j], atol=1e-4, rtol=0)


def test_shape_augmentation_poses_the_clip_on_another_body(anny_body, test_bank):
    """`ShapePool`: a clip wearing a pool body has that body's shape as its target, its joints are the body's own
    (full Anny forward) for the clip's rotations, and its nose landmark is that body's posed nose vertex."""
    from diffmesh.data.synthetic import ShapePool

    pool = ShapePool(anny_body, std=0.5, size=8)
    assert pool.shapes.shape == (8, anny_body.num_shape) and pool.shapes.std() > 0.3
    maker = ClipMaker(test_bank, 16, NoiseModel(enabled=False), shapes=pool, shape_prob=1.0)
    starts, rngs, cams = fixed_clips(test_bank, 16, seed=0, limit=4)
    x, t = maker.batch(starts, rngs, cams)
    pooled = {tuple(np.round(s, 6)) for s in pool.shapes}
    assert all(tuple(np.round(s, 6)) in pooled for s in t.shape.numpy())
    joints = anny_body.clip_joints(t.rotmats, t.shape)
    torch.testing.assert_close(joints - joints[:, :, :1], t.joints3d, atol=1e-5, rtol=0)
    for j in (2, 5, 12, 15):                     # exact 2D of bone-head joints = the targets' 2D of the new body
        torch.testing.assert_close(x[:, :, j, :2], t.keypoints2d[:, :, j], atol=1e-4, rtol=0)
    sl = slice(int(starts[0]), int(starts[0]) + 16)
    rot = torch.as_tensor(test_bank.rotmats[sl])
    joints, landmarks = pool.pose(3, test_bank.rotmats[sl], test_bank.joints[sl, 0])
    full = anny_body(rot, torch.as_tensor(pool.shapes[3])[None].expand(16, -1), with_vertices=True)
    offset = test_bank.joints[sl, 0] - full.joints[:, 0].numpy()             # the forward pass puts the root at 0
    np.testing.assert_allclose(landmarks[:, 0], full.vertices[:, ANNY_NOSE_VERTEX].numpy() + offset, atol=2e-5)
    np.testing.assert_allclose(joints, full.joints.numpy() + offset[:, None], atol=2e-5)
    assert np.abs(joints - test_bank.joints[sl]).max() > 0.01                 # another body, another skeleton


def test_noise_model_makes_the_errors_it_promises(test_bank):
    rng = np.random.default_rng(3)
    exact = np.cumsum(rng.normal(0, 2, (200, 16, 17, 2)), 1) + 500
    noisy = np.stack([NoiseModel(occlusion=1.0, swap=1.0).apply(np.random.default_rng(i), e, 2000, 2000)
                      for i, e in enumerate(exact)])
    conf, err = noisy[..., 2], np.linalg.norm(noisy[..., :2] - exact, axis=-1)
    assert (conf == 0).any() and ((conf > 0) & (conf < 0.5)).any() and (conf > 0.8).mean() > 0.5
    assert 0.0 < np.median(err) < 0.05 * np.median(exact[..., 1].max(-1) - exact[..., 1].min(-1))
    off = NoiseModel(enabled=False).apply(rng, exact[0], 2000, 2000)
    np.testing.assert_allclose(off[..., :2], exact[0], rtol=1e-6)
    assert (off[..., 2] == 1).all()


def test_random_cameras_are_plausible(test_bank):
    centre = test_bank.joints[:, 0].mean(0)
    for i in range(50):
        cam = random_camera(np.random.default_rng(i), centre)
        np.testing.assert_allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-5)
        _, depth = cam.project(centre)
        assert 2.0 < depth < 9.0 and cam.width in (720, 1080, 1280)
        up = cam.R @ np.array([0, 0, 1.0])                 # world up points up in the image (y down), roll small
        assert up[1] < -0.7


def test_windows_stay_inside_sequences(test_bank):
    starts = window_starts(test_bank, 16, 16)
    ends = np.searchsorted(test_bank.seq_start, starts, side="right") - 1
    assert (starts + 16 <= test_bank.seq_start[ends] + test_bank.seq_len[ends]).all()


def test_noise_models_by_name_the_fitted_one_drifts_slowly_the_hand_made_one_jitters():
    import pytest

    from diffmesh.data.synthetic import noise_model
    from diffmesh.errors import SettingsError

    kp = np.tile(np.random.default_rng(0).uniform(100, 900, (1, 17, 2)), (64, 1, 1)).astype(np.float32)
    steps = {}
    for name in ("hand-made", "mediapipe"):
        noisy = np.stack([noise_model(name).apply(np.random.default_rng(s), kp, 1000, 1000) for s in range(40)])
        confident = noisy[..., 2] > 0.5
        step = np.linalg.norm(np.diff(noisy[..., :2], axis=1), axis=-1)[confident[:, 1:] & confident[:, :-1]]
        steps[name] = np.median(step)
    # MediaPipe's keypoints move little from frame to frame (docs/data.md: 0.30 % of the height against the
    # hand-made model's 1.07 %); the fitted model must keep that ordering.
    assert steps["mediapipe"] < 0.5 * steps["hand-made"]
    assert not noise_model("mediapipe", enabled=False).enabled
    with pytest.raises(SettingsError, match="unknown noise model"):
        noise_model("gaussian")
