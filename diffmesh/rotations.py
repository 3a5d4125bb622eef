"""Rotation conversions used by the mesh head and the losses (thin, typed wrappers over roma), and resampling of
per-frame values and rotations at fractional times (the run's model-rate grid, the training clips' speed change)."""

import numpy as np
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


# ---------------------------------------------------------------- resampling in time

def interpolate(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of values (n, ...) at fractional positions (m,) in [0, n-1]; whole positions are exact."""
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(values) - 1)
    i1 = np.minimum(i0 + 1, len(values) - 1)
    w = (pos - i0).reshape(-1, *([1] * (values.ndim - 1)))
    out = values[i0].astype(np.float64)
    frac = (w > 0).reshape(-1)
    out[frac] = (1 - w[frac]) * values[i0[frac]] + w[frac] * values[i1[frac]]
    return out.astype(values.dtype)


def slerp_at(rotmats: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Rotations (m, K, 3, 3) at fractional positions (n,) in [0, m-1]: slerp between the two samples around each
    position (R0 exp(w log(R0^T R1)), scipy's `Rotation`); whole positions are the samples themselves."""
    from scipy.spatial.transform import Rotation

    i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(rotmats) - 1)
    i1 = np.minimum(i0 + 1, len(rotmats) - 1)
    w = pos - i0
    out = rotmats[i0].copy()
    frac = w > 0
    if frac.any():
        a, b = rotmats[i0[frac]].astype(np.float64), rotmats[i1[frac]].astype(np.float64)
        shape = a.shape
        rel = Rotation.from_matrix((np.swapaxes(a, -1, -2) @ b).reshape(-1, 3, 3)).as_rotvec().reshape(*shape[:2], 3)
        step = Rotation.from_rotvec((rel * w[frac, None, None]).reshape(-1, 3)).as_matrix().reshape(shape)
        out[frac] = (a @ step).astype(rotmats.dtype)
    return out
