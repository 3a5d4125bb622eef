"""The diffusion chains, as pure functions over latent tensors.

DiffMesh (paper Sec. 3.3): the motion between adjacent frames is the noise.
  Forward (Eq. 6):  x_{i+1} = sqrt(beta_i) * m_i + sqrt(1 - beta_i) * x_i,   i = 1..N
  x_1..x_f are the per-frame mesh features; the chain continues N-f+1 steps past x_f, so that
  x_{N+1} = x_end is the learned initial distribution, and the chain has N steps in all.
  Reverse (Eq. 7, deterministic): starting at x_end, step i (i = N..1) sees (x_{i+1}, c_i, i), predicts the
  motion m_i and the previous condition c_{i-1}, and inverts Eq. 6:
      x_i = (x_{i+1} - sqrt(beta_i) * m_i) / sqrt(1 - beta_i).
  The last f states of the reverse chain, x_f..x_1, are the per-frame features.

Baselines 1 and 2 (paper Sec. 3.2): ordinary Gaussian-noise conditional diffusion, DDIM with eta = 0.

State layout: states are stacked on dim 1 in index order, `states[:, i-1]` is x_i. Gradients flow through
every step (the released code wraps this loop in no_grad, so its denoiser never learns).
"""

from typing import Callable

import torch
from torch import Tensor

# (x_{i+1}, c_i, step index i-1 as (B,) long) -> (motion m_i, predicted c_{i-1} or None)
MotionDenoiser = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor | None]]
# (x_t, c, step t as (B,) long) -> predicted Gaussian noise eps
NoiseDenoiser = Callable[[Tensor, Tensor, Tensor], Tensor]


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 1e-3) -> Tensor:
    """The variance schedule beta_1..beta_N, linear (DiffPose's, as in the paper's released code). (N,) float64."""
    if num_steps < 1:
        raise ValueError(f"the number of diffusion steps must be >= 1, got {num_steps}")
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def gaussian_betas(num_steps: int) -> Tensor:
    """A schedule whose last state is close to pure Gaussian noise, for the baselines.

    The DDPM linear schedule (1e-4 -> 0.02 over 1000 steps) rescaled to `num_steps` steps (as in improved
    DDPM), so that alpha_bar_N ~ 0 even for N = 30. (N,) float64.
    """
    scale = 1000.0 / num_steps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64).clamp(max=0.999)


def motions_between_frames(frames: Tensor, betas: Tensor) -> Tensor:
    """The motions m_1..m_{f-1} that carry each frame's feature to the next under Eq. 6.

    Args:
        frames: (B, f, ...) per-frame features x_1..x_f; betas: (N,) with N >= f - 1.
    Returns:
        (B, f-1, ...) with m_i = (x_{i+1} - sqrt(1 - beta_i) x_i) / sqrt(beta_i).
    """
    f = frames.shape[1]
    b = _per_step(betas[: f - 1], frames)
    return (frames[:, 1:] - (1 - b).sqrt() * frames[:, :-1]) / b.sqrt()


def motion_forward(x_1: Tensor, motions: Tensor, betas: Tensor) -> Tensor:
    """Forward process of DiffMesh (Eq. 6) from the first frame through all N motions.

    Args:
        x_1: (B, ...) first frame's feature; motions: (B, N, ...) m_1..m_N; betas: (N,).
    Returns:
        (B, N+1, ...) states x_1..x_{N+1}; x_{N+1} is x_end.
    """
    _check_steps(motions.shape[1], betas)
    states = [x_1]
    for i in range(motions.shape[1]):
        b = betas[i].to(x_1)
        states.append(b.sqrt() * motions[:, i] + (1 - b).sqrt() * states[-1])
    return torch.stack(states, 1)


def motion_reverse(x_end: Tensor, conditions: Tensor, denoiser: MotionDenoiser, betas: Tensor
                   ) -> tuple[Tensor, Tensor | None]:
    """Reverse process of DiffMesh (Eq. 7 with sigma = 0): N deterministic steps from x_end.

    Args:
        x_end: (B, ...) the initial distribution x_{N+1}.
        conditions: (B, N, ...) c_1..c_N (frames first, then the N-f generated from zero padding).
        denoiser: called once per step as denoiser(x_{i+1}, c_i, i-1) -> (m_i, c_{i-1} predicted).
        betas: (N,).
    Returns:
        states (B, N, ...) x_1..x_N in index order (the per-frame features are states[:, :f]) and the
        predicted previous conditions (B, N-1, ...) for c_1..c_{N-1} in index order (None if the denoiser
        does not predict them).
    """
    N = conditions.shape[1]
    _check_steps(N, betas)
    B = x_end.shape[0]
    x = x_end
    states, predicted = [None] * N, [None] * (N - 1)
    for i in range(N, 0, -1):  # i is the paper's 1-based step index
        step = torch.full((B,), i - 1, dtype=torch.long, device=x.device)
        motion, prev_condition = denoiser(x, conditions[:, i - 1], step)
        b = betas[i - 1].to(x)
        x = (x - b.sqrt() * motion) / (1 - b).sqrt()
        states[i - 1] = x
        if i > 1 and prev_condition is not None:
            predicted[i - 2] = prev_condition
    pred = torch.stack(predicted, 1) if N > 1 and predicted[0] is not None else None
    return torch.stack(states, 1), pred


def alpha_bars(betas: Tensor) -> Tensor:
    """Cumulative products alpha_bar_t = prod_{s<=t} (1 - beta_s). (N,)."""
    return torch.cumprod(1 - betas, 0)


def gaussian_forward(x_0: Tensor, noise: Tensor, t: int, betas: Tensor) -> Tensor:
    """q(x_t | x_0) for the baselines (Eq. 3): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, t 0-based."""
    a = alpha_bars(betas)[t].to(x_0)
    return a.sqrt() * x_0 + (1 - a).sqrt() * noise


def gaussian_reverse(x_T: Tensor, condition: Tensor, denoiser: NoiseDenoiser, betas: Tensor,
                     predicts: str = "x0") -> Tensor:
    """Deterministic DDIM (eta = 0) reverse chain of the baselines: N steps from x_T to x_0.

    Args:
        x_T: (B, ...) Gaussian noise; condition: (B, ...) constant condition; betas: (N,);
        predicts: what the denoiser outputs, 'x0' (the clean state; the baselines' default, because the
            'eps' form divides by sqrt(alpha_bar_t) ~ 0.006 at the first step and an untrained network's
            error blows up 150x, which made training diverge) or 'eps' (the noise).
    Returns:
        (B, ...) the denoised x_0.
    """
    if predicts not in ("x0", "eps"):
        raise ValueError(f"predicts must be 'x0' or 'eps', got {predicts!r}")
    abar = alpha_bars(betas).to(x_T)
    x = x_T
    B = x_T.shape[0]
    for t in range(len(betas) - 1, -1, -1):
        step = torch.full((B,), t, dtype=torch.long, device=x.device)
        out = denoiser(x, condition, step)
        if predicts == "eps":
            eps = out
            x0 = (x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
        else:
            x0 = out
            eps = (x - abar[t].sqrt() * x0) / (1 - abar[t]).sqrt()
        a_prev = abar[t - 1] if t > 0 else abar.new_tensor(1.0)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


def _per_step(betas: Tensor, like: Tensor) -> Tensor:
    return betas.to(like).reshape(1, -1, *([1] * (like.ndim - 2)))


def _check_steps(n: int, betas: Tensor) -> None:
    if n != len(betas):
        raise ValueError(f"{n} steps given but the schedule has {len(betas)}")
