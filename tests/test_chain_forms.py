"""Issue 14's changes to the chain and its inputs: beta back in the reverse step (the paper's form), the old form
kept for old checkpoints, the auxiliary loss on the frames' conditions, the keypoint input modes and the one
camera model of training and test clips."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from diffmesh.checkpoint import load_model, save_checkpoint
from diffmesh.errors import CheckpointError, SettingsError
from diffmesh.keypoints import mediapipe_to_h36m, model_keypoints, world_h36m
from diffmesh.losses import LossWeights, Targets, diffmesh_loss
from diffmesh.model import build_model, model_config


def _model(body, **overrides):
    torch.manual_seed(0)
    model = build_model(model_config("tiny", **overrides), body).eval()
    with torch.no_grad():                              # a denoiser whose output is not ~0, so steps move
        for p in model.denoiser.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _features(model, x):
    with torch.no_grad():
        return model(x).frame_features


def test_beta_cancels_in_the_residual_form_and_acts_in_the_paper_form(anny_body):
    x = torch.randn(2, 16, 17, 3)
    moved = {}
    for form in ("residual", "paper"):
        model = _model(anny_body, motion_form=form)
        before = _features(model, x)
        model.betas.mul_(4.0)                          # the schedule changed, the weights not
        after = _features(model, x)
        moved[form] = ((after - before).norm() / before.norm()).item()
    # residual: (x - sqrt(b) * (delta / sqrt(b))) / sqrt(1 - b) changes only through sqrt(1 - b), about 2 % over
    # the chain; the paper's step doubles with sqrt(4 beta)
    assert moved["residual"] < 0.05 and moved["paper"] > 5 * moved["residual"], moved


def test_paper_form_bounds_each_step(anny_body):
    """Eq. 7's step moves the state by sqrt(beta_i) m_i (at most 3 % of the motion's size here); the residual
    form's step is the network output divided by sqrt(beta_i), 30-100x larger."""
    x = torch.randn(1, 16, 17, 3)
    steps = {}
    for form in ("paper", "residual"):
        model = _model(anny_body, motion_form=form)
        states = []
        step_fn = model.motion_step

        def spy(xs, c, step, fn=step_fn):
            states.append(xs)
            return fn(xs, c, step)

        with torch.no_grad():
            b = model.adapter(x).reshape(1, 16, -1)
            c = model.generator(b).view(1, model.cfg.num_steps, 17, -1)
            from diffmesh import diffusion
            diffusion.motion_reverse(model.x_end.expand(1, 17, -1), c, spy, model.betas)
        steps[form] = max((a - b).norm().item() for a, b in zip(states[1:], states[:-1]))
    assert steps["residual"] > 10 * steps["paper"]


# The config fields added since the first shipped weights (issues 12-14); a checkpoint without them is old.
NEWER_FIELDS = ("motion_form", "keypoint_inputs", "anchor", "denoiser_design", "refine", "refine_dim",
                "adapter_rep_dim", "norm_eps")


def test_old_checkpoints_load_in_the_form_they_were_trained_with(anny_body, tmp_path):
    # a DiffMesh checkpoint written before them (as the first shipped ones were) reads as residual, 2d+vis
    old = _model(anny_body, motion_form="residual")
    save_checkpoint(tmp_path / "old.pt", old)
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    payload["config"] = {k: v for k, v in payload["config"].items() if k not in NEWER_FIELDS}
    torch.save(payload, tmp_path / "old.pt")
    again = load_model(tmp_path / "old.pt", anny_body)
    assert (again.cfg.motion_form, again.cfg.keypoint_inputs, again.cfg.anchor) == ("residual", "2d+vis", "none")
    x = torch.randn(1, 16, 17, 3)
    with torch.no_grad():
        assert torch.equal(again(x).rotmats, old(x).rotmats)
    # a new checkpoint keeps its own fields
    model = _model(anny_body, keypoint_inputs="2d+3d")
    save_checkpoint(tmp_path / "new.pt", model)
    again = load_model(tmp_path / "new.pt", anny_body)
    assert (again.cfg.motion_form, again.cfg.keypoint_inputs) == ("paper", "2d+3d")
    with pytest.raises(CheckpointError, match="keypoint_inputs='2d\\+3d'.*pass a checkpoint trained with"):
        load_model(tmp_path / "new.pt", anny_body, expect={"keypoint_inputs": "2d+vis"})


