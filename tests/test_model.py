import pytest
import torch

from diffmesh.losses import Targets
from diffmesh.model import METHODS, PRESETS, build_model, model_config
from diffmesh.train import seed_everything, train_step


def _input(cfg, B=1):
    if cfg.input == "keypoints":
        return torch.randn(B, cfg.num_frames, 17, 3)
    return torch.randn(B, cfg.num_frames, cfg.feature_dim)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("inp", ["keypoints", "features"])
def test_output_shapes(anny_body, preset, method, inp):
    cfg = model_config(preset, method=method, input=inp)
    model = build_model(cfg, anny_body).eval()
    B, f, K = 2, cfg.num_frames, anny_body.num_bones
    with torch.no_grad():
        out = model(_input(cfg, B), generator=torch.Generator().manual_seed(0))
    assert out.rotmats.shape == (B, f, K, 3, 3)
    assert out.pose6d.shape == (B, f, K, 6)
    assert out.shape.shape == (B, anny_body.num_shape)
    assert out.camera.shape == (B, f, 3)
    eye = torch.eye(3).expand(B, f, K, 3, 3)
    torch.testing.assert_close(out.rotmats @ out.rotmats.transpose(-1, -2), eye, atol=1e-4, rtol=0)
    assert out.denoiser_calls == {"diffmesh": 30, "baseline2": 30, "baseline1": 16 * 30, "perframe": 0}[method]
    if method == "diffmesh":
        assert out.predicted_conditions.shape == (B, cfg.num_steps - 1, cfg.num_tokens * cfg.token_dim)
    assert torch.isfinite(out.rotmats).all() and torch.isfinite(out.shape).all()


def test_n_smaller_than_f_is_a_clear_error():
    with pytest.raises(ValueError, match=r"N \(num_steps=10\) must be at least f \(num_frames=16\)"):
        model_config("tiny", num_steps=10)


def test_wrong_feature_size_is_a_clear_error(anny_body):
    model = build_model(model_config("tiny", input="features", feature_dim=2048), anny_body)
    with pytest.raises(ValueError, match=r"features input must have shape \(B, 16, 2048\), got \(1, 16, 1024\)"):
        model(torch.randn(1, 16, 1024))
    kp = build_model(model_config("tiny"), anny_body)
    with pytest.raises(ValueError, match="keypoints input must have shape"):
        kp(torch.randn(1, 8, 17, 3))


def test_unknown_preset_and_method():
    with pytest.raises(ValueError, match="unknown preset"):
        model_config("huge")
    with pytest.raises(ValueError, match="method must be one of"):
        model_config("tiny", method="baseline3")


def _fake_targets(body, B, f):
    rot = torch.linalg.matrix_exp(torch.randn(B, f, body.num_bones, 3, 3) * 0.1 * torch.tensor(
        [[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=torch.float32))
    shape = torch.randn(B, body.num_shape) * 0.3
    with torch.no_grad():
        joints = body(rot.flatten(0, 1), shape.repeat_interleave(f, 0), with_vertices=False).joints.view(B, f, 17, 3)
    return Targets(rot, shape, joints, joints[..., :2] * 0.5, torch.ones(B, f, dtype=torch.bool))


@pytest.mark.parametrize("method", METHODS)
def test_one_training_step_reaches_every_parameter(anny_body, method):
    g = seed_everything(0)
    cfg = model_config("tiny", method=method)
    model = build_model(cfg, anny_body)
    x = torch.randn(2, cfg.num_frames, 17, 3)
    targets = _fake_targets(anny_body, 2, cfg.num_frames)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    train_step(model, anny_body, opt, x, targets, generator=g, max_grad_norm=None)
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"parameters without gradient: {missing}"
    groups = {n.split(".")[0] for n, _ in model.named_parameters()}
    expected = {"adapter", "generator", "denoiser", "out", "head"} | ({"x_end"} if method == "diffmesh" else set())
    if method == "perframe":
        expected = {"adapter", "out", "head"}
    assert groups == expected


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_output(anny_body, method):
    outs = []
    for _ in range(2):
        seed_everything(7)
        cfg = model_config("tiny", method=method)
        model = build_model(cfg, anny_body).eval()
        x = torch.randn(1, cfg.num_frames, 17, 3)
        with torch.no_grad():
            outs.append(model(x, generator=torch.Generator().manual_seed(3)).rotmats)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_perframe_model_sees_one_frame_at_a_time(anny_body):
    seed_everything(0)
    model = build_model(model_config("tiny", method="perframe"), anny_body).eval()
    x = torch.randn(1, 16, 17, 3)
    y = x.clone()
    y[:, 5:] += 1.0                                        # change every frame but the first five
    with torch.no_grad():
        a, b = model(x).rotmats, model(y).rotmats
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-4


def test_diffmesh_output_depends_on_the_chain(anny_body):
    """The denoiser is not bypassed: perturbing it changes the per-frame output."""
    seed_everything(0)
    model = build_model(model_config("tiny"), anny_body).eval()
    x = torch.randn(1, 16, 17, 3)
    with torch.no_grad():
        a = model(x).frame_features
        model.x_end.add_(1.0)
        b = model(x).frame_features
    assert (a - b).abs().max() > 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
@pytest.mark.parametrize("method", METHODS)
def test_runs_on_cuda(anny_body, method):
    cfg = model_config("tiny", method=method)
    model = build_model(cfg, anny_body).cuda()
    body = anny_body.cuda()
    out = model(torch.randn(2, cfg.num_frames, 17, 3, device="cuda"), generator=torch.Generator("cuda").manual_seed(0))
    res = body(out.rotmats.flatten(0, 1), out.shape.repeat_interleave(cfg.num_frames, 0))
    assert res.vertices.is_cuda and res.joints.shape == (2 * cfg.num_frames, 17, 3)
    body.cpu()
