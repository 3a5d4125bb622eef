"""The model can learn: a few hundred steps on real CMU clips rendered through the Anny body."""

from pathlib import Path

import numpy as np
import pytest
import torch

from diffmesh.data.prepare import load_fits
from diffmesh.data.synthetic import ClipMaker, NoiseModel, build_motion_bank
from diffmesh.model import build_model, model_config
from diffmesh.train.loop import seed_everything, train_step


@pytest.fixture(scope="module")
def real_batch(anny_body, test_split_fits):
    """Four real CMU windows (walk, jumping jacks, dance, jump) through the synthetic-2D pipeline, no noise."""
    bank = build_motion_bank(anny_body, load_fits("test", sequences=["13_11", "35_01", "55_01", "13_30"]))
    starts = bank.seq_start + np.array([0, 30, 0, 60])
    rngs = [np.random.default_rng(i) for i in range(4)]
    return ClipMaker(bank, 16, NoiseModel(enabled=False)).batch(starts, rngs)


@pytest.mark.slow
def test_overfit_drives_loss_down_20x(anny_body, real_batch):
    # 80 steps: measured 38x on the total and 0.014x on the joints here (10x is passed by step 40)
    x, targets = real_batch
    assert x.shape == (4, 16, 17, 3)
    g = seed_everything(0)
    model = build_model(model_config("tiny"), anny_body)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = [train_step(model, anny_body, opt, x, targets, generator=g) for _ in range(80)]
    first = sum(l.total.item() for l in losses[:5]) / 5
    last = sum(l.total.item() for l in losses[-10:]) / 10
    assert last * 20 <= first, f"loss went from {first:.3f} to {last:.3f}"
    assert losses[-1].terms["joints3d"] < 0.1 * losses[0].terms["joints3d"]


def _tiny_settings(**kw):
    from diffmesh.train.cmu import TrainSettings

    return TrainSettings(**{**dict(epochs=2, steps_per_epoch=3, batch_size=4, val_clips=8, warmup_steps=2), **kw})


SMOKE_SEQUENCES = ["13_11", "13_13"]


def test_training_run_checkpoints_logs_and_resumes_exactly(tmp_path, test_split_fits, method="diffmesh"):
    from diffmesh.checkpoint import read_checkpoint
    from diffmesh.train.cmu import run_training

    kw = dict(splits=("test", "test"), sequences=SMOKE_SEQUENCES, quiet=True)
    full = run_training(tmp_path / "full", _tiny_settings(method=method), **kw)
    assert (tmp_path / "full" / "best.pt").exists() and list((tmp_path / "full" / "tb").glob("events.*"))
    assert len(full["history"]) == 2 and full["steps"] == 6
    run_training(tmp_path / "cut", _tiny_settings(method=method), stop_after_epochs=1, **kw)
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    with pytest.raises(Exception, match="--resume"):
        run_training(tmp_path / "cut", _tiny_settings(method=method), **kw)
    with pytest.raises(Exception, match="other settings"):
        run_training(tmp_path / "cut", _tiny_settings(method=method, lr=0.5), resume=True, **kw)
    resumed = run_training(tmp_path / "cut", _tiny_settings(method=method), resume=True, **kw)
    a = read_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs after resume")
    assert resumed["history"] == full["history"] or all(
        abs(x["val"]["mpjpe_mm"] - y["val"]["mpjpe_mm"]) < 1e-6 for x, y in zip(resumed["history"], full["history"]))


def test_torchrun_trains_with_ddp_on_two_processes(tmp_path, test_split_fits):
    """The same training under torchrun (gloo on CPU here; NCCL with --device cuda) with no code change."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun is installed with torch"
    entry = Path(__file__).parent / "entry" / "ddp_train.py"
    r = subprocess.run([torchrun, "--nproc_per_node", "2", str(entry), str(tmp_path / "ddp"), ",".join(SMOKE_SEQUENCES)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("trained diffmesh") == 1                          # rank 0 reports, rank 1 stays quiet
    from diffmesh.checkpoint import read_checkpoint

    assert read_checkpoint(tmp_path / "ddp" / "last.pt")["step"] == 2
