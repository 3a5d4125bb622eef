"""Anny -> SMPL retargeting on a synthetic SMPL file of the real format whose skeleton has human proportions.

The synthetic SMPL is built from Anny's default reference skeleton mapped into SMPL's canonical axes (Y up, facing
+Z), then made to differ the way the real one does: arms raised to a T pose, the pelvis joint 8 cm above the hip
joints, everything 7 % smaller (its first shape direction scales the body, so the betas fit has to find it). The
checks compare SMPL's own forward pass (full skinning code path of `SMPLBody`) with Anny's own bone heads
(`all_bone_heads`), independently of the joints-only kinematics inside the retargeting.
"""

import pickle
import time

import numpy as np
import pytest
import roma
import scipy.sparse
import torch

from diffmesh.body.base import camera_upright_root
from diffmesh.body.retarget import SMPL_TO_ANNY, SMPL_TO_ANNY_AXES, rest_fit_table, retarget_anny_to_smpl
from diffmesh.body.smpl import SMPL_BONE_NAMES, SMPLBody

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
MATCHED = [SMPL_BONE_NAMES.index(name) for name, _ in SMPL_TO_ANNY]


def anny_targets(anny, rotmats, shapes):
    """(T, 23, 3) Anny points of the matched SMPL joints, from Anny's full kinematics (root head at the origin)."""
    heads = anny.all_bone_heads(rotmats, shapes)
    heads = heads - heads[:, anny.bone_labels.index("root")][:, None]
    labels = anny.bone_labels
    return torch.stack([heads[:, [labels.index(lab) for lab in labs]].mean(1) for _, labs in SMPL_TO_ANNY], 1)


def write_human_smpl(anny, folder, seed=0):
    """A SMPL_NEUTRAL.pkl + J_regressor_h36m.npy of the real format with a human skeleton (see the module doc)."""
    rng = np.random.default_rng(seed)
    A = np.array(SMPL_TO_ANNY_AXES)
    ref = anny_targets(anny, torch.eye(3).expand(1, 24, 3, 3), torch.zeros(1, 6))[0].double().numpy()
    J = np.zeros((24, 3))
    J[MATCHED] = ref @ A                                        # A^T p: Anny canonical -> SMPL canonical
    name = {n: i for i, n in enumerate(SMPL_BONE_NAMES)}
    J[0] = (J[name["left_hip"]] + J[name["right_hip"]]) / 2 + [0.0, 0.08, -0.01]
    for side, sign in (("left", 1.0), ("right", -1.0)):         # arms to a T pose about the shoulder (roll about z)
        s = J[name[f"{side}_shoulder"]]
        d = J[name[f"{side}_elbow"]] - s
        angle = -np.arctan2(d[1], abs(d[0])) * sign
        c, si = np.cos(angle), np.sin(angle)
        Rz = np.array([[c, -si, 0.0], [si, c, 0.0], [0.0, 0.0, 1.0]])
        for j in ("elbow", "wrist", "hand"):
            J[name[f"{side}_{j}"]] = s + Rz @ (J[name[f"{side}_{j}"]] - s)
    J *= 0.93
    V = 6890
    group = np.arange(V) % 24
    v_template = J[group] + rng.normal(0, 0.03, (V, 3)) * (np.arange(V) >= 24)[:, None]   # vertex j < 24 is joint j
    shapedirs = rng.normal(0, 0.003, (V, 3, 10))
    shapedirs[:, :, 0] = 0.1 * v_template                     # beta 0: +10 % size per unit
    J_reg = scipy.sparse.csc_matrix((np.ones(24), (np.arange(24), np.arange(24))), shape=(24, V))
    weights = np.eye(24)[group]
    data = {"v_template": v_template, "shapedirs": shapedirs, "posedirs": rng.normal(0, 0.001, (V, 3, 207)),
            "J_regressor": J_reg, "weights": weights,
            "kintree_table": np.array([[4294967295] + SMPL_PARENTS[1:], list(range(24))]),
            "f": rng.integers(0, V, (13776, 3)).astype(np.uint32), "bs_type": "lrotmin", "bs_style": "lbs"}
    (folder / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(data, protocol=2))
    h36m = rng.random((17, V)) * (rng.random((17, V)) < 0.01)
    np.save(folder / "J_regressor_h36m.npy", h36m / h36m.sum(1, keepdims=True))
    return SMPLBody(folder)


@pytest.fixture(scope="module")
def smpl(anny_body, tmp_path_factory):
    return write_human_smpl(anny_body, tmp_path_factory.mktemp("smpl"))


def smpl_error_mm(smpl, result, targets):
    """Per-frame mean distance (mm) of SMPL's own forward joints, placed by `pelvis_offset`, to the targets."""
    T = result.rotmats.shape[0]
    heads = smpl(result.rotmats, result.betas.expand(T, -1), with_vertices=False).bone_heads
    return ((heads[:, MATCHED] + result.pelvis_offset[:, None] - targets).norm(dim=-1).mean(1) * 1000)


def assert_rotations(R):
    eye = torch.eye(3).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(R.shape[:-2]), atol=1e-4, rtol=0)


