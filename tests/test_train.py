"""The model can learn: a few hundred steps on real CMU clips rendered through the Anny body."""

import pytest
import torch

from diffmesh.data.mocap import fit_anny
from diffmesh.data.synthetic import render_keypoint_clip
from diffmesh.losses import Targets
from diffmesh.model import build_model, model_config
from diffmesh.train import seed_everything, train_step

CLIPS = [("14_06", 0), ("05_02", 30), ("16_15", 0), ("49_03", 60)]   # jumping jacks, dance, walk, jump


@pytest.fixture(scope="module")
def real_batch(anny_body, mocap):
    inputs, targets = [], []
    for i, (name, start) in enumerate(CLIPS):
        fit = fit_anny(anny_body, mocap.clip(name, start, 16), iterations=150)
        assert fit.error_mm.mean() < 40, f"body fit of {name} is off by {fit.error_mm.mean():.0f} mm"
        kp, tg = render_keypoint_clip(anny_body, fit.rotmats, fit.translation, fit.shape, yaw=0.8 * i)
        inputs.append(kp)
        targets.append(tg)
    cat = lambda k: torch.cat([getattr(t, k) for t in targets])  # noqa: E731
    return torch.stack(inputs), Targets(cat("rotmats"), cat("shape"), cat("joints3d"), cat("keypoints2d"), cat("valid"))


@pytest.mark.slow
def test_overfit_drives_loss_down_10x(anny_body, real_batch):
    x, targets = real_batch
    assert x.shape == (4, 16, 17, 3)
    g = seed_everything(0)
    model = build_model(model_config("tiny"), anny_body)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = [train_step(model, anny_body, opt, x, targets, generator=g) for _ in range(300)]
    first = sum(l.total.item() for l in losses[:5]) / 5
    last = sum(l.total.item() for l in losses[-10:]) / 10
    assert last * 10 <= first, f"loss went from {first:.3f} to {last:.3f}"
    assert losses[-1].terms["joints3d"] < 0.25 * losses[0].terms["joints3d"]
