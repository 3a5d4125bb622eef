"""The mirrored body (left and right swapped, x negated) in each form the paper settings use: normalised 2D
keypoints, SMPL axis-angle poses and SMPL rotation matrices; and SMPL's axis-angle pose as rotation matrices.

Training mirrors half the keypoint clips; the flip test averages a prediction with the mirrored input's, mirrored
back (MotionBERT's flip_data and flip_thetas).
"""

import numpy as np
import torch
from torch import Tensor

from ..rotations import rotvec_to_rotmat
from .base import H36M_FLIP

# SMPL's left/right joint pairs swapped (MotionBERT's flip_thetas pairs)
SMPL_FLIP = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22)


def flip_keypoints(x: np.ndarray | Tensor):
    """Mirror normalised 2D keypoints about the image's vertical centre line: x negated, left and right joints
    swapped. (..., 17, 3) (x, y, confidence) -> (..., 17, 3)."""
    out = x[..., list(H36M_FLIP), :].clone() if isinstance(x, Tensor) else x[..., list(H36M_FLIP), :].copy()
    out[..., 0] = -out[..., 0]
    return out


def flip_pose(pose: np.ndarray) -> np.ndarray:
    """The SMPL pose of the mirrored body: pairs swapped, the y and z axis-angle components negated. (..., 72)."""
    aa = pose.reshape(*pose.shape[:-1], 24, 3)[..., list(SMPL_FLIP), :].copy()
    aa[..., 1:] = -aa[..., 1:]
    return aa.reshape(pose.shape)


def flip_rotmats(R: Tensor) -> Tensor:
    """`flip_pose` on rotation matrices: M R M with M = diag(-1, 1, 1), pairs swapped. (..., 24, 3, 3)."""
    M = torch.diag(R.new_tensor([-1.0, 1.0, 1.0]))
    return M @ R[..., list(SMPL_FLIP), :, :] @ M


def smpl_rotmats(pose: np.ndarray | Tensor) -> Tensor:
    """SMPL axis-angle pose (..., 72) -> rotation matrices (..., 24, 3, 3), float32."""
    pose = torch.as_tensor(pose, dtype=torch.float32)
    return rotvec_to_rotmat(pose.reshape(*pose.shape[:-1], 24, 3))
