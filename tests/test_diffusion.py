import pytest
import torch

from diffmesh import diffusion


def test_oracle_denoiser_reverse_chain_reproduces_forward_states():
    torch.manual_seed(0)
    B, f, N, T, d = 3, 16, 30, 17, 8
    betas = diffusion.linear_betas(N)
    frames = torch.randn(B, f, T, d, dtype=torch.float64)
    extra = torch.randn(B, N - f + 1, T, d, dtype=torch.float64)         # the N-f+1 motions past the last frame
    motions = torch.cat([diffusion.motions_between_frames(frames, betas), extra], 1)   # m_1..m_N
    states = diffusion.motion_forward(frames[:, 0], motions, betas)      # x_1..x_{N+1}
    assert states.shape == (B, N + 1, T, d)
    torch.testing.assert_close(states[:, :f], frames)                    # the first f states are the frames
    conditions = torch.randn(B, N, T, d, dtype=torch.float64)
    seen = []

    def oracle(x, c, step):
        i = int(step[0]) + 1                                             # 1-based step index
        torch.testing.assert_close(x, states[:, i])                      # it sees x_{i+1}
        seen.append(i)
        return motions[:, i - 1], conditions[:, i - 2] if i > 1 else None

    rev, pred_c = diffusion.motion_reverse(states[:, -1], conditions, oracle, betas)
    assert seen == list(range(N, 0, -1))
    torch.testing.assert_close(rev, states[:, :N], rtol=0, atol=1e-9)
    torch.testing.assert_close(rev[:, :f], frames, rtol=0, atol=1e-9)
    torch.testing.assert_close(pred_c, conditions[:, : N - 1])


def test_wrong_motion_breaks_reconstruction():
    betas = diffusion.linear_betas(20)
    frames = torch.randn(1, 8, 4, dtype=torch.float64)
    motions = torch.cat([diffusion.motions_between_frames(frames, betas), torch.randn(1, 13, 4, dtype=torch.float64)], 1)
    states = diffusion.motion_forward(frames[:, 0], motions, betas)
    rev, _ = diffusion.motion_reverse(states[:, -1], torch.zeros(1, 20, 4, dtype=torch.float64),
                                      lambda x, c, s: (torch.zeros_like(x), None), betas)
    assert (rev[:, :8] - frames).abs().max() > 1e-2


def test_gaussian_ddim_with_true_noise_recovers_x0():
    torch.manual_seed(1)
    betas = diffusion.gaussian_betas(30)
    assert diffusion.alpha_bars(betas)[-1] < 1e-3                      # the last state is ~pure noise
    x0 = torch.randn(2, 17, 8, dtype=torch.float64)
    eps = torch.randn_like(x0)
    x_T = diffusion.gaussian_forward(x0, eps, 29, betas)
    out = diffusion.gaussian_reverse(x_T, None, lambda x, c, t: eps, betas, predicts="eps")
    torch.testing.assert_close(out, x0)
    out = diffusion.gaussian_reverse(x_T, None, lambda x, c, t: x0, betas, predicts="x0")
    torch.testing.assert_close(out, x0)


def test_schedule_and_step_checks():
    betas = diffusion.linear_betas(30)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(1e-3)
    with pytest.raises(ValueError):
        diffusion.linear_betas(0)
    with pytest.raises(ValueError, match="schedule"):
        diffusion.motion_forward(torch.zeros(1, 3), torch.zeros(1, 5, 3), betas)
