"""A model over many clips, in batches: the one batched prediction that `diffmesh run`, validation during
training and the evaluations use."""

import numpy as np
import torch
from torch import Tensor

from .body.base import BodyModel
from .model import DiffMeshModel


@torch.inference_mode()
def predict_clips(model: DiffMeshModel, body: BodyModel | None, inputs: Tensor | np.ndarray, batch_size: int = 64,
                  seed: int = 0, device: str = "cpu", with_joints: bool = True) -> dict[str, Tensor]:
    """Run the model on clips (C, f, 17, 3) `batch_size` at a time, in eval mode; the baselines' noise comes from
    one generator on `device` seeded with `seed`. Returns CPU tensors: rotmats (C, f, K, 3, 3), shape (C, S),
    camera (C, f, 3) and, with `with_joints`, the body's joints (C, f, 17, 3) root-relative."""
    model.eval()
    inputs = torch.as_tensor(inputs)
    g = torch.Generator(device=device).manual_seed(seed)
    outs: dict[str, list[Tensor]] = {"rotmats": [], "shape": [], "camera": []}
    if with_joints:
        outs["joints"] = []
    for i in range(0, len(inputs), batch_size):
        out = model(inputs[i:i + batch_size].to(device), generator=g)
        outs["rotmats"].append(out.rotmats.cpu())
        outs["shape"].append(out.shape.cpu())
        outs["camera"].append(out.camera.cpu())
        if with_joints:
            joints = body.clip_joints(out.rotmats, out.shape)
            outs["joints"].append((joints - joints[:, :, :1]).cpu())
    return {k: torch.cat(v) for k, v in outs.items()}
