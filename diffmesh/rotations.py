"""Rotation conversions used by the mesh head and the losses (thin, typed wrappers over roma)."""

import roma
import torch
from torch import Tensor


def rot6d_to_rotmat(x: Tensor) -> Tensor:
    """6D rotation (Zhou et al.: first two columns of the matrix, row-major) -> rotation matrix.

    Args:
        x: (..., 6)
    Returns:
        (..., 3, 3) proper rotations (Gram-Schmidt on the two columns).
    """
    return roma.special_gramschmidt(x.reshape(*x.shape[:-1], 3, 2))


def rotmat_to_rot6d(R: Tensor) -> Tensor:
    """Rotation matrix (..., 3, 3) -> 6D (..., 6), the inverse of `rot6d_to_rotmat` on rotations."""
    return R[..., :, :2].reshape(*R.shape[:-2], 6)


def rotvec_to_rotmat(v: Tensor) -> Tensor:
    """Axis-angle (..., 3) -> rotation matrix (..., 3, 3)."""
    return roma.rotvec_to_rotmat(v)


def rotmat_to_rotvec(R: Tensor) -> Tensor:
    """Rotation matrix (..., 3, 3) -> axis-angle (..., 3)."""
    return roma.rotmat_to_rotvec(R)


def identity_rotmats(*shape: int, dtype=torch.float32, device=None) -> Tensor:
    """Identity rotations of shape (*shape, 3, 3)."""
    return torch.eye(3, dtype=dtype, device=device).expand(*shape, 3, 3).clone()
