"""The pinhole camera of `diffmesh run`: the default focal length, the projection, the translation that places a
root-relative body so that its joints land on the 2D keypoints (per frame, and smoothed over a run of frames),
and the reprojection error the result reports.

Convention: camera frame x right, y down, z forward, metres; a point X lands on pixel
focal * X[:2] / X[2] + principal.
"""

import numpy as np

from .keypoints import SHARED_JOINTS


def project(points: np.ndarray, focal: float, principal: tuple[float, float]) -> np.ndarray:
    """Pinhole projection of camera-space points (..., 3) to pixels (..., 2): (f X/Z + cx, f Y/Z + cy)."""
    points = np.asarray(points, np.float64)
    return focal * points[..., :2] / points[..., 2:3] + np.asarray(principal, np.float64)


def default_focal(width: int, height: int) -> float:
    """The focal length (pixels) assumed when none is given: the image diagonal (about 47 degrees across the
    longer side of a 16:9 frame), as WHAM and GVHMR assume for unknown cameras."""
    return float(np.hypot(width, height))


def _translation_equations(joints: np.ndarray, keypoints: np.ndarray, focal: float, principal: tuple[float, float],
                           joint_ids: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the linear equations f (X + tx) - (u - cx)(Z + tz) = 0 (and for y) of each joint, weighted by
    the square root of its confidence: A (T, 2J, 3), b (T, 2J)."""
    X = joints[:, joint_ids].astype(np.float64)
    u = keypoints[:, joint_ids, 0] - principal[0]
    v = keypoints[:, joint_ids, 1] - principal[1]
    w = np.sqrt(np.clip(keypoints[:, joint_ids, 2], 0, 1))
    zeros, ones = np.zeros_like(u), np.ones_like(u)
    A = np.concatenate([np.stack([focal * ones, zeros, -u], -1), np.stack([zeros, focal * ones, -v], -1)], 1)
    b = np.concatenate([u * X[..., 2] - focal * X[..., 0], v * X[..., 2] - focal * X[..., 1]], 1)
    w2 = np.concatenate([w, w], 1)
    return A * w2[..., None], b * w2


def solve_translation(joints: np.ndarray, keypoints: np.ndarray, focal: float, principal: tuple[float, float],
                      joint_ids: tuple[int, ...] = SHARED_JOINTS, min_depth: float = 0.3) -> np.ndarray:
    """Camera-frame translation (T, 3) of root-relative joints (T, J, 3) that best reprojects them onto keypoints
    (T, J, 3) = (u, v, confidence) with a pinhole camera: confidence-weighted linear least squares, one 3x3 system
    per frame (`_translation_equations`)."""
    A, b = _translation_equations(joints, keypoints, focal, principal, joint_ids)
    AtA = A.transpose(0, 2, 1) @ A + 1e-9 * np.eye(3)
    t = np.linalg.solve(AtA, (A.transpose(0, 2, 1) @ b[..., None]))[..., 0]
    t[:, 2] = np.maximum(t[:, 2], min_depth)
    return t.astype(np.float32)


def smooth_translation(joints: np.ndarray, keypoints: np.ndarray, focal: float, principal: tuple[float, float],
                       fps: float, smoothness: float = 0.002, joint_ids: tuple[int, ...] = SHARED_JOINTS,
                       min_depth: float = 0.3) -> np.ndarray:
    """The translation of consecutive frames of one person (T, 3), solved jointly: the per-frame equations (divided
    by the per-frame depth, so their residuals are pixels) plus `smoothness` (seconds^2) times the acceleration in
    m/s^2, converted to pixels at the person's depth. Depth is what the keypoints constrain least (a 1 % change of
    scale), so without this term it jitters by decimetres from frame to frame."""
    from scipy.sparse import block_diag, diags, identity, kron, vstack
    from scipy.sparse.linalg import spsolve

    T = len(joints)
    t0 = solve_translation(joints, keypoints, focal, principal, joint_ids, min_depth).astype(np.float64)
    if T < 3:
        return t0.astype(np.float32)
    A, b = _translation_equations(joints, keypoints, focal, principal, joint_ids)
    A, b = A / t0[:, 2, None, None], b / t0[:, 2, None]
    data = block_diag(list(A), format="csr")
    second = diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(T - 2, T))               # second difference in time
    weight = smoothness * fps ** 2 * focal / np.median(t0[:, 2])                # px per (m/frame^2)
    accel = kron(second, identity(3)) * weight
    M = vstack([data, accel]).tocsc()
    rhs = np.concatenate([b.reshape(-1), np.zeros(3 * (T - 2))])
    t = spsolve((M.T @ M).tocsc(), M.T @ rhs).reshape(T, 3)
    t[:, 2] = np.maximum(t[:, 2], min_depth)
    return t.astype(np.float32)


def place_in_camera(joints: np.ndarray, keypoints: np.ndarray, runs: list[tuple[int, int]], focal: float,
                    principal: tuple[float, float], fps: float) -> np.ndarray:
    """Translation (T, 3) for every run [start, stop) of valid frames of one track (`smooth_translation`); NaN
    elsewhere."""
    out = np.full((len(joints), 3), np.nan, np.float32)
    for start, stop in runs:
        out[start:stop] = smooth_translation(joints[start:stop], keypoints[start:stop], focal, principal, fps)
    return out


def reprojection_error(joints_cam: np.ndarray, keypoints: np.ndarray, valid: np.ndarray, focal: float,
                       principal: tuple[float, float], min_confidence: float = 0.5) -> dict[str, float]:
    """Mean pixel distance between the projected model joints and the confident 2D keypoints of the shared
    joints over valid frames, also as a percentage of the person's height in the image (the keypoints' extent)."""
    ids = list(SHARED_JOINTS)
    uv = project(joints_cam[valid][:, ids], focal, principal)
    kp = keypoints[valid][:, ids]
    good = kp[..., 2] >= min_confidence
    err = np.linalg.norm(uv - kp[..., :2], axis=-1)
    height = kp[..., 1].max(1) - kp[..., 1].min(1)
    rel = err / np.maximum(height[:, None], 1.0)
    return {"px": float(err[good].mean()), "percent_of_height": float(100 * rel[good].mean()),
            "median_px": float(np.median(err[good]))}
