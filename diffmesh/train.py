"""Training: one optimisation step (used by the tests and by `diffmesh train`)."""

import random

import numpy as np
import torch
from torch import Tensor

from .body.base import BodyModel
from .losses import LossTerms, LossWeights, Targets, diffmesh_loss
from .model import DiffMeshModel


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch.Generator seeded the same way (for the baselines' noise)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_step(model: DiffMeshModel, body: BodyModel, optimizer: torch.optim.Optimizer, inputs: Tensor,
               targets: Targets, weights: LossWeights = LossWeights(), generator: torch.Generator | None = None,
               max_grad_norm: float | None = 1.0) -> LossTerms:
    """Forward through the whole reverse chain, loss, backward, clip, step. inputs: (B, f, 17, 3) or (B, f, D)."""
    model.train()
    out = model(inputs, generator=generator)
    loss = diffmesh_loss(out, targets, body, weights)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return loss