def test_reference_pose_retargets_exactly(anny_body, smpl):
    rot = torch.eye(3).repeat(2, 24, 1, 1)
    rot[:, 0] = camera_upright_root()
    shapes = torch.zeros(2, 6)
    result = retarget_anny_to_smpl(anny_body, rot, shapes, smpl)
    assert result.rotmats.shape == (2, 24, 3, 3) and result.betas.shape == (10,)
    assert result.pelvis_offset.shape == (2, 3) and result.frame_error_mm.shape == (2,)
    assert_rotations(result.rotmats)
    errors = smpl_error_mm(smpl, result, anny_targets(anny_body, rot, shapes))
    assert float(errors.max()) < 5.0 and result.joint_error_mm < 5.0, (errors, result.joint_error_mm)
    assert abs(float(result.betas[0]) - (1 / 0.93 - 1) / 0.1) < 0.1          # the size difference was found
    # SMPL's pelvis sits above Anny's root (camera y is down), the body faces the camera (SMPL +z -> camera -z).
    assert -0.1 < float(result.pelvis_offset[0, 1]) < -0.05
    torch.testing.assert_close(result.rotmats[0, 0] @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, -1.0]),
                               atol=0.05, rtol=0)
    table = rest_fit_table(anny_body, smpl)
    assert [row[0] for row in table] == [name for name, _ in SMPL_TO_ANNY] and max(row[3] for row in table) < 1.0


def test_random_motion(anny_body, smpl):
    g = torch.Generator().manual_seed(0)
    T = 32
    rot = roma.rotvec_to_rotmat(torch.randn(T, 24, 3, generator=g) * 0.3)
    rot[:, 0] = roma.rotvec_to_rotmat(torch.randn(T, 3, generator=g)) @ camera_upright_root()
    # one person, two clips whose shapes differ a little (as the network's per-clip shapes do)
    shapes = (torch.randn(1, 6, generator=g) * 0.7 + torch.randn(2, 6, generator=g) * 0.1).repeat_interleave(T // 2, 0)
    t0 = time.perf_counter()
    result = retarget_anny_to_smpl(anny_body, rot, shapes, smpl)
    seconds = time.perf_counter() - t0
    assert_rotations(result.rotmats)
    errors = smpl_error_mm(smpl, result, anny_targets(anny_body, rot, shapes))
    print(f"random motion: {float(errors.mean()):.2f} mm mean, {float(errors.max()):.2f} mm worst frame, "
          f"{seconds * 1000 / T:.1f} ms/frame")
    assert float(errors.mean()) < 15.0
    torch.testing.assert_close(errors.mean(), torch.tensor(result.joint_error_mm), atol=0.5, rtol=0)


def test_real_motion_from_the_mocap_fits(anny_body, smpl):
    """CMU motion fitted to Anny (`diffmesh prepare`'s cache; skipped where it has not run)."""
    from diffmesh.data.prepare import default_cache_dir, subject_file

    path = subject_file(default_cache_dir(), "13")
    if not path.is_file():
        pytest.skip(f"no Anny fits of CMU subject 13 at {path} (made by `diffmesh prepare`)")
    fits = np.load(path)
    rot = torch.from_numpy(fits["rotmats"][:400:2].copy())
    shapes = torch.from_numpy(fits["shape"])[None].expand(len(rot), -1)
    result = retarget_anny_to_smpl(anny_body, rot, shapes, smpl)
    errors = smpl_error_mm(smpl, result, anny_targets(anny_body, rot, shapes))
    print(f"CMU subject 13: {float(errors.mean()):.2f} mm mean, {float(errors.max()):.2f} mm worst frame")
    assert float(errors.mean()) < 8.0
    assert_rotations(result.rotmats)


def test_more_iterations_do_not_hurt_and_zero_iterations_is_the_kinematic_start(anny_body, smpl):
    g = torch.Generator().manual_seed(1)
    rot = roma.rotvec_to_rotmat(torch.randn(8, 24, 3, generator=g) * 0.3)
    rot[:, 0] = camera_upright_root()
    shapes = torch.zeros(8, 6)
    start = retarget_anny_to_smpl(anny_body, rot, shapes, smpl, iterations=0)
    refined = retarget_anny_to_smpl(anny_body, rot, shapes, smpl)
    assert_rotations(start.rotmats)
    assert refined.joint_error_mm <= start.joint_error_mm + 1e-3
    torch.testing.assert_close(start.betas, refined.betas)


def test_inference_mode_inputs(anny_body, smpl):
    with torch.inference_mode():
        rot = torch.eye(3).repeat(3, 24, 1, 1)
        rot[:, 0] = camera_upright_root()
        result = retarget_anny_to_smpl(anny_body, rot, torch.zeros(3, 6), smpl, iterations=2, rest_iterations=5,
                                       valid=torch.tensor([True, False, True]))
    assert result.rotmats.shape == (3, 24, 3, 3)


def test_bad_inputs_are_one_line_value_errors(anny_body, smpl):
    rot = torch.eye(3).repeat(4, 24, 1, 1)
    cases = [
        ((rot, torch.zeros(3, 6)), r"4 frames of rotations but 3 of shapes"),
        ((rot[:, :23], torch.zeros(4, 6)), r"Anny rotations must have shape \(T, 24, 3, 3\)"),
        ((rot, torch.zeros(4, 10)), r"Anny shapes must have shape \(T, 6\)"),
        ((rot[:0], torch.zeros(0, 6)), "no frames"),
        ((rot, torch.full((4, 6), float("nan"))), "NaN"),
    ]
    with pytest.raises(ValueError, match="valid must be a"):
        retarget_anny_to_smpl(anny_body, rot, torch.zeros(4, 6), smpl, valid=torch.zeros(4, dtype=torch.bool))
    for (r, s), message in cases:
        with pytest.raises(ValueError, match=message) as info:
            retarget_anny_to_smpl(anny_body, r, s, smpl)
        assert "\n" not in str(info.value)
