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
    aux_targets: str = "frames"  # AUX_TARGETS: which predicted conditions the auxiliary loss compares


# Which conditions the auxiliary loss (Eq. 9) compares with their predictions: "frames" (the f conditions made from
# the frames' features, c_1..c_f, the paper's "ground truth c_{i-1}"; the released code compares 15 of 16) or
# "all" (also the N-f conditions the generation block makes from zero padding, which have no ground truth: every
# checkpoint before issue 14 was trained so).
AUX_TARGETS = ("frames", "all")


@dataclass
class Targets:
    """Ground truth for B clips of f frames: rotmats (B, f, K, 3, 3); shape (B, S); joints3d (B, f, J, 3) metres in
    camera axes; keypoints2d (B, f, J, 2) normalised image coordinates; valid (B, f) bool frames to train on.

    Mixed datasets (paper mode) label different things: `joint_index` (J,) says which of the body's 17 H36M joints
    the J target joints are (default all 17), `centre` which of the J define the root both sides are centred on
    (default joint 0, the pelvis); `keypoints2d_conf` (B, f, J) weights each 2D joint; `has_smpl` / `has_joints3d`
    (B,) switch the pose+shape and the 3D joint terms per clip (e.g. InstaVariety has 2D only)."""

    rotmats: Tensor | None
    shape: Tensor | None
    joints3d: Tensor | None
    keypoints2d: Tensor | None = None
    valid: Tensor | None = None
    joint_index: Tensor | None = None
    centre: tuple[int, ...] = (0,)
    keypoints2d_conf: Tensor | None = None
    has_smpl: Tensor | None = None
    has_joints3d: Tensor | None = None


@dataclass
class LossTerms:
    total: Tensor
    terms: dict[str, float] = field(default_factory=dict)


def _masked_mean(err: Tensor, mask: Tensor | None) -> Tensor:
    """err (B, f, ...) -> mean over valid frames and the trailing dims; mask (B, f) bool or float weights."""
    err = err.flatten(2).mean(-1)                                               # (B, f)
    if mask is None:
        return err.mean()
    mask = mask.to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp(min=1)


def _frames_mask(valid: Tensor | None, per_clip: Tensor | None, like: Tensor) -> Tensor | None:
    """(B, f) frame mask from the valid frames and a (B,) per-clip switch (None when both are None)."""
    if valid is None and per_clip is None:
        return None
    mask = torch.ones(like.shape[:2], dtype=like.dtype, device=like.device)
    if valid is not None:
        mask = mask * valid.to(like.dtype)
    if per_clip is not None:
        mask = mask * per_clip.to(like.dtype)[:, None]
    return mask


def diffmesh_loss(out: ModelOutput, targets: Targets, body: BodyModel, weights: LossWeights = LossWeights()) -> LossTerms:
    """The full training loss for one batch (see module docstring). Runs the body model on the prediction."""
    B, f = out.rotmats.shape[:2]
    joints = body.clip_joints(out.rotmats, out.shape)                          # (B, f, 17, 3)
    if targets.joint_index is not None:
        joints = joints[:, :, targets.joint_index]
    centre = list(targets.centre)
    joints = joints - joints[:, :, centre].mean(2, keepdim=True)
    valid = targets.valid
    terms = {}
    if targets.joints3d is not None:
        gt_joints = targets.joints3d - targets.joints3d[:, :, centre].mean(2, keepdim=True)
        mask = _frames_mask(valid, targets.has_joints3d, joints)
        pair = None if mask is None else mask[:, 1:] * mask[:, :-1]
        terms["joints3d"] = _masked_mean((joints - gt_joints).square(), mask)
        terms["velocity"] = _masked_mean(
            ((joints[:, 1:] - joints[:, :-1]) - (gt_joints[:, 1:] - gt_joints[:, :-1])).square(), pair)
    if targets.rotmats is not None:
        mask = _frames_mask(valid, targets.has_smpl, joints)
        terms["pose"] = _masked_mean((out.rotmats - targets.rotmats).square(), mask)
        shape_err = (out.shape - targets.shape).square().mean(-1)               # (B,)
        if targets.has_smpl is None:
            terms["shape"] = shape_err.mean()
        else:
            w = targets.has_smpl.to(shape_err.dtype)
            terms["shape"] = (shape_err * w).sum() / w.sum().clamp(min=1)
    if targets.keypoints2d is not None:
        s, t = out.camera[..., :1, None], out.camera[..., None, 1:]              # (B, f, 1, 1), (B, f, 1, 2)
        uv = s * joints[..., :2] + t
        err = (uv - targets.keypoints2d).square().sum(-1)                         # (B, f, J)
        if targets.keypoints2d_conf is not None:
            conf = targets.keypoints2d_conf.to(err.dtype)
            mask = _frames_mask(valid, None, err)
            conf = conf if mask is None else conf * mask[..., None]
            terms["keypoints2d"] = (err * conf).sum() / (conf.sum().clamp(min=1) * 2)
        else:
            terms["keypoints2d"] = _masked_mean(err / 2, valid)
    if out.predicted_conditions is not None:
        pred, target = out.predicted_conditions, out.target_conditions          # (B, N-1, L*d): c_1..c_{N-1}
        if weights.aux_targets == "frames":
            f = out.rotmats.shape[1]
            pred, target = pred[:, :f], target[:, :f]
        elif weights.aux_targets != "all":
            raise ValueError(f"aux_targets must be one of {AUX_TARGETS}, got {weights.aux_targets!r}")
        terms["aux"] = (pred - target).square().mean()
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    return LossTerms(total, {k: float(v.detach()) for k, v in terms.items()})
