"""The landmark IK (body/landmark_ik.py): Anny's own joints, put back through the IK, land where they were."""

import torch

from diffmesh.body.landmark_ik import LIMBS, LandmarkIK
from diffmesh.keypoints import SHARED_JOINTS
from diffmesh.rotations import rotvec_to_rotmat

LIMB_AND_TRUNK = (*SHARED_JOINTS, 7, 8)     # hips, knees, ankles, shoulders, elbows, wrists, spine, thorax


def _posed(body, rotvecs: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    joints = body(rotvec_to_rotmat(rotvecs), shape, with_vertices=False).joints
    return joints - joints[:, :1]


def _ik(body, shape: torch.Tensor) -> LandmarkIK:
    skeleton = body.skeleton()
    rest = body.rest_model(shape[:1], with_vertices=False)["heads"][0, body.posed_index]
    return LandmarkIK(skeleton.names, skeleton.parents, rest)


def test_limbs_and_root_are_recovered_exactly(anny_body):
    """Root and limbs turned at random, trunk, clavicles and neck at rest: every limb and trunk joint comes back."""
    g = torch.Generator().manual_seed(0)
    rv = torch.randn(64, 24, 3, generator=g) * 0.5
    rv[:, 7:13] = 0
    rv[:, 16] = 0
    rv[:, 20:] = 0
    rv[:, 0] = torch.randn(64, 3, generator=g) * 1.5
    shape = torch.full((64, 6), 0.7)
    joints = _posed(anny_body, rv, shape)
    local, valid = _ik(anny_body, shape)(joints)
    out = anny_body(local, shape, with_vertices=False).joints
    err = (out - out[:, :1] - joints)[:, list(LIMB_AND_TRUNK)].norm(dim=-1)
    assert valid.all()
    assert err.max() < 2e-3, f"worst joint {err.max() * 1000:.1f} mm"


def test_every_limb_segment_points_at_its_target_whatever_the_trunk(anny_body):
    """All bones turned at random (trunk, clavicles and neck too, which the IK only approximates): each thigh,
    shin, upper arm and forearm still points exactly along its target, bent knees and straight ones alike."""
    g = torch.Generator().manual_seed(1)
    rv = torch.randn(128, 24, 3, generator=g) * 0.4
    rv[:64, [2, 5, 14, 18]] = 0                       # straight knees and elbows in half the frames
    shape = torch.zeros(128, 6)
    joints = _posed(anny_body, rv, shape)
    local, _ = _ik(anny_body, shape)(joints)
    out = anny_body(local, shape, with_vertices=False).joints
    for _, _, _, (a, b, c) in LIMBS:
        for p, q in ((a, b), (b, c)):
            want = torch.nn.functional.normalize(joints[:, q] - joints[:, p], dim=-1)
            got = torch.nn.functional.normalize(out[:, q] - out[:, p], dim=-1)
            angle = torch.rad2deg(torch.acos((want * got).sum(-1).clamp(-1, 1)))
            assert angle.max() < 0.2, f"segment {p}->{q}: {angle.max():.2f} degrees"


def test_frames_without_a_pose_give_the_rest_pose_and_no_nan(anny_body):
    shape = torch.zeros(1, 6)
    joints = _posed(anny_body, torch.randn(3, 24, 3) * 0.3, shape.expand(3, 6))
    joints[1] = 0                                      # MediaPipe returned nothing: the inputs are zeros
    local, valid = _ik(anny_body, shape)(joints)
    assert valid.tolist() == [True, False, True]
    assert torch.isfinite(local).all()
    assert torch.allclose(local[1], torch.eye(3).expand(24, 3, 3))
    det = torch.linalg.det(local)
    assert torch.allclose(det, torch.ones_like(det), atol=1e-4)


def _anchored(body, method: str = "diffmesh"):
    from diffmesh.model import build_model, model_config

    torch.manual_seed(0)
    return build_model(model_config("tiny", method=method, keypoint_inputs="2d+3d", anchor="mediapipe-3d"), body).eval()


def test_an_untrained_anchored_model_outputs_the_ik_of_its_3d_input(anny_body, tmp_path):
    """The refinement starts at zero, so before training the model's pose is the IK of the world joints it reads:
    posed on the body again, its limbs land on those joints; frames without a pose get the mean pose."""
    from diffmesh.checkpoint import load_model, save_checkpoint

    g = torch.Generator().manual_seed(2)
    rv = torch.randn(16, 24, 3, generator=g) * 0.4
    rv[:, 7:13], rv[:, 16], rv[:, 20:] = 0, 0, 0
    joints = _posed(anny_body, rv, torch.zeros(16, 6))
    x = torch.cat([torch.randn(1, 16, 17, 3, generator=g), joints[None]], -1)
    x[0, 5] = 0                                        # MediaPipe returned nothing in frame 5
    for method in ("diffmesh", "perframe"):
        model = _anchored(anny_body, method)
        with torch.no_grad():
            out = model(x)
        posed = anny_body(out.rotmats[0], torch.zeros(16, 6), with_vertices=False).joints
        err = (posed - posed[:, :1] - joints)[:, list(SHARED_JOINTS)].norm(dim=-1)
        assert err[torch.arange(16) != 5].max() < 2e-3, method
        assert torch.allclose(out.rotmats[0, 5], anny_body.mean_pose, atol=1e-5)
    with torch.no_grad():
        chained, _ = _anchored(anny_body).chain_from(x)
    assert torch.allclose(chained.rotmats, _anchored(anny_body)(x).rotmats, atol=1e-5)
    save_checkpoint(tmp_path / "anchored.pt", _anchored(anny_body))
    again = load_model(tmp_path / "anchored.pt", anny_body)
    assert again.cfg.anchor == "mediapipe-3d"
    with torch.no_grad():
        assert torch.allclose(again.eval()(x).rotmats, chained.rotmats, atol=1e-5)


def test_anchoring_needs_the_3d_inputs(anny_body):
    import pytest

    from diffmesh.errors import SettingsError
    from diffmesh.model import model_config

    with pytest.raises(SettingsError, match="needs --keypoint-inputs 2d\\+3d"):
        model_config("tiny", anchor="mediapipe-3d")
    with pytest.raises(SettingsError, match="anchor must be one of"):
        model_config("tiny", keypoint_inputs="2d+3d", anchor="hybrik")
