"""Training losses: the TCMR-style body loss plus DiffMesh's auxiliary loss on predicted conditions.

    L = w_joints ||J - J*||^2 + w_pose ||R - R*||^2 + w_shape ||beta - beta*||^2 + w_velocity ||dJ - dJ*||^2
        + w_keypoints2d ||uv - uv*||^2 + w_aux ||c_{i-1} - c^_{i-1}||^2                  (paper Eq. 8-10)

Joints are root-relative, in metres; pose is compared on rotation matrices; all terms are mean squared errors.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .body.base import BodyModel
from .model import ModelOutput


@dataclass
class LossWeights:
    joints3d: float = 1000.0     # w3 in the paper (Eq. 8)
    pose: float = 10.0           # w2 in the paper
    shape: float = 0.5           # w1 in the paper
    aux: float = 0.01            # w4 in the paper (Eq. 10); the released configs use 0.001
    velocity: float = 1000.0     # not in the paper: equal to w3 so velocity and position errors weigh alike
    keypoints2d: float = 100.0   # not in the paper: trains the camera head (normalised image units)


@dataclass
class Targets:
    """Ground truth for B clips of f frames: rotmats (B, f, K, 3, 3); shape (B, S); joints3d (B, f, 17, 3) root-relative
    metres in camera axes; keypoints2d (B, f, 17, 2) normalised image coordinates; valid (B, f) bool frames to train on."""

    rotmats: Tensor
    shape: Tensor
    joints3d: Tensor
    keypoints2d: Tensor | None = None
    valid: Tensor | None = None


@dataclass
class LossTerms:
    total: Tensor
    terms: dict[str, float] = field(default_factory=dict)


def _masked_mean(err: Tensor, mask: Tensor | None) -> Tensor:
    """err (B, f, ...) -> mean over valid frames and the trailing dims."""
    err = err.flatten(2).mean(-1)                                               # (B, f)
    if mask is None:
        return err.mean()
    mask = mask.to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp(min=1)


def diffmesh_loss(out: ModelOutput, targets: Targets, body: BodyModel, weights: LossWeights = LossWeights()) -> LossTerms:
    """The full training loss for one batch (see module docstring). Runs the body model on the prediction."""
    B, f = out.rotmats.shape[:2]
    joints = body.clip_joints(out.rotmats, out.shape)
    joints = joints - joints[:, :, :1]
    gt_joints = targets.joints3d - targets.joints3d[:, :, :1]
    valid = targets.valid
    terms = {
        "joints3d": _masked_mean((joints - gt_joints).square(), valid),
        "pose": _masked_mean((out.rotmats - targets.rotmats).square(), valid),
        "shape": (out.shape - targets.shape).square().mean(),
        "velocity": _masked_mean(((joints[:, 1:] - joints[:, :-1]) - (gt_joints[:, 1:] - gt_joints[:, :-1])).square(),
                                 None if valid is None else valid[:, 1:] & valid[:, :-1]),
    }
    if targets.keypoints2d is not None:
        s, t = out.camera[..., :1, None], out.camera[..., None, 1:]              # (B, f, 1, 1), (B, f, 1, 2)
        uv = s * joints[..., :2] + t
        terms["keypoints2d"] = _masked_mean((uv - targets.keypoints2d).square(), valid)
    if out.predicted_conditions is not None:
        terms["aux"] = (out.predicted_conditions - out.target_conditions).square().mean()
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    return LossTerms(total, {k: float(v.detach()) for k, v in terms.items()})
