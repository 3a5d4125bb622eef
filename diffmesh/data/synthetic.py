"""Synthetic 2D inputs from body-model motion: a perspective camera, projection of the 17 joints, and the
targets the losses need. (Issue 4 adds random cameras and a detector noise model on top of this.)"""

import math

import torch
from torch import Tensor

from ..body.base import BodyModel, camera_upright_root
from ..losses import Targets


def view_rotation(yaw: float) -> Tensor:
    """(3, 3) world (z up) -> camera (x right, y down, z forward) for a level camera turned by `yaw` radians."""
    c, s = math.cos(yaw), math.sin(yaw)
    rz = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return camera_upright_root() @ rz


def project(points_cam: Tensor, focal: float) -> Tensor:
    """Pinhole projection to normalised image coordinates (focal in the same units). (..., 3) -> (..., 2)."""
    return focal * points_cam[..., :2] / points_cam[..., 2:].clamp(min=1e-3)


@torch.no_grad()
def render_keypoint_clip(body: BodyModel, rotmats: Tensor, translation: Tensor, shape: Tensor, yaw: float = 0.0,
                         distance: float = 4.0, focal: float = 2.0) -> tuple[Tensor, Targets]:
    """Place a world-space motion in front of a camera and project it.

    Args:
        rotmats: (T, K, 3, 3) world-space bone rotations (bone 0 = global orientation); translation: (T, 3) root
        position, world metres; shape: (S,).
    Returns:
        keypoints (T, 17, 3) as (u, v, confidence = 1) and Targets in camera axes for one clip (batch dim 1).
    """
    T = rotmats.shape[0]
    R = view_rotation(yaw)
    cam_rot = rotmats.clone()
    cam_rot[:, 0] = R @ rotmats[:, 0]
    joints = body(cam_rot, shape.expand(T, -1), with_vertices=False).joints      # (T, 17, 3) root at origin
    root = (translation - translation.mean(0)) @ R.T + torch.tensor([0.0, 0.0, distance])
    uv = project(joints + root[:, None], focal)                                  # (T, 17, 2)
    keypoints = torch.cat([uv, torch.ones(T, 17, 1)], -1)
    targets = Targets(rotmats=cam_rot[None], shape=shape[None], joints3d=joints[None], keypoints2d=uv[None],
                      valid=torch.ones(1, T, dtype=torch.bool))
    return keypoints, targets
