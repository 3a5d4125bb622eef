"""Planted feet locked where they stand: two-bone inverse kinematics on the legs of a posed body.

For each frame in which an ankle has a target (a planted foot's anchor, `world.settle_feet`), the thigh and the shin
are turned so that the ankle lands on it: the hip stays, the knee stays in the leg's own bending plane (turned to
contain the target) at the angle the two bone lengths demand (law of cosines), and the foot keeps its global
rotation, so a planted sole does not tilt. This is the foot locking of animation tools and of the peers' refiners
(GVHMR, WHAM): translation alone cannot stop a foot from sliding when the pose's own legs jitter.

The body's rotations act in world-aligned axes at the rest pose (SMPL's convention and Anny's 'local-ref',
`base.chain_kinematics`): a bone's global rotation G_k = G_parent R_k places its children, so the thigh's global
rotation places the knee and the shin's the ankle. A weight per frame and ankle blends the new local rotations
with the old ones (on SO(3)), so feet ease into and out of a lock.
"""

import numpy as np
from scipy.spatial.transform import Rotation

MIN_LENGTH = 1e-6


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), MIN_LENGTH)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 3, 3) the smallest rotations taking directions a (N, 3) to b (N, 3)."""
    a, b = _unit(a), _unit(b)
    axis = np.cross(a, b)
    angle = np.arctan2(np.linalg.norm(axis, axis=-1), (a * b).sum(-1))
    return Rotation.from_rotvec(_unit(axis) * angle[:, None]).as_matrix()


def blend(old: np.ndarray, new: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(N, 3, 3) old rotations turned towards new ones by `weight` (N,) in [0, 1] of the way (geodesic)."""
    step = Rotation.from_matrix(np.swapaxes(old, -1, -2) @ new).as_rotvec() * weight[:, None]
    return old @ Rotation.from_rotvec(step).as_matrix()


def knee_for(hip: np.ndarray, knee: np.ndarray, ankle: np.ndarray, target: np.ndarray,
             hinge: np.ndarray) -> np.ndarray:
    """(N, 3) where the knee goes for the ankle to reach `target` with the same thigh and shin lengths: in the
    plane of the bent leg (normal (knee - hip) x (ankle - hip); `hinge` where the leg is straight) turned about the
    hip to contain the target, on the side the knee was. A target out of reach gets the leg pointed at it, stretched or folded as far as it goes."""
    thigh = np.linalg.norm(knee - hip, axis=-1)
    shin = np.linalg.norm(ankle - knee, axis=-1)
    reach = target - hip
    distance = np.clip(np.linalg.norm(reach, axis=-1), np.abs(thigh - shin) + 1e-4, thigh + shin - 1e-4)
    normal = np.cross(knee - hip, ankle - hip)
    straight = np.linalg.norm(normal, axis=-1) < 1e-6
    normal = _unit(np.where(straight[:, None], hinge, normal))
    along = _unit(reach)
    normal = _unit(normal - (normal * along).sum(-1, keepdims=True) * along)   # the plane must contain the target
    cos_hip = np.clip((thigh ** 2 + distance ** 2 - shin ** 2) / (2 * thigh * distance), -1.0, 1.0)
    # (knee - hip) x (ankle - hip) = normal: the thigh lies at -angle about the normal from the hip-ankle line
    turn = Rotation.from_rotvec(normal * -np.arccos(cos_hip)[:, None]).as_matrix()
    return hip + thigh[:, None] * (turn @ along[..., None])[..., 0]


def lock_leg(rotmats: np.ndarray, globals_: np.ndarray, heads: np.ndarray, bones: tuple[int, int, int],
             parent: int, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """One leg locked: rotmats (T, K, 3, 3) local, globals_ (T, K, 3, 3), heads (T, K, 3) from forward kinematics;
    `bones` the thigh, shin and foot indices, `parent` the thigh's parent; target (T, 3) in the heads' frame,
    weight (T,) (0: frame untouched). Returns the new local rotations (T, K, 3, 3)."""
    out = rotmats.copy()
    rows = np.flatnonzero((weight > 0) & np.isfinite(target).all(-1))
    if len(rows) == 0:
        return out
    up, low, foot = bones
    g, h = globals_[rows], heads[rows]
    hip, knee, ankle = h[:, up], h[:, low], h[:, foot]
    new_knee = knee_for(hip, knee, ankle, target[rows], g[:, up, :, 0])
    turn_thigh = rotation_between(knee - hip, new_knee - hip)
    moved_ankle = new_knee + (turn_thigh @ (ankle - knee)[..., None])[..., 0]
    turn_shin = rotation_between(moved_ankle - new_knee, target[rows] - new_knee) @ turn_thigh
    g_up, g_low = turn_thigh @ g[:, up], turn_shin @ g[:, low]
    locals_ = {up: np.swapaxes(g[:, parent], -1, -2) @ g_up, low: np.swapaxes(g_up, -1, -2) @ g_low,
               foot: np.swapaxes(g_low, -1, -2) @ g[:, foot]}         # the foot keeps its global rotation
    for bone, new in locals_.items():
        out[rows, bone] = blend(rotmats[rows, bone], new, weight[rows])
    return out


def lock_weights(targets: np.ndarray, ramp: int) -> tuple[np.ndarray, np.ndarray]:
    """Per ankle, the targets held over `ramp` frames before and after each run of targeted frames and weights that
    are 1 on the run and fall linearly to 0 over the ramp: targets (T, A, 3) NaN where none -> (T, A, 3), (T, A)."""
    T, A = targets.shape[:2]
    held, weights = targets.copy(), np.isfinite(targets[..., 0]).astype(np.float64)
    for a in range(A):
        has = np.flatnonzero(weights[:, a] == 1)
        if len(has) == 0:
            continue
        for t in np.flatnonzero(weights[:, a] == 0):
            nearest = has[np.argmin(np.abs(has - t))]
            gap = abs(int(nearest) - int(t))
            if gap <= ramp:
                held[t, a] = targets[nearest, a]
                weights[t, a] = 1 - gap / (ramp + 1)
    return held, weights