def test_keypoint_input_modes(anny_body):
    with pytest.raises(SettingsError, match="keypoint_inputs must be one of"):
        model_config("tiny", keypoint_inputs="3d")
    model = _model(anny_body, keypoint_inputs="2d+3d")
    assert model(torch.randn(1, 16, 17, 6)).rotmats.shape == (1, 16, 24, 3, 3)
    with pytest.raises(ValueError, match=r"\(B, 16, 17, 6\) \(2d\+3d keypoints\)"):
        model(torch.randn(1, 16, 17, 3))

    rng = np.random.default_rng(0)
    T = 5
    lm, vis, world = rng.uniform(0, 500, (T, 33, 2)), rng.uniform(0, 1, (T, 33)), rng.normal(0, 0.5, (T, 33, 3))
    lm[2], vis[2], world[2] = np.nan, np.nan, np.nan               # a frame without a pose
    plain = mediapipe_to_h36m(np.nan_to_num(lm), np.nan_to_num(vis))
    two = model_keypoints(lm, vis, world, "2d")
    assert two.shape == (T, 17, 3) and set(np.unique(two[..., 2])) == {0.0, 1.0} and not two[2, :, 2].any()
    np.testing.assert_array_equal(model_keypoints(lm, vis, world, "2d+vis"), plain)
    three = model_keypoints(lm, vis, world, "2d+3d")
    assert three.shape == (T, 17, 6) and not three[2].any()
    # the pelvis is the mid-hips landmark and every joint is relative to it; the left wrist is landmark 15
    np.testing.assert_allclose(three[0, 0, 3:], 0.0, atol=1e-7)
    np.testing.assert_allclose(three[0, 13, 3:], world[0, 15] - (world[0, 23] + world[0, 24]) / 2, atol=1e-6)
    np.testing.assert_allclose(world_h36m(world[:1])[0, 13], three[0, 13, 3:], atol=1e-6)


def test_auxiliary_loss_compares_the_frames_conditions_only(anny_body):
    model = _model(anny_body)
    x = torch.randn(1, 16, 17, 3)
    out = model(x)
    K, S = model.cfg.num_bones, model.cfg.num_shape
    t = Targets(torch.eye(3).expand(1, 16, K, 3, 3), torch.zeros(1, S), torch.zeros(1, 16, 17, 3),
                torch.zeros(1, 16, 17, 2), torch.ones(1, 16, dtype=torch.bool))
    frames = diffmesh_loss(out, t, anny_body, LossWeights(aux_targets="frames")).terms["aux"]
    every = diffmesh_loss(out, t, anny_body, LossWeights(aux_targets="all")).terms["aux"]
    pred, target = out.predicted_conditions, out.target_conditions
    assert frames == pytest.approx((pred[:, :16] - target[:, :16]).square().mean().item(), rel=1e-5)
    assert every == pytest.approx((pred - target).square().mean().item(), rel=1e-5)
    assert frames != pytest.approx(every, rel=1e-3)


def test_training_cameras_follow_the_sequence_as_test_cameras_do(anny_body, test_split_fits):
    from diffmesh.data.prepare import load_fits
    from diffmesh.data.synthetic import ClipMaker, NoiseModel, build_motion_bank, sequence_camera

    bank = build_motion_bank(anny_body, load_fits("test", cache_dir=test_split_fits))
    s = int(np.argmax(bank.seq_len))
    a, n = int(bank.seq_start[s]), int(bank.seq_len[s])
    start = a + n - 16                                   # the last window of the longest sequence
    maker = ClipMaker(bank, 16, NoiseModel(enabled=False))
    cam = maker.draw_camera(start, np.random.default_rng(3))
    want = sequence_camera(np.random.default_rng(3), bank.joints[a:a + n, 0])
    np.testing.assert_allclose(cam.position, want.position)
    clip = ClipMaker(bank, 16, NoiseModel(enabled=False), camera_model="clip")
    d_seq = [np.linalg.norm(maker.draw_camera(start, np.random.default_rng(i)).position[:2]
                            - bank.joints[a:a + n, 0, :2].mean(0)) for i in range(20)]
    d_clip = [np.linalg.norm(clip.draw_camera(start, np.random.default_rng(i)).position[:2]
                             - bank.joints[start:start + 16, 0, :2].mean(0)) for i in range(20)]
    assert np.mean(d_seq) > np.mean(d_clip)              # the sequence camera stands back by the path's reach
    with pytest.raises(SettingsError, match="unknown camera model"):
        ClipMaker(bank, 16, camera_model="orbit")


def test_synthetic_eval_refuses_a_3d_input_checkpoint_in_one_line(anny_body, tmp_path):
    save_checkpoint(tmp_path / "mp3d.pt", _model(anny_body, keypoint_inputs="2d+3d"))
    r = subprocess.run([sys.executable, "-m", "diffmesh.cli", "eval", "--data", "synthetic", str(tmp_path / "mp3d.pt")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "--data renders" in r.stderr, r.stderr
